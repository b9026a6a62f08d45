package lora

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/gemm"
	"github.com/saddle-ml/saddle/internal/testbackend"
)

// cpuTestSet is a set of two adapters, one widening (24→40) and one narrowing (40→24), with random factors.
func cpuTestSet(depth, rank int, alpha float64, rslora bool, seed uint64) *Set {
	spec := Spec{Targets: []string{"all-linear"}, Rank: rank, Alpha: alpha, RSLoRA: rslora, Depth: depth, Init: "lora"}
	set := &Set{Spec: spec, Adapters: []*Adapter{{Module: "a.up", In: 24, Out: 40}, {Module: "b.down", In: 40, Out: 24}}}
	rng := rand.New(rand.NewPCG(seed, 3))
	for _, a := range set.Adapters {
		a.Factors = make([][]float32, depth)
		for i := range a.Factors {
			s := a.FactorShape(i, depth, rank)
			a.Factors[i] = randF32(rng, s[0]*s[1])
		}
	}
	return set
}

func randF32(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func toF64s(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// relDiff is max|got − want| / max|want|.
func relDiff(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var d, m float64
	for i := range want {
		d = max(d, math.Abs(float64(got[i])-want[i]))
		m = max(m, math.Abs(want[i]))
	}
	if m == 0 {
		return d
	}
	return d / m
}

// cpuPass runs Forward on every module of c in Set order, adding each output u·V to ys, then Backward in reverse
// order, adding each input gradient g·V to dxs (dxs[k] nil: not wanted), as the CPU trainer does.
func cpuPass(set *Set, c *CPUAdapters, rows int, xs, dys, ys, dxs [][]float32) {
	mods := c.Modules()
	for k, a := range set.Adapters {
		u, r, v := mods[a.Module].Forward(xs[k], rows)
		gemm.Mul(ys[k], a.Out, rows, a.Out, r, gemm.RowMajor(u, r), v, true)
	}
	for k := len(set.Adapters) - 1; k >= 0; k-- {
		a := set.Adapters[k]
		g, r, v := mods[a.Module].Backward(xs[k], dys[k], rows)
		if dxs[k] != nil {
			gemm.Mul(dxs[k], a.In, rows, a.In, r, gemm.RowMajor(g, r), v, true)
		}
	}
}

// TestCPUAdaptersMatchGraph compares Forward and Backward with Set.Hook and its gradient in a float64 graph: y, the
// gradients of Σ y·dy with respect to every factor and to x, for depths 2–4, ranks 3–8, scalings ≠ 1, a widening
// and a narrowing module, and batches smaller than and equal to the rows the adapters were sized for. The CPU
// adapters start from other factor values and get the tested ones through SetFactors; y and dx start non-zero, to
// check that Forward and Backward add to them.
func TestCPUAdaptersMatchGraph(t *testing.T) {
	b := testbackend.Get(t)
	for _, tc := range []struct {
		depth, rank int
		alpha       float64
		rslora      bool
	}{{2, 3, 5, false}, {3, 5, 3, true}, {4, 8, 20, false}} {
		set := cpuTestSet(tc.depth, tc.rank, tc.alpha, tc.rslora, uint64(tc.depth))
		if s := set.Spec.Scaling(); math.Abs(s-1) < 0.1 {
			t.Fatalf("scaling %g: the test wants one far from 1", s)
		}
		nf := len(set.Adapters) * tc.depth
		exec := MustNewExec(b, func(in []*Node) []*Node {
			hook := set.Hook(in[4:], nil)
			y1 := hook("a.up", in[0], ZerosLike(in[1]))
			y2 := hook("b.down", in[2], ZerosLike(in[3]))
			loss := Add(ReduceAllSum(Mul(y1, in[1])), ReduceAllSum(Mul(y2, in[3])))
			wrt := append([]*Node{in[0], in[2]}, in[4:]...)
			return append([]*Node{y1, y2}, Gradient(loss, wrt...)...)
		})
		for _, rows := range []int{7, 9} {
			t.Run(fmt.Sprintf("depth%d/rank%d/rows%d", tc.depth, tc.rank, rows), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(10*tc.depth+rows), 5))
				c, err := cpuTestSet(tc.depth, tc.rank, tc.alpha, tc.rslora, 99).CPUAdapters(9)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.SetFactors(set.Tensors()); err != nil {
					t.Fatal(err)
				}
				var xs, dys, ys, dxs, y0s, dx0s [][]float32
				args := []any{}
				for _, a := range set.Adapters {
					x, dy := randF32(rng, rows*a.In), randF32(rng, rows*a.Out)
					y0, dx0 := randF32(rng, rows*a.Out), randF32(rng, rows*a.In)
					xs, dys, y0s, dx0s = append(xs, x), append(dys, dy), append(y0s, y0), append(dx0s, dx0)
					ys, dxs = append(ys, append([]float32(nil), y0...)), append(dxs, append([]float32(nil), dx0...))
					args = append(args, tensors.FromFlatDataAndDimensions(toF64s(x), rows, a.In), tensors.FromFlatDataAndDimensions(toF64s(dy), rows, a.Out))
				}
				for _, f := range set.Tensors() {
					args = append(args, tensors.FromFlatDataAndDimensions(toF64s(tensors.MustCopyFlatData[float32](f)), f.Shape().Dimensions...))
				}
				res := exec.MustExec(args...)
				want := func(k int) []float64 { return tensors.MustCopyFlatData[float64](res[k]) }
				c.ZeroGrads()
				cpuPass(set, c, rows, xs, dys, ys, dxs)
				const tol = 1e-5
				for k, a := range set.Adapters {
					wy, wdx := want(k), want(2+k)
					for i := range wy {
						wy[i] += float64(y0s[k][i])
					}
					for i := range wdx {
						wdx[i] += float64(dx0s[k][i])
					}
					if d := relDiff(ys[k], wy); d > tol {
						t.Errorf("%s: y differs from the graph's by %.3g (relative to its largest value)", a.Module, d)
					}
					if d := relDiff(dxs[k], wdx); d > tol {
						t.Errorf("%s: dx differs from the graph's by %.3g", a.Module, d)
					}
				}
				names := set.ParamNames()
				grads := c.Grads()
				if len(grads) != nf {
					t.Fatalf("%d gradients, want %d", len(grads), nf)
				}
				for p := range nf {
					if d := relDiff(grads[p], want(4+p)); d > tol {
						t.Errorf("gradient of %s differs from the graph's by %.3g", names[p], d)
					}
				}
				for p, g := range c.GradTensors() {
					if d := relDiff(tensors.MustCopyFlatData[float32](g), toF64s(grads[p])); d != 0 || !g.Shape().Equal(set.Tensors()[p].Shape()) {
						t.Errorf("GradTensors[%d] (%s) is not Grads[%d] in the factor's shape", p, names[p], p)
					}
				}
			})
		}
		exec.Finalize()
	}
}

