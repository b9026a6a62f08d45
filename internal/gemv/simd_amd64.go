//go:build goexperiment.simd && amd64

package gemv

import (
	"math"
	"simd/archsimd"
)

var useSIMD = archsimd.X86.AVX2() && archsimd.X86.FMA()

// widen converts half-precision bits to float32 (len(dst) == len(src)).
func widen(kind Kind, dst []float32, src []uint16) {
	k := 0
	switch kind {
	case BF16:
		for ; k+8 <= len(src); k += 8 {
			archsimd.LoadUint16x8(src[k : k+8]).ExtendToUint32().ShiftAllLeft(16).AsFloat32x8().Store(dst[k : k+8])
		}
		archsimd.ClearAVXUpperBits()
		for ; k < len(src); k++ {
			dst[k] = math.Float32frombits(uint32(src[k]) << 16)
		}
	case F16:
		// Finite halves only (weights are checked finite at load): shifting the exponent and mantissa into
		// float32's place and multiplying by 2¹¹² rebiases the exponent, subnormals included.
		signMask, emMask := archsimd.BroadcastUint32x8(0x8000), archsimd.BroadcastUint32x8(0x7fff)
		rebias := archsimd.BroadcastFloat32x8(0x1p112)
		for ; k+8 <= len(src); k += 8 {
			u := archsimd.LoadUint16x8(src[k : k+8]).ExtendToUint32()
			sign := u.And(signMask).ShiftAllLeft(16)
			em := u.And(emMask).ShiftAllLeft(13).AsFloat32x8().Mul(rebias)
			em.AsUint32x8().Or(sign).AsFloat32x8().Store(dst[k : k+8])
		}
		archsimd.ClearAVXUpperBits()
		for ; k < len(src); k++ {
			dst[k] = F16ToF32(src[k])
		}
	}
}

// hsums returns the horizontal sums of the accumulators. The scalar adds come after the upper halves of the YMM
// registers are cleared: on this Zen 2 scalar float code after 256-bit code otherwise costs ~80 ns a call (the
// CPU trainer's measurement), more than a short row's products.
func hsums(dst []float32, acc ...archsimd.Float32x8) {
	var parts [2 * rowBlock][4]float32
	for i, v := range acc {
		v.GetLo().Add(v.GetHi()).Store(parts[i][:])
	}
	archsimd.ClearAVXUpperBits()
	for i := range acc {
		a := parts[i]
		dst[i] = (a[0] + a[1]) + (a[2] + a[3])
	}
}

// dot4x2 returns the dot products of the four rows with x0 (first four) and with x1 (last four).
func dot4x2(w [rowBlock][]float32, x0, x1 []float32) [2 * rowBlock]float32 {
	n := len(x0)
	w0, w1, w2, w3 := w[0][:n], w[1][:n], w[2][:n], w[3][:n]
	x1 = x1[:n]
	var a00, a01, a10, a11, a20, a21, a30, a31 archsimd.Float32x8
	k := 0
	for ; k+8 <= n; k += 8 {
		v0 := archsimd.LoadFloat32x8(x0[k : k+8])
		v1 := archsimd.LoadFloat32x8(x1[k : k+8])
		ww := archsimd.LoadFloat32x8(w0[k : k+8])
		a00, a01 = ww.MulAdd(v0, a00), ww.MulAdd(v1, a01)
		ww = archsimd.LoadFloat32x8(w1[k : k+8])
		a10, a11 = ww.MulAdd(v0, a10), ww.MulAdd(v1, a11)
		ww = archsimd.LoadFloat32x8(w2[k : k+8])
		a20, a21 = ww.MulAdd(v0, a20), ww.MulAdd(v1, a21)
		ww = archsimd.LoadFloat32x8(w3[k : k+8])
		a30, a31 = ww.MulAdd(v0, a30), ww.MulAdd(v1, a31)
	}
	var s [2 * rowBlock]float32
	hsums(s[:], a00, a10, a20, a30, a01, a11, a21, a31)
	for ; k < n; k++ {
		for j, wj := range [rowBlock][]float32{w0, w1, w2, w3} {
			s[j] += wj[k] * x0[k]
			s[rowBlock+j] += wj[k] * x1[k]
		}
	}
	return s
}

// dot4x1 returns the dot products of the four rows with x0.
func dot4x1(w [rowBlock][]float32, x0 []float32) [rowBlock]float32 {
	n := len(x0)
	w0, w1, w2, w3 := w[0][:n], w[1][:n], w[2][:n], w[3][:n]
	var a0, a1, a2, a3 archsimd.Float32x8
	k := 0
	for ; k+8 <= n; k += 8 {
		v0 := archsimd.LoadFloat32x8(x0[k : k+8])
		a0 = archsimd.LoadFloat32x8(w0[k:k+8]).MulAdd(v0, a0)
		a1 = archsimd.LoadFloat32x8(w1[k:k+8]).MulAdd(v0, a1)
		a2 = archsimd.LoadFloat32x8(w2[k:k+8]).MulAdd(v0, a2)
		a3 = archsimd.LoadFloat32x8(w3[k:k+8]).MulAdd(v0, a3)
	}
	var s [rowBlock]float32
	hsums(s[:], a0, a1, a2, a3)
	for ; k < n; k++ {
		for j, wj := range [rowBlock][]float32{w0, w1, w2, w3} {
			s[j] += wj[k] * x0[k]
		}
	}
	return s
}

// dot4x1BF16 is dot4x1 for bfloat16 rows, widened in registers: one x row gains nothing from widening a chunk
// into memory first.
func dot4x1BF16(w [rowBlock][]uint16, x0 []float32) [rowBlock]float32 {
	n := len(x0)
	w0, w1, w2, w3 := w[0][:n], w[1][:n], w[2][:n], w[3][:n]
	load := func(s []uint16) archsimd.Float32x8 {
		return archsimd.LoadUint16x8(s).ExtendToUint32().ShiftAllLeft(16).AsFloat32x8()
	}
	var a0, a1, a2, a3 archsimd.Float32x8
	k := 0
	for ; k+8 <= n; k += 8 {
		v0 := archsimd.LoadFloat32x8(x0[k : k+8])
		a0 = load(w0[k:k+8]).MulAdd(v0, a0)
		a1 = load(w1[k:k+8]).MulAdd(v0, a1)
		a2 = load(w2[k:k+8]).MulAdd(v0, a2)
		a3 = load(w3[k:k+8]).MulAdd(v0, a3)
	}
	var s [rowBlock]float32
	hsums(s[:], a0, a1, a2, a3)
	for ; k < n; k++ {
		for j, wj := range [rowBlock][]uint16{w0, w1, w2, w3} {
			s[j] += math.Float32frombits(uint32(wj[k])<<16) * x0[k]
		}
	}
	return s
}
