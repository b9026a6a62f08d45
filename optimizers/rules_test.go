package optimizers_test

import (
	"math"
	"testing"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/optimizers"
)

// newBackend is the test backend (internal/testbackend: the Go backend unless $SADDLE_TEST_BACKEND).
func newBackend(t testing.TB) compute.Backend {
	t.Helper()
	return testbackend.Get(t)
}

// The shared 3-element example: x0, one gradient per step (zeros included, to check sign(0) = 0) and a learning
// rate that changes each step (it is a graph input, so this also checks that lr is not baked into the graph).
var (
	x0    = []float64{0.5, -1.0, 2.0}
	grads = [][]float64{{0.1, -0.2, 0}, {-0.3, 0.05, 0.4}, {0.2, 0, -0.1}}
	lrs   = []float64{0.1, 0.05, 0.02}
)

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// runOpt applies opt to x0 for len(gs) steps through Apply and returns the parameter after each step.
func runOpt(t *testing.T, opt optimizers.Optimizer, x0 []float64, gs [][]float64, lrs []float64) [][]float64 {
	t.Helper()
	n := opt.NumSlots()
	exec, err := NewExec(newBackend(t), func(in []*Node) []*Node {
		step, lr := in[2+n], in[3+n]
		ps, ss, err := optimizers.Apply(opt, []*Node{in[0]}, []*Node{in[1]}, [][]*Node{in[2 : 2+n]}, step, lr)
		if err != nil {
			panic(err)
		}
		return append([]*Node{ps[0]}, ss[0]...)
	})
	if err != nil {
		t.Fatal(err)
	}
	x := tensors.FromFlatDataAndDimensions(toF32(x0), len(x0))
	slots := make([]*tensors.Tensor, n)
	for i := range slots {
		slots[i] = tensors.FromFlatDataAndDimensions(make([]float32, len(x0)), len(x0))
	}
	var xs [][]float64
	for s, g := range gs {
		args := []any{x, tensors.FromFlatDataAndDimensions(toF32(g), len(g))}
		for _, sl := range slots {
			args = append(args, sl)
		}
		args = append(args, float32(s+1), float32(lrs[s]))
		outs, err := exec.Call(args...)
		if err != nil {
			t.Fatalf("step %d: %v", s+1, err)
		}
		x, slots = outs[0], outs[1:]
		flat, err := tensors.CopyFlatData[float32](x)
		if err != nil {
			t.Fatal(err)
		}
		row := make([]float64, len(flat))
		for i, v := range flat {
			row[i] = float64(v)
		}
		xs = append(xs, row)
	}
	return xs
}

// refState is the float64 reference's optimizer state.
type refState struct{ m, v [3]float64 }

// refStep advances x (in place) by one step; t is 1-based.
type refStep func(x, g []float64, t int, lr float64, st *refState)

func runRef(step refStep) [][]float64 {
	x := append([]float64(nil), x0...)
	var st refState
	var xs [][]float64
	for s, g := range grads {
		step(x, g, s+1, lrs[s], &st)
		xs = append(xs, append([]float64(nil), x...))
	}
	return xs
}

