//go:build goexperiment.simd && amd64

package model

import (
	"math"
	"simd/archsimd"
)

var trainSIMD = archsimd.X86.AVX2() && archsimd.X86.FMA()

// The SIMD bodies are written out inside their loops: a call taking or returning a vector costs ~30 times the
// work of the exp itself. Each kernel handles its last partial vector in a padded copy (read before the vector
// code, written back after) and clears the vector registers' upper halves before any scalar float code runs: on
// the machines measured, scalar SSE code after 256-bit code without that costs ~100 ns per transition.

// swigluChunk is how many values the SwiGLU kernels take through exp at a time (a multiple of 8).
const swigluChunk = 256

var negInf = float32(math.Inf(-1))

// expSum sets x[i] = e^(x[i] − shift) and returns Σ x[i].
func expSum(x []float32, shift float32) float64 {
	if !trainSIMD {
		return expSumGo(x, shift)
	}
	n8 := len(x) &^ 7
	var tail [8]float32
	nt := copy(tail[:], x[n8:])
	for k := nt; k < 8; k++ {
		tail[k] = negInf // e^−∞ = 0: no part of the sum
	}
	end := n8
	if nt > 0 {
		end += 8
	}
	bc := archsimd.BroadcastFloat32x8
	sh, lo, hi, l2e, c1, c2 := bc(shift), bc(expLo), bc(expHi), bc(log2e), bc(-expC1), bc(-expC2)
	p0, p1, p2, p3, p4, p5, one := bc(expP0), bc(expP1), bc(expP2), bc(expP3), bc(expP4), bc(expP5), bc(1)
	bias := archsimd.BroadcastInt32x8(127)
	var total archsimd.Float64x4
	for i := 0; i < end; {
		var acc archsimd.Float32x8
		for blockEnd := min(i+expBlock, end); i < blockEnd; i += 8 {
			v := x
			if i == n8 {
				v = tail[:]
			} else {
				v = x[i : i+8]
			}
			a := archsimd.LoadFloat32x8(v).Sub(sh)
			valid := a.GreaterEqual(lo)
			a = a.Max(lo).Min(hi)
			n := a.Mul(l2e).Round() // a = n·ln2 + r, |r| ≤ ln2/2
			r := n.MulAdd(c1, a)
			r = n.MulAdd(c2, r)
			p := p0.MulAdd(r, p1)
			p = p.MulAdd(r, p2)
			p = p.MulAdd(r, p3)
			p = p.MulAdd(r, p4)
			p = p.MulAdd(r, p5)
			p = p.MulAdd(r.Mul(r), r.Add(one)) // e^r
			e := p.Mul(n.ConvertToInt32().Add(bias).ShiftAllLeft(23).AsFloat32x8()).Masked(valid)
			e.Store(v)
			acc = acc.Add(e)
		}
		total = total.Add(acc.GetLo().ConvertToFloat64()).Add(acc.GetHi().ConvertToFloat64())
	}
	var t [4]float64
	total.Store(t[:])
	archsimd.ClearAVXUpperBits()
	copy(x[n8:], tail[:nt])
	return (t[0] + t[1]) + (t[2] + t[3])
}

// maxOf is the largest of x (−∞ when empty).
func maxOf(x []float32) float32 {
	if !trainSIMD {
		return maxGo(x)
	}
	n8 := len(x) &^ 7
	tail := [8]float32{negInf, negInf, negInf, negInf, negInf, negInf, negInf, negInf}
	copy(tail[:], x[n8:])
	acc := archsimd.LoadFloat32x8(tail[:])
	for i := 0; i < n8; i += 8 {
		acc = acc.Max(archsimd.LoadFloat32x8(x[i : i+8]))
	}
	var a [8]float32
	acc.Store(a[:])
	archsimd.ClearAVXUpperBits()
	return maxGo(a[:])
}

// scaleBy multiplies x by s.
func scaleBy(x []float32, s float32) {
	if !trainSIMD {
		scaleGo(x, s)
		return
	}
	n8 := len(x) &^ 7
	var tail [8]float32
	nt := copy(tail[:], x[n8:])
	v := archsimd.BroadcastFloat32x8(s)
	for i := 0; i < n8; i += 8 {
		archsimd.LoadFloat32x8(x[i : i+8]).Mul(v).Store(x[i : i+8])
	}
	archsimd.LoadFloat32x8(tail[:]).Mul(v).Store(tail[:])
	archsimd.ClearAVXUpperBits()
	copy(x[n8:], tail[:nt])
}

