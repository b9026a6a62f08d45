//go:build !(goexperiment.simd && amd64)

package main

// sumRead adds up x (without SIMD it may be core-bound rather than memory-bound).
func sumRead(x []float32) float32 {
	var s0, s1, s2, s3 float32
	k := 0
	for ; k+4 <= len(x); k += 4 {
		s0, s1, s2, s3 = s0+x[k], s1+x[k+1], s2+x[k+2], s3+x[k+3]
	}
	for ; k < len(x); k++ {
		s0 += x[k]
	}
	return s0 + s1 + s2 + s3
}