func sign(v float64) float64 {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

// Reference rules, written from the formulas (PyTorch semantics where PyTorch has the rule).
func refSGD(mu float64, nesterov bool, wd float64, decoupled bool) refStep {
	return func(x, g []float64, _ int, lr float64, st *refState) {
		for i := range x {
			gi := g[i]
			if !decoupled {
				gi += wd * x[i]
			}
			st.m[i] = mu*st.m[i] + gi
			d := st.m[i]
			if nesterov {
				d = gi + mu*st.m[i]
			}
			if decoupled {
				d += wd * x[i]
			}
			x[i] -= lr * d
		}
	}
}

func refAdam(b1, b2, eps, wd float64, decoupled bool) refStep {
	return func(x, g []float64, t int, lr float64, st *refState) {
		for i := range x {
			gi := g[i]
			if !decoupled {
				gi += wd * x[i]
			}
			st.m[i] = b1*st.m[i] + (1-b1)*gi
			st.v[i] = b2*st.v[i] + (1-b2)*gi*gi
			mHat := st.m[i] / (1 - math.Pow(b1, float64(t)))
			vHat := st.v[i] / (1 - math.Pow(b2, float64(t)))
			d := mHat / (math.Sqrt(vHat) + eps)
			if decoupled {
				d += wd * x[i]
			}
			x[i] -= lr * d
		}
	}
}

func refSteepest(q, wd float64, decoupled bool) refStep {
	return func(x, g []float64, _ int, lr float64, _ *refState) {
		for i := range x {
			gi := g[i]
			if !decoupled {
				gi += wd * x[i]
			}
			d := 0.0
			if gi != 0 {
				d = sign(gi) * math.Pow(math.Abs(gi), q-1)
			}
			if decoupled {
				d += wd * x[i]
			}
			x[i] -= lr * d
		}
	}
}

func refSignum(beta, wd float64, decoupled bool) refStep {
	return func(x, g []float64, _ int, lr float64, st *refState) {
		for i := range x {
			gi := g[i]
			if !decoupled {
				gi += wd * x[i]
			}
			st.m[i] = beta*st.m[i] + (1-beta)*gi
			d := sign(st.m[i])
			if decoupled {
				d += wd * x[i]
			}
			x[i] -= lr * d
		}
	}
}

func refLion(b1, b2, wd float64, decoupled bool) refStep {
	return func(x, g []float64, _ int, lr float64, st *refState) {
		for i := range x {
			gi := g[i]
			if !decoupled {
				gi += wd * x[i]
			}
			d := sign(b1*st.m[i] + (1-b1)*gi)
			st.m[i] = b2*st.m[i] + (1-b2)*gi
			if decoupled {
				d += wd * x[i]
			}
			x[i] -= lr * d
		}
	}
}

func TestRulesMatchReference(t *testing.T) {
	cases := []struct {
		name string
		opt  string
		cfg  optimizers.Config
		ref  refStep
	}{
		{"sgd", "sgd", optimizers.Config{}, refSGD(0, false, 0, false)},
		{"sgd momentum", "sgd", optimizers.Config{Momentum: 0.9}, refSGD(0.9, false, 0, false)},
		{"sgd nesterov", "sgd", optimizers.Config{Momentum: 0.9, Nesterov: true}, refSGD(0.9, true, 0, false)},
		{"sgd momentum coupled wd", "sgd", optimizers.Config{Momentum: 0.5, WeightDecay: 0.3}, refSGD(0.5, false, 0.3, false)},
		{"sgd momentum decoupled wd", "sgd", optimizers.Config{Momentum: 0.5, WeightDecay: 0.3, WDMode: "decoupled"}, refSGD(0.5, false, 0.3, true)},
		{"adam", "adam", optimizers.Config{}, refAdam(0.9, 0.999, 1e-8, 0, false)},
		{"adam betas eps", "adam", optimizers.Config{Beta1: 0.5, Beta2: 0.8, Eps: 0.01}, refAdam(0.5, 0.8, 0.01, 0, false)},
		{"adam beta1 explicit zero", "adam", optimizers.Config{Explicit: []string{"beta1"}}, refAdam(0, 0.999, 1e-8, 0, false)},
		{"adam coupled wd", "adam", optimizers.Config{WeightDecay: 0.3}, refAdam(0.9, 0.999, 1e-8, 0.3, false)},
		{"adamw default wd", "adamw", optimizers.Config{}, refAdam(0.9, 0.999, 1e-8, 0.01, true)},
		{"adamw", "adamw", optimizers.Config{WeightDecay: 0.3}, refAdam(0.9, 0.999, 1e-8, 0.3, true)},
		{"adamw wd explicit zero", "adamw", optimizers.Config{Explicit: []string{"weight-decay"}}, refAdam(0.9, 0.999, 1e-8, 0, true)},
		{"adam-l2", "adam-l2", optimizers.Config{WeightDecay: 0.3}, refAdam(0.9, 0.999, 1e-8, 0.3, false)},
		{"sign", "sign", optimizers.Config{}, refSteepest(1, 0, false)},
		{"sign coupled wd", "sign", optimizers.Config{WeightDecay: 0.3}, refSteepest(1, 0.3, false)},
		{"sign decoupled wd", "sign", optimizers.Config{WeightDecay: 0.3, WDMode: "decoupled"}, refSteepest(1, 0.3, true)},
		{"signum", "signum", optimizers.Config{}, refSignum(0.9, 0, false)},
		{"signum decoupled wd", "signum", optimizers.Config{Momentum: 0.5, WeightDecay: 0.3, WDMode: "decoupled"}, refSignum(0.5, 0.3, true)},
		{"lion", "lion", optimizers.Config{}, refLion(0.9, 0.99, 0, false)},
		{"lion betas decoupled wd", "lion", optimizers.Config{Beta1: 0.2, Beta2: 0.6, WeightDecay: 0.3, WDMode: "decoupled"}, refLion(0.2, 0.6, 0.3, true)},
		{"steepest q=1 is sign", "steepest", optimizers.Config{Q: 1}, refSteepest(1, 0, false)},
		{"steepest q=2 is sgd", "steepest", optimizers.Config{Q: 2}, refSGD(0, false, 0, false)},
		{"steepest q=1.5", "steepest", optimizers.Config{Q: 1.5}, refSteepest(1.5, 0, false)},
		{"steepest q=1.5 coupled wd", "steepest", optimizers.Config{Q: 1.5, WeightDecay: 0.3}, refSteepest(1.5, 0.3, false)},
		{"steepest q=1.5 decoupled wd", "steepest", optimizers.Config{Q: 1.5, WeightDecay: 0.3, WDMode: "decoupled"}, refSteepest(1.5, 0.3, true)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opt, err := optimizers.New(c.opt, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if opt.Name() != c.opt {
				t.Errorf("Name() = %q, want %q", opt.Name(), c.opt)
			}
			got := runOpt(t, opt, x0, grads, lrs)
			want := runRef(c.ref)
			for s := range want {
				for i := range want[s] {
					if d := math.Abs(got[s][i] - want[s][i]); d > 1e-6+1e-5*math.Abs(want[s][i]) {
						t.Errorf("step %d, x[%d] = %.8g, want %.8g", s+1, i, got[s][i], want[s][i])
					}
				}
			}
		})
	}
}

// A few values worked out by hand, so that the reference rules themselves are checked too.
func TestHandValues(t *testing.T) {
	check := func(t *testing.T, name string, cfg optimizers.Config, want [][]float64) {
		t.Helper()
		opt, err := optimizers.New(name, cfg)
		if err != nil {
			t.Fatal(err)
		}
		got := runOpt(t, opt, x0, grads[:len(want)], lrs)
		for s := range want {
			for i := range want[s] {
				if math.Abs(got[s][i]-want[s][i]) > 1e-6 {
					t.Errorf("%s step %d x[%d] = %.8g, want %.8g", name, s+1, i, got[s][i], want[s][i])
				}
			}
		}
	}
	// sign: x − lr·sign(g), sign(0) = 0 leaves x[2] alone in step 1.
	check(t, "sign", optimizers.Config{}, [][]float64{{0.4, -0.9, 2.0}, {0.45, -0.95, 1.95}})
	// Adam's first step is ±lr wherever g ≠ 0 thanks to bias correction (without it, it would be lr·0.1/√0.001).
	check(t, "adam", optimizers.Config{}, [][]float64{{0.4, -0.9, 2.0}})
	// Nesterov, μ = 0.5: step 1 buf = g, d = 1.5·g; step 2 buf = 0.5·g1 + g2, d = g2 + 0.5·buf.
	check(t, "sgd", optimizers.Config{Momentum: 0.5, Nesterov: true}, [][]float64{
		{0.5 - 0.1*0.15, -1 + 0.1*0.3, 2},
		{0.5 - 0.1*0.15 - 0.05*(-0.3+0.5*(0.05-0.3)), -1 + 0.1*0.3 - 0.05*(0.05+0.5*(-0.1+0.05)), 2 - 0.05*(0.4+0.5*0.4)},
	})
	// steepest q = 1.5: d = sign(g)·√|g|.
	check(t, "steepest", optimizers.Config{Q: 1.5}, [][]float64{{0.5 - 0.1*math.Sqrt(0.1), -1 + 0.1*math.Sqrt(0.2), 2}})
	// decoupled vs coupled weight decay with sign descent, wd = 0.5, step 1:
	// decoupled: x − lr·(sign(g) + wd·x); coupled: x − lr·sign(g + wd·x) with g + wd·x = (0.35, −0.7, 1).
	check(t, "sign", optimizers.Config{WeightDecay: 0.5, WDMode: "decoupled"}, [][]float64{{0.5 - 0.1*(1+0.25), -1 - 0.1*(-1-0.5), 2 - 0.1*(0+1)}})
	check(t, "sign", optimizers.Config{WeightDecay: 0.5}, [][]float64{{0.4, -0.9, 1.9}})
}

// steepest must give sign descent exactly at q=1 and gradient descent at q=2.
func TestSteepestEndpoints(t *testing.T) {
	for _, c := range []struct {
		q    float64
		same string
	}{{1, "sign"}, {2, "sgd"}} {
		st, err := optimizers.New("steepest", optimizers.Config{Q: c.q})
		if err != nil {
			t.Fatal(err)
		}
		other, err := optimizers.New(c.same, optimizers.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if st.Q() != other.Q() {
			t.Errorf("steepest q=%g has Q() %g, %s has %g", c.q, st.Q(), c.same, other.Q())
		}
		a, b := runOpt(t, st, x0, grads, lrs), runOpt(t, other, x0, grads, lrs)
		for s := range a {
			for i := range a[s] {
				if math.Abs(a[s][i]-b[s][i]) > 1e-7 {
					t.Errorf("q=%g step %d x[%d]: steepest %.9g, %s %.9g", c.q, s+1, i, a[s][i], c.same, b[s][i])
				}
			}
		}
	}
}

// Differentiating through steepest's update at g = 0 must not produce NaN or Inf (|g|^(q−1) is not
// differentiable at 0 for q < 2).
func TestSteepestNoNaNAtZero(t *testing.T) {
	for _, q := range []float64{1, 1.5} {
		opt, err := optimizers.New("steepest", optimizers.Config{Q: q})
		if err != nil {
			t.Fatal(err)
		}
		exec, err := NewExec(newBackend(t), func(x, g, step, lr *Node) (*Node, *Node) {
			p, _ := opt.Update(x, g, nil, step, lr)
			return p, Gradient(ReduceAllSum(p), g)[0]
		})
		if err != nil {
			t.Fatal(err)
		}
		outs, err := exec.Call(tensors.FromFlatDataAndDimensions([]float32{1, 2, 3}, 3),
			tensors.FromFlatDataAndDimensions([]float32{0, 0.25, -0.25}, 3), float32(1), float32(0.5))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := tensors.CopyFlatData[float32](outs[0])
		dg, _ := tensors.CopyFlatData[float32](outs[1])
		if p[0] != 1 {
			t.Errorf("q=%g: zero gradient moved x to %g", q, p[0])
		}
		for i, v := range append(p, dg...) {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Errorf("q=%g: output %d is %g", q, i, v)
			}
		}
	}
}

func TestNumSlotsAndQ(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   optimizers.Config
		slots int
		q     float64
	}{
		{"sgd", optimizers.Config{}, 0, 2},
		{"sgd", optimizers.Config{Momentum: 0.9}, 1, 2},
		{"adam", optimizers.Config{}, 2, 1},
		{"adamw", optimizers.Config{}, 2, 1},
		{"adam-l2", optimizers.Config{}, 2, 1},
		{"sign", optimizers.Config{}, 0, 1},
		{"signum", optimizers.Config{}, 1, 1},
		{"lion", optimizers.Config{}, 1, 1},
		{"steepest", optimizers.Config{Q: 1.25}, 0, 1.25},
	} {
		opt, err := optimizers.New(c.name, c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if opt.NumSlots() != c.slots || opt.Q() != c.q {
			t.Errorf("%s %+v: NumSlots %d, Q %g; want %d, %g", c.name, c.cfg, opt.NumSlots(), opt.Q(), c.slots, c.q)
		}
	}
}

// Float64 parameters with float32 step and lr (what saddle feeds) must build and match the float32 result.
func TestFloat64Params(t *testing.T) {
	for _, name := range []string{"adamw", "lion", "steepest"} {
		opt, err := optimizers.New(name, optimizers.Config{Q: map[string]float64{"steepest": 1.5}[name]})
		if err != nil {
			t.Fatal(err)
		}
		n := opt.NumSlots()
		exec, err := NewExec(newBackend(t), func(in []*Node) []*Node {
			x := in[0]
			slots := make([]*Node, n)
			for i := range slots {
				slots[i] = ZerosLike(x)
			}
			p, _ := opt.Update(x, in[1], slots, in[2], in[3])
			return []*Node{p}
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Call(tensors.FromFlatDataAndDimensions(x0, 3), tensors.FromFlatDataAndDimensions(grads[0], 3), float32(1), float32(lrs[0]))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := tensors.CopyFlatData[float64](out[0])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := runOpt(t, opt, x0, grads[:1], lrs)[0]
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-6 {
				t.Errorf("%s float64 x[%d] = %.9g, float32 gives %.9g", name, i, got[i], want[i])
			}
		}
	}
}