// cpuFixture is a depth-3 set, its CPU adapters and one batch of inputs.
func cpuFixture(t *testing.T) (*Set, *CPUAdapters, int, [][]float32, [][]float32) {
	t.Helper()
	set := cpuTestSet(3, 4, 6, false, 1)
	c, err := set.CPUAdapters(6)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(2, 2))
	const rows = 6
	var xs, dys [][]float32
	for _, a := range set.Adapters {
		xs, dys = append(xs, randF32(rng, rows*a.In)), append(dys, randF32(rng, rows*a.Out))
	}
	return set, c, rows, xs, dys
}

func outputs(set *Set, rows int) (ys, dxs [][]float32) {
	for _, a := range set.Adapters {
		ys, dxs = append(ys, make([]float32, rows*a.Out)), append(dxs, make([]float32, rows*a.In))
	}
	return ys, dxs
}

func cloneGrads(g [][]float32) [][]float32 {
	out := make([][]float32, len(g))
	for i, v := range g {
		out[i] = append([]float32(nil), v...)
	}
	return out
}

// TestCPUAdaptersNilDxAndAccumulation checks that a Backward without dx gives the same factor gradients, that two
// passes add up to twice one pass, and that ZeroGrads starts over.
func TestCPUAdaptersNilDxAndAccumulation(t *testing.T) {
	set, c, rows, xs, dys := cpuFixture(t)
	ys, dxs := outputs(set, rows)
	cpuPass(set, c, rows, xs, dys, ys, dxs)
	one := cloneGrads(c.Grads())
	for p, g := range one {
		if relDiff(g, make([]float64, len(g))) == 0 {
			t.Fatalf("gradient %d is all zero", p)
		}
	}

	c.ZeroGrads()
	for p, g := range c.Grads() {
		for _, v := range g {
			if v != 0 {
				t.Fatalf("ZeroGrads left gradient %d non-zero", p)
			}
		}
	}
	ys, _ = outputs(set, rows)
	cpuPass(set, c, rows, xs, dys, ys, make([][]float32, len(xs))) // dx nil for every module
	for p, g := range c.Grads() {
		if d := relDiff(g, toF64s(one[p])); d > 1e-6 {
			t.Errorf("gradient %d without dx differs from the one with dx by %.3g", p, d)
		}
	}

	ys, dxs = outputs(set, rows)
	cpuPass(set, c, rows, xs, dys, ys, dxs) // a second pass adds to the first
	for p, g := range c.Grads() {
		twice := toF64s(one[p])
		for i := range twice {
			twice[i] *= 2
		}
		if d := relDiff(g, twice); d > 1e-6 {
			t.Errorf("gradient %d after two passes differs from twice one pass by %.3g", p, d)
		}
	}
}

