package gemv

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/compute/dtypes/float16"
)

// randomMatrix returns a matrix of kind with values exactly representable in it, and their float64 copy.
func randomMatrix(rng *rand.Rand, kind Kind, rows, cols int) (*Matrix, []float64) {
	w := &Matrix{Kind: kind, Rows: rows, Cols: cols}
	ref := make([]float64, rows*cols)
	switch kind {
	case F32:
		w.F32 = make([]float32, rows*cols)
	default:
		w.Bits = make([]uint16, rows*cols)
	}
	for i := range ref {
		v := float32(rng.NormFloat64())
		switch kind {
		case F32:
			w.F32[i] = v
		case BF16:
			w.Bits[i] = uint16(bfloat16.FromFloat32(v))
			v = bfloat16.BFloat16(w.Bits[i]).Float32()
		case F16:
			if i%97 == 0 {
				v *= 1e-6 // some subnormal halves
			}
			w.Bits[i] = uint16(float16.FromFloat32(v))
			v = float16.Float16(w.Bits[i]).Float32()
		}
		ref[i] = float64(v)
	}
	return w, ref
}

// TestMulTMatchesFloat64 checks every kind, odd shapes (row and column tails, one or several x rows) and the
// parallel split against a float64 reference.
func TestMulTMatchesFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, kind := range []Kind{F32, BF16, F16} {
		for _, shape := range [][3]int{{1, 1, 1}, {7, 13, 1}, {64, 64, 2}, {37, 129, 3}, {1031, 300, 1}, {600, 512, 5}, {70, 4096, 20}, {9, 300, 40}} {
			rows, cols, m := shape[0], shape[1], shape[2]
			t.Run(fmt.Sprintf("%s_%dx%d_m%d", kind, rows, cols, m), func(t *testing.T) {
				w, ref := randomMatrix(rng, kind, rows, cols)
				if err := w.Check(); err != nil {
					t.Fatal(err)
				}
				x := make([]float32, m*cols)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				ldd := rows + 3
				dst := make([]float32, m*ldd)
				for i := range dst {
					dst[i] = 12345 // the padding between rows must stay untouched
				}
				w.MulT(dst, ldd, x, m)
				for i := range m {
					for r := range ldd {
						got := dst[i*ldd+r]
						if r >= rows {
							if got != 12345 {
								t.Fatalf("row %d: padding column %d overwritten: %v", i, r, got)
							}
							continue
						}
						var want, scale float64
						for k := range cols {
							p := ref[r*cols+k] * float64(x[i*cols+k])
							want += p
							scale += math.Abs(p)
						}
						if d := math.Abs(float64(got) - want); d > 1e-5*scale+1e-30 {
							t.Fatalf("dst[%d, %d] = %v, want %v (|Σ| %g)", i, r, got, want, scale)
						}
					}
				}
			})
		}
	}
}

func TestF16ToF32(t *testing.T) {
	for h := range 1 << 16 {
		want := float16.Float16(h).Float32()
		got := F16ToF32(uint16(h))
		if math.Float32bits(got) != math.Float32bits(want) && !(math.IsNaN(float64(got)) && math.IsNaN(float64(want))) {
			t.Fatalf("F16ToF32(%#04x) = %v, want %v", h, got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	if err := (&Matrix{Kind: BF16, Rows: 2, Cols: 3, Bits: make([]uint16, 5)}).Check(); err == nil {
		t.Fatal("a short matrix passed Check")
	}
}

// BenchmarkMulT reports the bandwidth at which one-row products read a 2048×8192 weight (64 MB in f32).
func BenchmarkMulT(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, kind := range []Kind{F32, BF16, F16} {
		for _, m := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s_m%d", kind, m), func(b *testing.B) {
				w, _ := randomMatrix(rng, kind, 8192, 2048)
				x := make([]float32, m*w.Cols)
				dst := make([]float32, m*w.Rows)
				b.SetBytes(w.Bytes())
				for b.Loop() {
					w.MulT(dst, w.Rows, x, m)
				}
			})
		}
	}
}

// BenchmarkMulTPass reports the bandwidth of one decoding pass's one-row products through a synthetic-512 model
// (8 layers of 512-column q, k, v, o, gate, up and down weights and a 32000×512 head: 160 MB in f32), the
// products of the bench's W3 synthetic-512 generation. Short rows are where the order rows are read in matters.
func BenchmarkMulTPass(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	var ms []*Matrix
	var bytes int64
	for range 8 {
		for _, s := range [][2]int{{512, 512}, {256, 512}, {256, 512}, {512, 512}, {1408, 512}, {1408, 512}, {512, 1408}} {
			w, _ := randomMatrix(rng, F32, s[0], s[1])
			ms = append(ms, w)
			bytes += w.Bytes()
		}
	}
	w, _ := randomMatrix(rng, F32, 32000, 512)
	ms = append(ms, w)
	bytes += w.Bytes()
	x := make([]float32, 1408)
	dst := make([]float32, 32000)
	b.SetBytes(bytes)
	for b.Loop() {
		for _, w := range ms {
			w.MulT(dst, w.Rows, x[:w.Cols], 1)
		}
	}
}
