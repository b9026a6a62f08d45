package model

import "math"

// The CPU trainer's elementwise kernels: exp for the softmaxes and SiLU, with 8-wide SIMD versions on amd64
// (cputrain_simd_amd64.go: Cephes' expf polynomial, about 1 ulp) and these plain loops elsewhere and for the tails.

const (
	expLo    = -87.33 // below: 0 (the exact value is under float32's smallest normal)
	expHi    = 88.0   // above: clamped (exp(88) ≈ 1.65e38), so 2ⁿ stays a normal float32
	log2e    = 1.44269504088896341
	expC1    = 0.693359375 // ln 2 = expC1 + expC2, expC1 exact in few bits
	expC2    = -2.12194440e-4
	expP0    = 1.9875691500e-4
	expP1    = 1.3981999507e-3
	expP2    = 8.3334519073e-3
	expP3    = 4.1665795894e-2
	expP4    = 1.6666665459e-1
	expP5    = 5.0000001201e-1
	expBlock = 1024 // values the SIMD sum adds in float32 (8 lanes) before adding their sum to the float64 total
)

func sigmoid(x float32) float32 { return 1 / (1 + float32(math.Exp(float64(-x)))) }

func expSumGo(x []float32, shift float32) float64 {
	var total float64
	for i, v := range x {
		e := float32(math.Exp(float64(v - shift)))
		x[i] = e
		total += float64(e)
	}
	return total
}

func maxGo(x []float32) float32 {
	best := float32(math.Inf(-1))
	for _, v := range x {
		best = max(best, v)
	}
	return best
}

func scaleGo(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}

func swigluGo(act, gate, up []float32) {
	for j, g := range gate {
		act[j] = g * sigmoid(g) * up[j]
	}
}

func swigluBackGo(dup, dgate, gate, up, dact []float32) {
	for j, g := range gate {
		s, d := sigmoid(g), dact[j]
		dup[j] = d * g * s
		dgate[j] = d * up[j] * s * (1 + g*(1-s))
	}
}

// The row kernels of the norms and of attention's softmax gradient (SIMD versions in cputrain_simd_amd64.go).

func sumSquaresGo(x []float32) float32 {
	var s float32
	for _, v := range x {
		s += v * v
	}
	return s
}

func mulScaledGo(dst, x, w []float32, s float32) {
	w, dst = w[:len(x)], dst[:len(x)]
	for j, v := range x {
		dst[j] = v * s * w[j]
	}
}

func dot3Go(a, b, c []float32) float32 {
	b, c = b[:len(a)], c[:len(a)]
	var s float32
	for j, v := range a {
		s += v * b[j] * c[j]
	}
	return s
}

func normGradGo(dx, dy, w, x []float32, iv, c float32, set bool) {
	dy, w, dx = dy[:len(x)], w[:len(x)], dx[:len(x)]
	for j, v := range x {
		g := iv*dy[j]*w[j] - c*v
		if set {
			dx[j] = g
		} else {
			dx[j] += g
		}
	}
}

func softmaxBackGo(p, d []float32) {
	d = d[:len(p)]
	var delta float32
	for j, v := range p {
		delta += v * d[j]
	}
	for j, v := range p {
		d[j] = v * (d[j] - delta)
	}
}

func ropeHalvesGo(x1, x2, cs, sn []float32, scale float32, inverse bool) {
	x2, cs, sn = x2[:len(x1)], cs[:len(x1)], sn[:len(x1)]
	for j, a := range x1 {
		b, c, s := x2[j], cs[j], sn[j]
		if inverse {
			s = -s
		}
		x1[j] = (a*c - b*s) * scale
		x2[j] = (b*c + a*s) * scale
	}
}
