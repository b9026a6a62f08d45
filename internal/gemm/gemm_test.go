package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/gemv"
	"github.com/saddle-ml/saddle/internal/team"
)

// matrix is a test operand: its logical values (exactly representable in kind) and a view of them laid out in
// storage as the layout says.
type matrix struct {
	r, c int
	val  []float64 // row-major r×c
	view View
}

// layouts an operand can have in storage.
const (
	rowMajor = iota // RS = cols + pad, CS = 1
	colMajor        // the transpose of a row-major [c, r] matrix (RS = 1), built with View.T
	strided         // neither stride 1
	numLayouts
)

// randValue returns a random value exactly representable in kind, with its storage bits for half kinds.
func randValue(rng *rand.Rand, kind gemv.Kind) (float64, uint16) {
	switch kind {
	case gemv.BF16:
		b := uint16(math.Float32bits(float32(rng.NormFloat64())) >> 16)
		return float64(math.Float32frombits(uint32(b) << 16)), b
	case gemv.F16:
		sign, exp, mant := uint16(rng.IntN(2)), uint16(8+rng.IntN(12)), uint16(rng.IntN(1024))
		if rng.IntN(50) == 0 {
			exp = 0 // subnormal
		}
		v := float64(mant) / 1024 * math.Ldexp(1, -14)
		if exp > 0 {
			v = (1 + float64(mant)/1024) * math.Ldexp(1, int(exp)-15)
		}
		if sign == 1 {
			v = -v
		}
		return v, sign<<15 | exp<<10 | mant
	}
	v := float32(rng.NormFloat64())
	if rng.IntN(20) == 0 {
		v = 0
	}
	return float64(v), 0
}

// newMatrix makes a random r×c operand of kind in layout, at offset off with pad extra values per row/column.
func newMatrix(rng *rand.Rand, r, c int, kind gemv.Kind, layout, off, pad int) matrix {
	m := matrix{r: r, c: c, val: make([]float64, r*c)}
	var rs, cs int
	switch layout {
	case rowMajor:
		rs, cs = c+pad, 1
	case colMajor:
		rs, cs = 1, r+pad
	default:
		rs, cs = 2, 2*r+1+pad
	}
	size := off + 1
	if r > 0 && c > 0 {
		size += (r-1)*rs + (c-1)*cs
	}
	size += pad
	var f32 []float32
	var bits []uint16
	if kind == gemv.F32 {
		f32 = make([]float32, size)
		for i := range f32 {
			f32[i] = float32(1e30) // never read: a read shows up as a huge error
		}
	} else {
		bits = make([]uint16, size)
		for i := range bits {
			bits[i] = 0x7bff // f16 65504, bf16 ~1e36
		}
	}
	for i := range r {
		for j := range c {
			v, b := randValue(rng, kind)
			m.val[i*c+j] = v
			o := off + i*rs + j*cs
			if kind == gemv.F32 {
				f32[o] = float32(v)
			} else {
				bits[o] = b
			}
		}
	}
	switch layout {
	case colMajor: // built as the transpose of a row-major [c, r] view
		m.view = View{Kind: kind, F32: f32, Bits: bits, Off: off, RS: cs, CS: rs}.T()
	default:
		m.view = View{Kind: kind, F32: f32, Bits: bits, Off: off, RS: rs, CS: cs}
	}
	return m
}

type testCase struct {
	m, n, k          int
	aKind, bKind     gemv.Kind
	aLayout, bLayout int
	off, pad, cpad   int
	accumulate       bool
}

func (tc testCase) String() string {
	return fmt.Sprintf("m%d n%d k%d A%v/%d B%v/%d off%d pad%d cpad%d acc%v", tc.m, tc.n, tc.k, tc.aKind, tc.aLayout,
		tc.bKind, tc.bLayout, tc.off, tc.pad, tc.cpad, tc.accumulate)
}

