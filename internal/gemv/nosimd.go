//go:build !(goexperiment.simd && amd64)

package gemv

// Without GOEXPERIMENT=simd on amd64 the products run in mulRows' plain Go loop.
const useSIMD = false

func widen(Kind, []float32, []uint16) { panic("gemv: no SIMD kernels in this build") }

func dot4x2([rowBlock][]float32, []float32, []float32) [2 * rowBlock]float32 {
	panic("gemv: no SIMD kernels in this build")
}

func dot4x1([rowBlock][]float32, []float32) [rowBlock]float32 {
	panic("gemv: no SIMD kernels in this build")
}

func dot4x1BF16([rowBlock][]uint16, []float32) [rowBlock]float32 {
	panic("gemv: no SIMD kernels in this build")
}
