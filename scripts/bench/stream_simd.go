//go:build goexperiment.simd && amd64

package main

import "simd/archsimd"

// sumRead adds up x with four 8-wide accumulators: a loop whose speed is the memory's, not the core's.
func sumRead(x []float32) float32 {
	var a0, a1, a2, a3 archsimd.Float32x8
	k := 0
	for ; k+32 <= len(x); k += 32 {
		a0 = a0.Add(archsimd.LoadFloat32x8(x[k : k+8]))
		a1 = a1.Add(archsimd.LoadFloat32x8(x[k+8 : k+16]))
		a2 = a2.Add(archsimd.LoadFloat32x8(x[k+16 : k+24]))
		a3 = a3.Add(archsimd.LoadFloat32x8(x[k+24 : k+32]))
	}
	var out [8]float32
	a0.Add(a1).Add(a2.Add(a3)).Store(out[:])
	s := out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7]
	for ; k < len(x); k++ {
		s += x[k]
	}
	return s
}