// swiglu sets act = silu(gate)·up.
func swiglu(act, gate, up []float32) {
	if !trainSIMD {
		swigluGo(act, gate, up)
		return
	}
	var e, g, u, a [swigluChunk]float32
	for lo := 0; lo < len(gate); lo += swigluChunk {
		n := copy(g[:], gate[lo:])
		copy(u[:], up[lo:])
		for k := range n {
			e[k] = -g[k]
		}
		expSum(e[:(n+7)&^7], 0) // σ(g) = 1/(1 + e^−g)
		one := archsimd.BroadcastFloat32x8(1)
		for i := 0; i < n; i += 8 {
			gv := archsimd.LoadFloat32x8(g[i : i+8])
			s := one.Div(one.Add(archsimd.LoadFloat32x8(e[i : i+8])))
			gv.Mul(s).Mul(archsimd.LoadFloat32x8(u[i : i+8])).Store(a[i : i+8])
		}
		archsimd.ClearAVXUpperBits()
		copy(act[lo:lo+n], a[:n])
	}
}

// swigluBack sets, from dact = dL/d(silu(gate)·up), dup = dact·silu(gate) and
// dgate = dact·up·σ(gate)·(1 + gate·(1 − σ(gate))); dgate may be dact.
func swigluBack(dup, dgate, gate, up, dact []float32) {
	if !trainSIMD {
		swigluBackGo(dup, dgate, gate, up, dact)
		return
	}
	var e, g, u, d [swigluChunk]float32
	for lo := 0; lo < len(gate); lo += swigluChunk {
		n := copy(g[:], gate[lo:])
		copy(u[:], up[lo:])
		copy(d[:], dact[lo:lo+n])
		for k := range n {
			e[k] = -g[k]
		}
		expSum(e[:(n+7)&^7], 0)
		one := archsimd.BroadcastFloat32x8(1)
		for i := 0; i < n; i += 8 {
			gv, uv, dv := archsimd.LoadFloat32x8(g[i:i+8]), archsimd.LoadFloat32x8(u[i:i+8]), archsimd.LoadFloat32x8(d[i:i+8])
			s := one.Div(one.Add(archsimd.LoadFloat32x8(e[i : i+8])))
			dv.Mul(gv).Mul(s).Store(e[i : i+8])                                  // dup
			dv.Mul(uv).Mul(s).Mul(gv.Mul(one.Sub(s)).Add(one)).Store(d[i : i+8]) // dgate
		}
		archsimd.ClearAVXUpperBits()
		copy(dup[lo:lo+n], e[:n])
		copy(dgate[lo:lo+n], d[:n])
	}
}

// The row kernels below run 8-wide over the first len &^ 7 values, then clear the upper halves and finish in Go.

// sumSquares returns Σ x².
func sumSquares(x []float32) float32 {
	if !trainSIMD {
		return sumSquaresGo(x)
	}
	n8 := len(x) &^ 7
	var a0, a1 archsimd.Float32x8
	i := 0
	for ; i+16 <= n8; i += 16 {
		v, u := archsimd.LoadFloat32x8(x[i:i+8]), archsimd.LoadFloat32x8(x[i+8:i+16])
		a0, a1 = v.MulAdd(v, a0), u.MulAdd(u, a1)
	}
	if i < n8 {
		v := archsimd.LoadFloat32x8(x[i : i+8])
		a0 = v.MulAdd(v, a0)
	}
	s := hsum8(a0.Add(a1))
	for _, v := range x[n8:] {
		s += v * v
	}
	return s
}

// hsum8 returns the sum of v's lanes, clearing the upper halves before the scalar adds.
func hsum8(v archsimd.Float32x8) float32 {
	var p [4]float32
	v.GetLo().Add(v.GetHi()).Store(p[:])
	archsimd.ClearAVXUpperBits()
	return (p[0] + p[1]) + (p[2] + p[3])
}

// mulScaled sets dst = x·s·w.
func mulScaled(dst, x, w []float32, s float32) {
	if !trainSIMD {
		mulScaledGo(dst, x, w, s)
		return
	}
	n := len(x)
	n8 := n &^ 7
	w, dst = w[:n], dst[:n]
	sv := archsimd.BroadcastFloat32x8(s)
	for i := 0; i < n8; i += 8 {
		archsimd.LoadFloat32x8(x[i : i+8]).Mul(sv).Mul(archsimd.LoadFloat32x8(w[i : i+8])).Store(dst[i : i+8])
	}
	archsimd.ClearAVXUpperBits()
	for j := n8; j < n; j++ {
		dst[j] = x[j] * s * w[j]
	}
}