// TestCPUAdaptersSetFactorsChecks checks that SetFactors refuses a wrong count, shape or dtype, naming the
// parameter, and changes nothing when it does.
func TestCPUAdaptersSetFactorsChecks(t *testing.T) {
	set, c, _, _, _ := cpuFixture(t)
	before := cloneGrads(c.Factors())
	ts := set.Tensors()
	if err := c.SetFactors(ts[:len(ts)-1]); err == nil || !strings.Contains(err.Error(), fmt.Sprint(len(ts))) {
		t.Errorf("SetFactors with %d of %d tensors: error %v", len(ts)-1, len(ts), err)
	}
	// b.down.M1 is [4, 4]: give it [4, 5]; and b.down.B [24, 4] as float64.
	bad := append([]*tensors.Tensor(nil), ts...)
	bad[0] = tensors.FromFlatDataAndDimensions(make([]float32, len(set.Adapters[0].Factors[0])), 4, 24) // valid: zeros
	bad[4] = tensors.FromFlatDataAndDimensions(make([]float32, 20), 4, 5)
	if err := c.SetFactors(bad); err == nil || !strings.Contains(err.Error(), "b.down.M1") {
		t.Errorf("SetFactors with a [4, 5] b.down.M1: error %v, want one naming b.down.M1", err)
	}
	bad = append([]*tensors.Tensor(nil), ts...)
	bad[0] = tensors.FromFlatDataAndDimensions(make([]float32, len(set.Adapters[0].Factors[0])), 4, 24)
	bad[5] = tensors.FromFlatDataAndDimensions(make([]float64, 24*4), 24, 4)
	if err := c.SetFactors(bad); err == nil || !strings.Contains(err.Error(), "b.down.B") {
		t.Errorf("SetFactors with a float64 b.down.B: error %v, want one naming b.down.B", err)
	}
	for p, f := range c.Factors() {
		if d := relDiff(f, toF64s(before[p])); d != 0 {
			t.Errorf("a refused SetFactors changed factor %d", p)
		}
	}
}

// TestCPUAdaptersRefusals checks that dropout and an empty batch size are refused, and that a Backward without its
// Forward or a Forward of too many rows panics.
func TestCPUAdaptersRefusals(t *testing.T) {
	set := cpuTestSet(2, 3, 6, false, 1)
	set.Spec.Dropout = 0.1
	if _, err := set.CPUAdapters(4); err == nil || !strings.Contains(err.Error(), "dropout") {
		t.Errorf("dropout 0.1: error %v, want one about dropout", err)
	}
	set.Spec.Dropout = 0
	if _, err := set.CPUAdapters(0); err == nil {
		t.Errorf("batch of 0 rows accepted")
	}
	c, err := set.CPUAdapters(4)
	if err != nil {
		t.Fatal(err)
	}
	m := c.Modules()["a.up"]
	if m == nil || len(c.Modules()) != 2 {
		t.Fatalf("Modules() = %v, want a.up and b.down", c.Modules())
	}
	mustPanic := func(what, want string, f func()) {
		t.Helper()
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), want) {
				t.Errorf("%s: panic %v, want one saying %q", what, r, want)
			}
		}()
		f()
	}
	x, y := make([]float32, 5*24), make([]float32, 5*40)
	mustPanic("Backward without Forward", "without a Forward", func() { m.Backward(x, y, 4) })
	mustPanic("Forward of 5 rows on adapters sized for 4", "at most 4", func() { m.Forward(x, 5) })
	m.Forward(x, 4)
	mustPanic("Backward of other rows than its Forward", "after a Forward of 4", func() { m.Backward(x, y, 3) })
	m.Backward(x, y, 4)
	mustPanic("a second Backward after one Forward", "without a Forward", func() { m.Backward(x, y, 4) })
}
