package theory

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"testing"

	"github.com/saddle-ml/saddle/internal/testbackend"
)

func testBackendRunner(t *testing.T, k, n, nz int) *runner {
	t.Helper()
	b := testbackend.Get(t)
	p, err := newProblem(7, k, n, nz)
	if err != nil {
		t.Fatal(err)
	}
	l0, g0 := p.lossGrad(make([]float64, k))
	o := Reduced()
	return &runner{ctx: context.Background(), b: b, prob: p, opts: &o, progress: io.Discard, l0: l0, g0: g0}
}

// The plain-Go loss gradient agrees with central finite differences.
func TestLossGradFiniteDifferences(t *testing.T) {
	p, err := newProblem(3, 20, 8, 2)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float64, p.k)
	for i := range x {
		x[i] = 0.1 * math.Sin(float64(i))
	}
	_, g := p.lossGrad(x)
	for i := range x {
		h := 1e-6
		xp := append([]float64(nil), x...)
		xm := append([]float64(nil), x...)
		xp[i] += h
		xm[i] -= h
		fp, _ := p.lossGrad(xp)
		fm, _ := p.lossGrad(xm)
		fd := (fp - fm) / (2 * h)
		if math.Abs(fd-g[i]) > 1e-7*(1+math.Abs(fd)) {
			t.Fatalf("∂f/∂x[%d]: analytic %g, finite difference %g", i, g[i], fd)
		}
	}
	if nz := 0; true {
		for _, v := range p.xStar {
			if v != 0 {
				nz++
				if math.Abs(v) < 0.5 || math.Abs(v) > 1.5 {
					t.Errorf("non-zero of x* %g outside ±[0.5, 1.5]", v)
				}
			}
		}
		if nz != 2 {
			t.Errorf("x* has %d non-zeros, want 2", nz)
		}
	}
}

// plainStep is an independent reference of one optimizer step on the factors (lane 0): the product-rule
// gradient of f(w₁⊙…⊙w_L) and the textbook update of each rule, written without the graph or the optimizers
// package. adamState holds m and v per factor.
func plainStep(p *problem, w [][]float64, rule string, q, lr float64, step int, adamM, adamV [][]float64) {
	k := p.k
	x := make([]float64, k)
	for j := range x {
		x[j] = 1
		for _, wi := range w {
			x[j] *= wi[j]
		}
	}
	_, g := p.lossGrad(x)
	grads := make([][]float64, len(w))
	for i := range w {
		grads[i] = make([]float64, k)
		for j := 0; j < k; j++ {
			prod := g[j]
			for i2, w2 := range w {
				if i2 != i {
					prod *= w2[j]
				}
			}
			grads[i][j] = prod
		}
	}
	for i := range w {
		for j := 0; j < k; j++ {
			gr := grads[i][j]
			var u float64
			switch rule {
			case "sgd":
				u = gr
			case "sign":
				u = float64(sgn(gr))
			case "steepest":
				u = float64(sgn(gr)) * math.Pow(math.Abs(gr), q-1)
			case "adam":
				adamM[i][j] = 0.9*adamM[i][j] + 0.1*gr
				adamV[i][j] = 0.999*adamV[i][j] + 0.001*gr*gr
				mh := adamM[i][j] / (1 - math.Pow(0.9, float64(step)))
				vh := adamV[i][j] / (1 - math.Pow(0.999, float64(step)))
				u = mh / (math.Sqrt(vh) + 1e-8)
			}
			w[i][j] -= lr * u
		}
	}
}

func sgn(v float64) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

