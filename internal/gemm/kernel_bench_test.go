package gemm

import (
	"fmt"
	"testing"

	"github.com/saddle-ml/saddle/internal/gemv"
	"github.com/saddle-ml/saddle/internal/team"
)

// BenchmarkKernel measures the micro-kernel alone on packed operands that stay in L1 (the kernel's ceiling).
func BenchmarkKernel(b *testing.B) {
	if !hasAsm {
		b.Skip("no assembly kernel")
	}
	for _, kc := range []int{64, 256, 512} {
		b.Run(fmt.Sprint("kc", kc), func(b *testing.B) {
			a, bp, c := make([]float32, kc*mr), make([]float32, kc*nr), make([]float32, mr*nr)
			for b.Loop() {
				kern6x16(kc, &a[0], &bp[0], &c[0], nr, 1)
			}
			b.ReportMetric(2*mr*nr*float64(kc)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkPack measures packing blocks of a 512×512 and a 2048×2048 matrix (the latter beyond the caches): B
// panels (kc×nc) and A blocks (mc×kc) from row-major and transposed views, f32 and bf16.
func BenchmarkPack(b *testing.B) {
	for _, size := range []int{512, 2048} {
		b.Run(fmt.Sprint(size), func(b *testing.B) { benchPack(b, size) })
	}
}

func benchPack(b *testing.B, size int) {
	f32, bits := make([]float32, size*size), make([]uint16, size*size)
	for i := range f32 {
		f32[i] = float32(i % 13)
		bits[i] = uint16(i % 13)
	}
	for _, kind := range []int{0, 1} {
		v := RowMajor(f32, size)
		if kind == 1 {
			v = View{Kind: 1, Bits: bits, RS: size, CS: 1}
		}
		for _, tr := range []bool{false, true} {
			vv := v
			if tr {
				vv = v.T()
			}
			name := fmt.Sprintf("kind%d/T%v", kind, tr)
			const kc, nc, mc = 256, 512, 144
			dst := make([]float32, (kc+1)*(max(nc, mc)+16))
			b.Run("B/"+name, func(b *testing.B) {
				i := 0
				for b.Loop() {
					pc := (i * kc) % size
					pack(dst, vv, 0, pc, nc, kc, nr, vv.CS, vv.RS, panelStride(kc, nr), !forceGo)
					i++
				}
				b.ReportMetric(float64(kc*nc)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gelem/s")
			})
			if kind == 0 {
				b.Run("A/"+name, func(b *testing.B) {
					i := 0
					for b.Loop() {
						ic := (i * mc) % (size - mc)
						pack(dst, vv, ic, 0, mc, kc, mr, vv.RS, vv.CS, panelStride(kc, mr), !forceGo)
						i++
					}
					b.ReportMetric(float64(kc*mc)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gelem/s")
				})
			}
		}
	}
}

// BenchmarkDirect compares reading a row-major A in place with packing it, by the width of the product.
func BenchmarkDirect(b *testing.B) {
	const m, k = 512, 2048
	a := RowMajor(make([]float32, m*k), k)
	for _, n := range []int{16, 32, 64, 96, 128, 256, 512, 1024, 2048} {
		bv := RowMajor(make([]float32, k*n), n)
		c := make([]float32, m*n)
		for _, direct := range []bool{false, true} {
			b.Run(fmt.Sprintf("n%d/direct=%v", n, direct), func(b *testing.B) {
				defer func(old int) { directMaxN = old }(directMaxN)
				directMaxN = 0
				if direct {
					directMaxN = n
				}
				for b.Loop() {
					MulSerial(c, n, m, n, k, a, bv, false)
				}
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkBlocks sweeps the block sizes on a square product and a forward-pass one (-cpu sets the goroutines).
// Measured on one core: all within 3% of each other, kc = 256 ahead on the forward product (93-95 GFLOP/s).
func BenchmarkBlocks(b *testing.B) {
	shapes := []struct {
		name    string
		m, n, k int
		bT      bool
	}{{"sq1024", 1024, 1024, 1024, false}, {"fwd512x2048x2048", 512, 2048, 2048, true}}
	for _, s := range shapes {
		a := RowMajor(make([]float32, s.m*s.k), s.k)
		bv := RowMajor(make([]float32, s.k*s.n), s.n)
		if s.bT {
			bv = RowMajor(make([]float32, s.k*s.n), s.k).T()
		}
		c := make([]float32, s.m*s.n)
		for _, kc := range []int{192, 256, 320, 384} {
			for _, mc := range []int{48, 72, 144, 240} {
				b.Run(fmt.Sprintf("%s/kc%d/mc%d", s.name, kc, mc), func(b *testing.B) {
					withBlocks(kc, mc, blockN, func() {
						for b.Loop() {
							Mul(c, s.n, s.m, s.n, s.k, a, bv, false)
						}
					})
					b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// BenchmarkSplit compares Mul's rectangles run on the spinning team (internal/team) with goroutines started per
// product.
func BenchmarkSplit(b *testing.B) {
	shapes := []struct {
		name    string
		m, n, k int
		bT      bool
		kind    gemv.Kind
	}{
		{"sq1024", 1024, 1024, 1024, false, gemv.F32},
		{"fwd512x2048x2048", 512, 2048, 2048, true, gemv.F32},
		{"fwd512x2048x2048bf16", 512, 2048, 2048, true, gemv.BF16},
		{"dx512x2048x2048", 512, 2048, 2048, false, gemv.F32},
		{"fwd512x8192x2048", 512, 8192, 2048, true, gemv.F32},
		{"fwd512x512x2048", 512, 512, 2048, true, gemv.F32},
		{"fwd1024x32000x512", 1024, 32000, 512, true, gemv.F32},
	}
	for _, s := range shapes {
		a := RowMajor(make([]float32, s.m*s.k), s.k)
		bv := View{Kind: s.kind, RS: s.n, CS: 1}
		if s.kind == gemv.F32 {
			bv.F32 = make([]float32, s.k*s.n)
		} else {
			bv.Bits = make([]uint16, s.k*s.n)
		}
		if s.bT {
			bv.RS, bv.CS = 1, s.k
		}
		c := make([]float32, s.m*s.n)
		for _, off := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/team.Off=%v", s.name, off), func(b *testing.B) {
				defer func(old bool) { team.Off = old }(team.Off)
				team.Off = off
				for b.Loop() {
					Mul(c, s.n, s.m, s.n, s.k, a, bv, false)
				}
				b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkSmall compares Mul on every core with MulSerial on small square products (where parallelMin is set).
func BenchmarkSmall(b *testing.B) {
	for _, s := range []int{32, 48, 64, 80, 96, 128, 192, 256, 384, 512} {
		a, bv, c := RowMajor(make([]float32, s*s), s), RowMajor(make([]float32, s*s), s), make([]float32, s*s)
		for _, serial := range []bool{true, false} {
			b.Run(fmt.Sprintf("%d/serial=%v", s, serial), func(b *testing.B) {
				defer func(old int) { parallelMin = old }(parallelMin)
				parallelMin = 0
				mul := Mul
				if serial {
					mul = MulSerial
				}
				for b.Loop() {
					mul(c, s, s, s, s, a, bv, false)
				}
				b.ReportMetric(2*float64(s*s*s)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkAdapterShapes times the products of a rank-8 adapter on 1024 rows of width 512 (W2's q_proj), on the
// calling goroutine and on every core: h = x·Aᵀ, dx += g·A, dA += gᵀ·x, dB += dyᵀ·h.
func BenchmarkAdapterShapes(b *testing.B) {
	const rows, width, rank = 1024, 512, 8
	for _, s := range []struct {
		name    string
		m, n, k int
		aT, bT  bool
	}{
		{"h=x·Aᵀ", rows, rank, width, false, true},
		{"dx+=g·A", rows, width, rank, false, false},
		{"dA+=gᵀ·x", rank, width, rows, true, false},
		{"dB+=dyᵀ·h", width, rank, rows, true, false},
	} {
		a := RowMajor(make([]float32, s.m*s.k), s.k)
		if s.aT {
			a = RowMajor(make([]float32, s.m*s.k), s.m).T()
		}
		bv := RowMajor(make([]float32, s.k*s.n), s.n)
		if s.bT {
			bv = RowMajor(make([]float32, s.k*s.n), s.k).T()
		}
		c := make([]float32, s.m*s.n)
		for _, serial := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/serial=%v", s.name, serial), func(b *testing.B) {
				mul := Mul
				if serial {
					mul = MulSerial
				}
				for b.Loop() {
					mul(c, s.n, s.m, s.n, s.k, a, bv, false)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/op")
			})
		}
	}
}