// run multiplies with mul and checks C against a float64 product of the logical values, and that C's values outside
// the product are untouched.
func (tc testCase) run(t *testing.T, rng *rand.Rand, mul func(c []float32, ldc, m, n, k int, a, b View, acc bool)) {
	t.Helper()
	a := newMatrix(rng, tc.m, tc.k, tc.aKind, tc.aLayout, tc.off, tc.pad)
	b := newMatrix(rng, tc.k, tc.n, tc.bKind, tc.bLayout, 2*tc.off, tc.pad)
	ldc := tc.n + tc.cpad
	c := make([]float32, tc.m*ldc+tc.cpad)
	c0 := make([]float32, len(c))
	for i := range c {
		c0[i] = float32(rng.NormFloat64())
		c[i] = c0[i]
	}
	mul(c, ldc, tc.m, tc.n, tc.k, a.view, b.view, tc.accumulate)
	bad := 0
	for i := range len(c) {
		r, j := i/ldc, i%ldc
		if r >= tc.m || j >= tc.n {
			if c[i] != c0[i] {
				t.Fatalf("%v: C[%d] (row %d, col %d) outside the product changed: %v → %v", tc, i, r, j, c0[i], c[i])
			}
			continue
		}
		var want, mag float64
		for p := range tc.k {
			x := a.val[r*tc.k+p] * b.val[p*tc.n+j]
			want += x
			mag += math.Abs(x)
		}
		if tc.accumulate {
			want += float64(c0[i])
			mag += math.Abs(float64(c0[i]))
		}
		tol := float64(tc.k+4) * 0x1p-24 * mag
		if d := math.Abs(float64(c[i]) - want); !(d <= tol) {
			if bad++; bad <= 5 {
				t.Errorf("%v: C[%d, %d] = %v, want %v (|diff| %.3g > tol %.3g)", tc, r, j, c[i], want, d, tol)
			}
		}
	}
	if bad > 5 {
		t.Fatalf("%v: %d wrong values", tc, bad)
	}
}

var kinds = []gemv.Kind{gemv.F32, gemv.BF16, gemv.F16}

// kernels runs f with the assembly kernels (where this CPU has them; once with A read in place whenever it can be)
// and with the plain-Go kernel.
func kernels(t *testing.T, f func(t *testing.T)) {
	for _, mode := range []string{"asm", "asm-direct", "go"} {
		if mode != "go" && !hasAsm {
			continue
		}
		t.Run(mode, func(t *testing.T) {
			defer func(old bool, n int) { forceGo, directMaxN = old, n }(forceGo, directMaxN)
			forceGo = mode == "go"
			if mode == "asm-direct" {
				directMaxN = 1 << 30
			}
			f(t)
		})
	}
}

func withBlocks(k, m, n int, f func()) {
	defer func(k, m, n int) { blockK, blockM, blockN = k, m, n }(blockK, blockM, blockN)
	blockK, blockM, blockN = k, m, n
	f()
}

// edgeSizes cross the micro-tile (6×16) and block boundaries.
var edgeSizes = []int{1, 2, 5, 6, 7, 12, 15, 16, 17, 31, 33, 97}

func TestEdgeShapes(t *testing.T) {
	kernels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for _, m := range edgeSizes {
			for _, n := range edgeSizes {
				k := edgeSizes[rng.IntN(len(edgeSizes))]
				tc := testCase{m: m, n: n, k: k, aKind: gemv.F32, bKind: kinds[rng.IntN(3)],
					aLayout: rng.IntN(numLayouts), bLayout: rng.IntN(numLayouts), pad: rng.IntN(3),
					cpad: rng.IntN(3), off: rng.IntN(5), accumulate: rng.IntN(2) == 0}
				tc.run(t, rng, MulSerial)
			}
		}
	})
}

