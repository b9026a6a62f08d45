//go:build !(goexperiment.simd && amd64)

package model

func expSum(x []float32, shift float32) float64 { return expSumGo(x, shift) }

func maxOf(x []float32) float32 { return maxGo(x) }

func scaleBy(x []float32, s float32) { scaleGo(x, s) }

func swiglu(act, gate, up []float32) { swigluGo(act, gate, up) }

func swigluBack(dup, dgate, gate, up, dact []float32) { swigluBackGo(dup, dgate, gate, up, dact) }
