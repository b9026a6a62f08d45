package model

import (
	"math"
	"testing"
)

// BenchmarkCPUTrainKernels times the elementwise kernels against plain loops.
func BenchmarkCPUTrainKernels(b *testing.B) {
	x := make([]float32, 32000)
	for i := range x {
		x[i] = float32(i%100) * -0.1
	}
	b.Run("expSum/32000", func(b *testing.B) {
		for b.Loop() {
			expSum(x, 0.5)
		}
	})
	b.Run("expSumGo/32000", func(b *testing.B) {
		for b.Loop() {
			expSumGo(x, 0.5)
		}
	})
	b.Run("math.Exp/32000", func(b *testing.B) {
		for b.Loop() {
			var s float64
			for i, v := range x {
				e := math.Exp(float64(v - 0.5))
				x[i] = float32(e)
				s += e
			}
		}
	})
	b.Run("softmaxRow/101", func(b *testing.B) {
		for b.Loop() {
			r := x[:101]
			s := expSum(r, maxOf(r))
			scaleBy(r, float32(1/s))
		}
	})
	gate, up, act := x[:16384], make([]float32, 16384), make([]float32, 16384)
	for i := range up {
		up[i] = 1
	}
	b.Run("swiglu/16384", func(b *testing.B) {
		for b.Loop() {
			swiglu(act, gate, up)
		}
	})
	b.Run("swigluGo/16384", func(b *testing.B) {
		for b.Loop() {
			swigluGo(act, gate, up)
		}
	})
	b.Run("swigluBack/16384", func(b *testing.B) {
		for b.Loop() {
			swigluBack(act, up, gate, up, up)
		}
	})
}