// TestRandom covers every kind and layout of A and B, Mul and MulSerial, with the default blocks and with small
// ones (several k, m and n blocks, so C is overwritten by the first k block and added to by the rest).
func TestRandom(t *testing.T) {
	kernels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		for _, blocks := range [][3]int{{blockK, blockM, blockN}, {24, 12, 32}, {7, 6, 16}} {
			withBlocks(blocks[0], blocks[1], blocks[2], func() {
				for _, mul := range []func([]float32, int, int, int, int, View, View, bool){Mul, MulSerial} {
					for _, aKind := range kinds {
						for _, bKind := range kinds {
							for al := range numLayouts {
								for bl := range numLayouts {
									tc := testCase{m: 1 + rng.IntN(150), n: 1 + rng.IntN(150), k: 1 + rng.IntN(300),
										aKind: aKind, bKind: bKind, aLayout: al, bLayout: bl, off: rng.IntN(4),
										pad: rng.IntN(3), cpad: rng.IntN(4), accumulate: rng.IntN(2) == 0}
									tc.run(t, rng, mul)
								}
							}
						}
					}
				}
			})
		}
	})
}

// TestLarge runs a few products past the default block sizes, split over the cores.
func TestLarge(t *testing.T) {
	kernels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, s := range [][3]int{{300, 290, 270}, {161, 300, 513}, {7, 300, 300}, {300, 5, 257}, {290, 16, 512}} {
			for _, bKind := range kinds {
				tc := testCase{m: s[0], n: s[1], k: s[2], aKind: gemv.F32, bKind: bKind, aLayout: rng.IntN(2),
					bLayout: rng.IntN(2), pad: 1, cpad: 3, accumulate: rng.IntN(2) == 0}
				tc.run(t, rng, Mul)
			}
		}
	})
}

// TestParallelSplits forces the parallel path on small products and on more workers than this machine has cores
// (grids of 3, 4 and 6 rectangles), on the spinning team and on goroutines started per product.
func TestParallelSplits(t *testing.T) {
	defer func(p int, off bool) { parallelMin, team.Off = p, off }(parallelMin, team.Off)
	parallelMin = 0
	for _, off := range []bool{false, true} {
		team.Off = off
		t.Run(fmt.Sprint("team.Off=", off), testParallelSplits)
	}
}

func testParallelSplits(t *testing.T) {
	kernels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, procs := range []int{2, 3, 4, 6} {
			old := runtime.GOMAXPROCS(procs)
			for _, s := range [][3]int{{1, 1, 1}, {5, 40, 3}, {40, 5, 9}, {13, 33, 17}, {100, 100, 64}, {6, 16, 2}, {30, 200, 20},
				{37, 300, 290}} {
				tc := testCase{m: s[0], n: s[1], k: s[2], aKind: gemv.F32, bKind: kinds[rng.IntN(3)],
					aLayout: rng.IntN(numLayouts), bLayout: rng.IntN(numLayouts), off: 1, pad: 2, cpad: 1,
					accumulate: rng.IntN(2) == 0}
				tc.run(t, rng, Mul)
			}
			withBlocks(24, 12, 32, func() { // several blocks of every size
				testCase{m: 50, n: 100, k: 70, aKind: gemv.F32, bKind: gemv.BF16, bLayout: colMajor, cpad: 1}.run(t, rng, Mul)
			})
			runtime.GOMAXPROCS(old)
		}
	})
}

// TestZeroK: with k = 0 the product is zero: C is cleared (or left as it is when accumulating).
func TestZeroK(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, acc := range []bool{false, true} {
		for _, mul := range []func([]float32, int, int, int, int, View, View, bool){Mul, MulSerial} {
			testCase{m: 7, n: 19, k: 0, bKind: gemv.BF16, cpad: 2, accumulate: acc}.run(t, rng, mul)
		}
	}
	// Empty C: nothing to do, any views.
	Mul(nil, 0, 0, 0, 5, View{}, View{}, false)
	MulSerial(make([]float32, 3), 3, 1, 0, 4, RowMajor(make([]float32, 4), 4), View{}, false)
}

