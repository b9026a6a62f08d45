//go:build goexperiment.simd

package backend

func init() { SIMDBuilt = true }