// dot3 returns Σ a·b·c.
func dot3(a, b, c []float32) float32 {
	if !trainSIMD {
		return dot3Go(a, b, c)
	}
	n := len(a)
	n8 := n &^ 7
	b, c = b[:n], c[:n]
	var acc archsimd.Float32x8
	for i := 0; i < n8; i += 8 {
		ab := archsimd.LoadFloat32x8(a[i : i+8]).Mul(archsimd.LoadFloat32x8(b[i : i+8]))
		acc = ab.MulAdd(archsimd.LoadFloat32x8(c[i:i+8]), acc)
	}
	s := hsum8(acc)
	for j := n8; j < n; j++ {
		s += a[j] * b[j] * c[j]
	}
	return s
}

// normGrad sets (or, unless set, adds to) dx the values iv·dy·w − c·x.
func normGrad(dx, dy, w, x []float32, iv, c float32, set bool) {
	if !trainSIMD {
		normGradGo(dx, dy, w, x, iv, c, set)
		return
	}
	n := len(x)
	n8 := n &^ 7
	dy, w, dx = dy[:n], w[:n], dx[:n]
	ivv, cv := archsimd.BroadcastFloat32x8(iv), archsimd.BroadcastFloat32x8(-c)
	for i := 0; i < n8; i += 8 {
		g := archsimd.LoadFloat32x8(dy[i : i+8]).Mul(ivv).Mul(archsimd.LoadFloat32x8(w[i : i+8]))
		g = archsimd.LoadFloat32x8(x[i:i+8]).MulAdd(cv, g)
		if !set {
			g = g.Add(archsimd.LoadFloat32x8(dx[i : i+8]))
		}
		g.Store(dx[i : i+8])
	}
	archsimd.ClearAVXUpperBits()
	for j := n8; j < n; j++ {
		g := iv*dy[j]*w[j] - c*x[j]
		if set {
			dx[j] = g
		} else {
			dx[j] += g
		}
	}
}

// softmaxBack turns d (the gradient of a softmax row p's output) into the gradient of its input: p·(d − Σ p·d).
func softmaxBack(p, d []float32) {
	if !trainSIMD {
		softmaxBackGo(p, d)
		return
	}
	n := len(p)
	n8 := n &^ 7
	d = d[:n]
	var acc archsimd.Float32x8
	for i := 0; i < n8; i += 8 {
		acc = archsimd.LoadFloat32x8(p[i:i+8]).MulAdd(archsimd.LoadFloat32x8(d[i:i+8]), acc)
	}
	delta := hsum8(acc)
	for j := n8; j < n; j++ {
		delta += p[j] * d[j]
	}
	dv := archsimd.BroadcastFloat32x8(delta)
	for i := 0; i < n8; i += 8 {
		archsimd.LoadFloat32x8(p[i : i+8]).Mul(archsimd.LoadFloat32x8(d[i : i+8]).Sub(dv)).Store(d[i : i+8])
	}
	archsimd.ClearAVXUpperBits()
	for j := n8; j < n; j++ {
		d[j] = p[j] * (d[j] - delta)
	}
}

// ropeHalves rotates the pairs (x1[j], x2[j]) by the angles whose cosines and sines are cs and sn (by their negatives
// when inverse), times scale.
func ropeHalves(x1, x2, cs, sn []float32, scale float32, inverse bool) {
	if !trainSIMD {
		ropeHalvesGo(x1, x2, cs, sn, scale, inverse)
		return
	}
	n := len(x1)
	n8 := n &^ 7
	x2, cs, sn = x2[:n], cs[:n], sn[:n]
	sc := archsimd.BroadcastFloat32x8(scale)
	for i := 0; i < n8; i += 8 {
		a, b := archsimd.LoadFloat32x8(x1[i:i+8]), archsimd.LoadFloat32x8(x2[i:i+8])
		c, s := archsimd.LoadFloat32x8(cs[i:i+8]).Mul(sc), archsimd.LoadFloat32x8(sn[i:i+8]).Mul(sc)
		if inverse {
			b.MulAdd(s, a.Mul(c)).Store(x1[i : i+8])  // a·c + b·s
			b.Mul(c).Sub(a.Mul(s)).Store(x2[i : i+8]) // b·c − a·s
		} else {
			a.Mul(c).Sub(b.Mul(s)).Store(x1[i : i+8])
			a.MulAdd(s, b.Mul(c)).Store(x2[i : i+8])
		}
	}
	archsimd.ClearAVXUpperBits()
	ropeHalvesGo(x1[n8:], x2[n8:], cs[n8:], sn[n8:], scale, inverse)
}