// TestWeight: the views the trainer uses: Y = X·Wᵀ and dX = dY·W for a weight in its storage dtype.
func TestWeight(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, kind := range kinds {
		const tokens, in, out = 37, 70, 45
		wm := newMatrix(rng, out, in, kind, rowMajor, 0, 0)
		w := &gemv.Matrix{Kind: kind, Rows: out, Cols: in, F32: wm.view.F32, Bits: wm.view.Bits}
		x := make([]float32, tokens*in)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		y := make([]float32, tokens*out)
		Mul(y, out, tokens, out, in, RowMajor(x, in), Weight(w).T(), false)
		for i := range tokens {
			for j := range out {
				var want, mag float64
				for p := range in {
					v := float64(x[i*in+p]) * wm.val[j*in+p]
					want, mag = want+v, mag+math.Abs(v)
				}
				if d := math.Abs(float64(y[i*out+j]) - want); d > 1e-5*mag {
					t.Fatalf("%v: Y[%d, %d] = %v, want %v", kind, i, j, y[i*out+j], want)
				}
			}
		}
		dx := make([]float32, tokens*in)
		MulSerial(dx, in, tokens, in, out, RowMajor(y, out), Weight(w), false)
		for i := range tokens {
			for p := range in {
				var want, mag float64
				for j := range out {
					v := float64(y[i*out+j]) * wm.val[j*in+p]
					want, mag = want+v, mag+math.Abs(v)
				}
				if d := math.Abs(float64(dx[i*in+p]) - want); d > 1e-5*mag {
					t.Fatalf("%v: dX[%d, %d] = %v, want %v", kind, i, p, dx[i*in+p], want)
				}
			}
		}
	}
}

func TestBadViewPanics(t *testing.T) {
	a := RowMajor(make([]float32, 6*5), 5)
	b := RowMajor(make([]float32, 5*4), 4)
	c := make([]float32, 6*4)
	for name, f := range map[string]func(){
		"A too short": func() { Mul(c, 4, 6, 4, 6, a, b, false) },
		"B too short": func() { MulSerial(c, 4, 6, 5, 5, a, RowMajor(make([]float32, 5*4), 5), false) },
		"C too short": func() { Mul(c[:23], 4, 6, 4, 5, a, b, false) },
		"ldc < n":     func() { Mul(c, 3, 6, 4, 5, a, b, false) },
		"offset":      func() { a := a; a.Off = 1; MulSerial(c, 4, 6, 4, 5, a, b, false) },
		"negative":    func() { b := b; b.RS = -4; b.Off = 16; Mul(c, 4, 6, 4, 5, a, b, false) },
		"half bits":   func() { b := b; b.Kind = gemv.BF16; b.Bits = make([]uint16, 19); Mul(c, 4, 6, 4, 5, a, b, false) },
	} {
		func() {
			defer func() {
				r := recover()
				if s, ok := r.(string); !ok || !strings.HasPrefix(s, "gemm: ") {
					t.Errorf("%s: recovered %v, want a gemm panic", name, r)
				}
			}()
			f()
		}()
	}
}

// TestNoAllocs: a product reuses its pooled packing buffers.
func TestNoAllocs(t *testing.T) {
	a, b, c := RowMajor(make([]float32, 64*200), 200), RowMajor(make([]float32, 200*50), 50), make([]float32, 64*50)
	MulSerial(c, 50, 64, 50, 200, a, b, false)
	if n := testing.AllocsPerRun(20, func() { MulSerial(c, 50, 64, 50, 200, a, b, true) }); n > 0 {
		t.Errorf("MulSerial allocates %v times per product", n)
	}
	u, bf := RowMajor(make([]float32, 64*16), 16), RowMajor(make([]float32, 16*50), 50)
	if n := testing.AllocsPerRun(20, func() { MulPair(c, 50, 64, 50, 200, a, b, 16, u, bf, true) }); n > 0 {
		t.Errorf("MulPair allocates %v times per product", n)
	}
}

