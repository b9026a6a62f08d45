//go:build !(goexperiment.simd && amd64)

package model

func expSum(x []float32, shift float32) float64 { return expSumGo(x, shift) }

func maxOf(x []float32) float32 { return maxGo(x) }

func scaleBy(x []float32, s float32) { scaleGo(x, s) }

func swiglu(act, gate, up []float32) { swigluGo(act, gate, up) }

func swigluBack(dup, dgate, gate, up, dact []float32) { swigluBackGo(dup, dgate, gate, up, dact) }

func sumSquares(x []float32) float32 { return sumSquaresGo(x) }

func mulScaled(dst, x, w []float32, s float32) { mulScaledGo(dst, x, w, s) }

func dot3(a, b, c []float32) float32 { return dot3Go(a, b, c) }

func normGrad(dx, dy, w, x []float32, iv, c float32, set bool) { normGradGo(dx, dy, w, x, iv, c, set) }

func softmaxBack(p, d []float32) { softmaxBackGo(p, d) }

func ropeHalves(x1, x2, cs, sn []float32, scale float32, inverse bool) {
	ropeHalvesGo(x1, x2, cs, sn, scale, inverse)
}