// The graph (GoMLX autodiff + optimizers.Apply, several steps per chunk, several lanes) follows the plain-Go
// reference step for step.
func TestEngineMatchesPlainGo(t *testing.T) {
	r := testBackendRunner(t, 30, 12, 3)
	for _, tc := range []struct {
		rule string
		q    float64
		lr   float64
	}{{"sgd", 0, 0.05}, {"sign", 0, 0.01}, {"steepest", 1.5, 0.05}, {"adam", 0, 0.01}} {
		opt, _, err := newOptimizer(tc.rule, tc.q, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		const depth, steps = 3, 6
		lambdas := []float64{0.3, 0.7}
		e, err := newEngine(r.b, r.prob, opt, depth, len(lambdas), 3)
		if err != nil {
			t.Fatal(err)
		}
		// A generic start (w₁ ≠ 0) so that every factor moves from the first step.
		init := func(f, lane int) float64 { return lambdas[lane] * (1 + 0.25*float64(f)) }
		st := e.newState(init)
		if err := e.run(context.Background(), st, filled(len(lambdas), math.Inf(-1)), tc.lr, steps, false, nil); err != nil {
			t.Fatalf("%s: %v", tc.rule, err)
		}
		if st.step != steps {
			t.Fatalf("%s: %d steps done, want %d", tc.rule, st.step, steps)
		}
		for lane := range lambdas {
			k := r.prob.k
			w := make([][]float64, depth)
			m := make([][]float64, depth)
			v := make([][]float64, depth)
			for f := range w {
				w[f] = filled(k, init(f, lane))
				m[f], v[f] = make([]float64, k), make([]float64, k)
			}
			for s := 1; s <= steps; s++ {
				plainStep(r.prob, w, tc.rule, tc.q, tc.lr, s, m, v)
			}
			for f := range w {
				for j := 0; j < k; j++ {
					got, want := st.w[f][lane*k+j], w[f][j]
					if math.Abs(got-want) > 1e-12*(1+math.Abs(want)) {
						t.Fatalf("%s lane %d factor %d coordinate %d after %d steps: graph %.17g, plain Go %.17g", tc.rule, lane, f, j, steps, got, want)
					}
				}
			}
		}
	}
}

// The first step from w₁ = 0, wᵢ = λ moves x by exactly lr·|u(g·λ^(L−1))|·λ^(L−1): exponents 2(L−1) for GD,
// L−1 for sign descent and q(L−1) for steepest descent, to 1e-6.
func TestFirstStepExponents(t *testing.T) {
	r := testBackendRunner(t, 60, 20, 3)
	lambdas := logspace(-4, -1, 5)
	for _, tc := range []struct {
		rule  string
		q     float64
		depth int
		want  float64
	}{
		{"sgd", 0, 2, 2}, {"sgd", 0, 3, 4}, {"sgd", 0, 4, 6},
		{"sign", 0, 2, 1}, {"sign", 0, 3, 2},
		{"steepest", 1.75, 3, 3.5}, {"steepest", 1.5, 3, 3},
	} {
		opt, cfg, err := newOptimizer(tc.rule, tc.q, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		ex := Exponent{Depth: tc.depth}
		lr := 0.05
		if err := r.firstStep(&ex, opt, cfg, lambdas, lr); err != nil {
			t.Fatal(err)
		}
		if ex.FirstStepExponent == nil || math.Abs(*ex.FirstStepExponent-tc.want) > 1e-6 {
			t.Errorf("%s q=%g L=%d: first-step exponent %s, want %g", tc.rule, tc.q, tc.depth, fmtNum(ex.FirstStepExponent, 12), tc.want)
		}
		// Independent of firstUpdate: |Δx| = lr·‖|g|^(q−1)‖·λ^(q(L−1)) with q = 2, 1 or tc.q.
		q := map[string]float64{"sgd": 2, "sign": 1, "steepest": tc.q}[tc.rule]
		s := 0.0
		for _, g := range r.g0 {
			if g != 0 {
				s += math.Pow(math.Abs(g), 2*(q-1))
			}
		}
		for i, l := range lambdas {
			want := lr * math.Sqrt(s) * math.Pow(l, q*float64(tc.depth-1))
			if got := ex.FirstStepDelta[i]; math.Abs(got-want) > 1e-12*want {
				t.Errorf("%s q=%g L=%d λ=%g: |Δx| = %.17g, want %.17g", tc.rule, tc.q, tc.depth, l, got, want)
			}
		}
		if ex.FirstStepMaxRelErr == nil || *ex.FirstStepMaxRelErr > 1e-12 {
			t.Errorf("%s: Δx differs from the closed form by %s", tc.rule, fmtNum(ex.FirstStepMaxRelErr, 3))
		}
	}
}

// The balance law checked from the raw factors: D = |w₁|^q − |w₂|^q stays put without weight decay and shrinks
// by exp(−q·α·lr) per step with decoupled weight decay.
func TestBalanceLawFromFactors(t *testing.T) {
	r := testBackendRunner(t, 40, 15, 3)
	for _, tc := range []struct {
		rule  string
		q     float64
		alpha float64
		lr    float64
	}{{"sgd", 2, 0, 1e-3}, {"steepest", 1.5, 0, 1e-3}, {"sgd", 2, 0.5, 1e-3}, {"sign", 1, 2, 1e-4}} {
		mode := ""
		if tc.alpha > 0 {
			mode = "decoupled"
		}
		opt, _, err := newOptimizer(tc.rule, tc.q, tc.alpha, mode)
		if err != nil {
			t.Fatal(err)
		}
		e, err := newEngine(r.b, r.prob, opt, 2, 1, 50)
		if err != nil {
			t.Fatal(err)
		}
		st := e.newState(func(f, _ int) float64 { return 0.2 + 0.3*float64(f) }) // w₁ = 0.2, w₂ = 0.5
		d := func() []float64 {
			out := make([]float64, r.prob.k)
			for j := range out {
				out[j] = math.Pow(math.Abs(st.w[0][j]), tc.q) - math.Pow(math.Abs(st.w[1][j]), tc.q)
			}
			return out
		}
		d0 := d()
		const steps = 1500
		if err := e.run(context.Background(), st, []float64{math.Inf(-1)}, tc.lr, steps, false, nil); err != nil {
			t.Fatal(err)
		}
		d1 := d()
		if tc.alpha == 0 {
			diff := make([]float64, len(d0))
			for j := range diff {
				diff[j] = d1[j] - d0[j]
			}
			if rel := norm(diff) / norm(d0); rel > 1e-3 {
				t.Errorf("%s q=%g: balance drift %.3g after %d steps, want < 1e-3", tc.rule, tc.q, rel, steps)
			}
			continue
		}
		rate := -math.Log(norm(d1)/norm(d0)) / steps
		want := tc.q * tc.alpha * tc.lr
		if math.Abs(rate-want) > 0.05*want {
			t.Errorf("%s q=%g α=%g: D decays at %.5g per step, want q·α·lr = %.5g (±5%%)", tc.rule, tc.q, tc.alpha, rate, want)
		}
	}
}

// The escape time in units of lr (steps·lr) no longer depends on lr at the learning rates the presets use: the
// measured laws are those of the flow, not of the discretization.
func TestEscapeTimeIndependentOfLR(t *testing.T) {
	r := testBackendRunner(t, 100, 40, 3)
	for _, s := range []Sweep{
		{Optimizer: "sgd", Depth: 3, Lambdas: []float64{0.01, 0.03}},
		{Optimizer: "sgd", Depth: 4, Lambdas: []float64{0.1, 0.18}},
		{Optimizer: "sign", Depth: 2, Lambdas: []float64{1e-5, 1e-3}},
	} {
		lr := r.opts.lrFor(s, map[string]float64{"sgd": 2, "sign": 1}[s.Optimizer])
		var times [2][]float64
		for i, l := range []float64{lr, lr / 2} {
			s.LR = l
			ex, err := r.sweep(s)
			if err != nil {
				t.Fatal(err)
			}
			times[i] = ex.Time
		}
		for j := range times[0] {
			rel := math.Abs(times[0][j]-times[1][j]) / times[1][j]
			t.Logf("%s L=%d λ=%g: steps·lr %g (lr=%g) vs %g (lr=%g): %.2g%%", s.Optimizer, s.Depth, s.Lambdas[j], times[0][j], lr, times[1][j], lr/2, 100*rel)
			if rel > 0.02 || times[0][j] == 0 {
				t.Errorf("%s L=%d λ=%g: steps·lr %g at lr=%g but %g at lr=%g", s.Optimizer, s.Depth, s.Lambdas[j], times[0][j], lr, times[1][j], lr/2)
			}
		}
	}
}

// A λ that does not escape within MaxSteps is reported as −1, left out of the fit and fails the verdict.
func TestSweepCap(t *testing.T) {
	r := testBackendRunner(t, 40, 15, 3)
	ex, err := r.sweep(Sweep{Optimizer: "sgd", Depth: 4, LR: 0.1, Lambdas: []float64{0.001, 0.1, 0.15, 0.2}, MaxSteps: 3000})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Steps[0] != -1 || ex.Escaped != 3 || ex.OK {
		t.Fatalf("steps %v, escaped %d, ok %v: want the first λ capped, 3 escaped, not ok", ex.Steps, ex.Escaped, ex.OK)
	}
	for i, s := range ex.Steps[1:] {
		if s <= 0 || s > 3000 {
			t.Errorf("λ=%g: steps %d, want in (0, 3000]", ex.Lambdas[i+1], s)
		}
	}
	if _, err := json.Marshal(ex); err != nil {
		t.Fatal(err)
	}
}