// mulSplit returns a product function that computes the product as MulPair of its first k − k2 steps and its last
// k2 (at most k), the second pair of views being the first's moved on by k − k2 steps.
func mulSplit(k2 int) func(c []float32, ldc, m, n, k int, a, b View, acc bool) {
	return func(c []float32, ldc, m, n, k int, a, b View, acc bool) {
		k2 := min(k2, k)
		k1 := k - k2
		a2, b2 := a, b
		a2.Off += k1 * a.CS
		b2.Off += k1 * b.RS
		MulPair(c, ldc, m, n, k1, a, b, k2, a2, b2, acc)
	}
}

// TestMulPair: MulPair over every kind and layout, block sizes and core counts, against the one product it splits
// (the second product's steps join the first's last block, of any length, or make the whole product).
func TestMulPair(t *testing.T) {
	kernels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(13, 14))
		for _, blocks := range [][3]int{{blockK, blockM, blockN}, {24, 12, 32}, {7, 6, 16}} {
			withBlocks(blocks[0], blocks[1], blocks[2], func() {
				for _, procs := range []int{1, 2, 3} {
					old := runtime.GOMAXPROCS(procs)
					for _, aKind := range kinds {
						for _, bKind := range kinds {
							tc := testCase{m: 1 + rng.IntN(150), n: 1 + rng.IntN(150), k: 1 + rng.IntN(300),
								aKind: aKind, bKind: bKind, aLayout: rng.IntN(numLayouts), bLayout: rng.IntN(numLayouts),
								off: rng.IntN(4), pad: rng.IntN(3), cpad: rng.IntN(4), accumulate: rng.IntN(2) == 0}
							tc.run(t, rng, mulSplit([]int{1, 2, 7, 16, 33, 1000}[rng.IntN(6)]))
						}
					}
					runtime.GOMAXPROCS(old)
				}
			})
		}
	})
}

// TestMulPairLowRank: the trainer's use, Y = X·Wᵀ + U·Bᵀ and dX = dY·W + G·A, with W in its storage dtype and the
// low-rank factors float32, against float64.
func TestMulPairLowRank(t *testing.T) {
	kernels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(15, 16))
		for _, kind := range kinds {
			const tokens, in, out, rank = 515, 300, 290, 16
			w := newMatrix(rng, out, in, kind, rowMajor, 0, 0)
			x := newMatrix(rng, tokens, in, gemv.F32, rowMajor, 0, 0)
			dy := newMatrix(rng, tokens, out, gemv.F32, rowMajor, 0, 0)
			u := newMatrix(rng, tokens, rank, gemv.F32, rowMajor, 0, 0)
			g := newMatrix(rng, tokens, rank, gemv.F32, rowMajor, 0, 0)
			bf := newMatrix(rng, out, rank, gemv.F32, rowMajor, 0, 0)
			af := newMatrix(rng, rank, in, gemv.F32, rowMajor, 0, 0)
			for _, fwd := range []bool{true, false} {
				cols, k1 := out, in
				if !fwd {
					cols, k1 = in, out
				}
				c := make([]float32, tokens*cols)
				if fwd {
					MulPair(c, cols, tokens, cols, in, x.view, w.view.T(), rank, u.view, bf.view.T(), false)
				} else {
					MulPair(c, cols, tokens, cols, out, dy.view, w.view, rank, g.view, af.view, false)
				}
				for i := range tokens {
					for j := range cols {
						var want, mag float64
						add := func(v float64) { want += v; mag += math.Abs(v) }
						for p := range k1 {
							if fwd {
								add(x.val[i*in+p] * w.val[j*in+p])
							} else {
								add(dy.val[i*out+p] * w.val[p*in+j])
							}
						}
						for r := range rank {
							if fwd {
								add(u.val[i*rank+r] * bf.val[j*rank+r])
							} else {
								add(g.val[i*rank+r] * af.val[r*in+j])
							}
						}
						if d := math.Abs(float64(c[i*cols+j]) - want); !(d <= float64(k1+rank+4)*0x1p-24*mag) {
							t.Fatalf("%v forward %v: C[%d, %d] = %v, want %v", kind, fwd, i, j, c[i*cols+j], want)
						}
					}
				}
			}
		}
	})
}
