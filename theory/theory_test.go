package theory

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	reducedOnce sync.Once
	reducedRep  *Report
	reducedErr  error
	reducedTime time.Duration
)

// reduced runs the Reduced preset once for all tests of this file.
func reduced(t *testing.T) *Report {
	t.Helper()
	reducedOnce.Do(func() {
		start := time.Now()
		var progress strings.Builder
		reducedRep, reducedErr = Compute(context.Background(), Reduced(), &progress)
		reducedTime = time.Since(start)
		if testing.Verbose() {
			os.Stdout.WriteString(progress.String())
		}
	})
	if reducedErr != nil {
		t.Fatal(reducedErr)
	}
	return reducedRep
}

func findSweep(t *testing.T, rep *Report, opt string, q float64, depth int) Exponent {
	t.Helper()
	for _, e := range rep.Exponents {
		if e.Optimizer == opt && e.Depth == depth && (opt != "steepest" || e.Q == q) {
			return e
		}
	}
	t.Fatalf("no sweep %s q=%g L=%d in the report", opt, q, depth)
	return Exponent{}
}

// ownFit is the test's own least-squares fit, so that the checks do not rest on the code under test.
func ownFit(x, y []float64) (slope, r2 float64) {
	n := float64(len(x))
	var sx, sy, sxx, sxy, syy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
	}
	mx, my := sx/n, sy/n
	for i := range x {
		sxx += (x[i] - mx) * (x[i] - mx)
		sxy += (x[i] - mx) * (y[i] - my)
		syy += (y[i] - my) * (y[i] - my)
	}
	slope = sxy / sxx
	res := 0.0
	for i := range x {
		d := y[i] - my - slope*(x[i]-mx)
		res += d * d
	}
	return slope, 1 - res/syy
}

// Escape steps against λ follow the predicted laws: power laws λ^(−(q(L−1)−L)) for GD at L = 3, 4 and steepest
// q = 1.75 at L = 3; bounded for sign descent; logarithmic for GD at L = 2 and steepest q = 1.5 at L = 3.
func TestEscapeLaws(t *testing.T) {
	rep := reduced(t)
	for _, tc := range []struct {
		opt   string
		q     float64
		depth int
		slope float64 // predicted log–log slope; NaN: logarithmic
	}{
		{"sgd", 2, 3, -1}, {"sgd", 2, 4, -2}, {"steepest", 1.75, 3, -0.5},
		{"sign", 1, 2, 0}, {"sign", 1, 3, 0},
		{"sgd", 2, 2, math.NaN()}, {"steepest", 1.5, 3, math.NaN()},
	} {
		e := findSweep(t, rep, tc.opt, tc.q, tc.depth)
		if len(e.Lambdas) < 5 {
			t.Errorf("%s L=%d: %d values of λ, want ≥ 5", tc.opt, tc.depth, len(e.Lambdas))
		}
		if span := math.Log10(maxOf(e.Lambdas) / minOf(e.Lambdas)); span < 1-1e-9 {
			t.Errorf("%s L=%d: λ spans %.2f decades, want ≥ 1 in the reduced grid", tc.opt, tc.depth, span)
		}
		var lx, ly, inv, st []float64
		for i, s := range e.Steps {
			if s <= 0 {
				t.Fatalf("%s L=%d: λ=%g did not escape within %d steps", tc.opt, tc.depth, e.Lambdas[i], e.MaxSteps)
			}
			lx = append(lx, math.Log(e.Lambdas[i]))
			ly = append(ly, math.Log(float64(s)))
			inv = append(inv, math.Log(1/e.Lambdas[i]))
			st = append(st, float64(s))
		}
		if math.IsNaN(tc.slope) {
			b, r2 := ownFit(inv, st)
			if r2 < 0.95 || b <= 0 {
				t.Errorf("%s q=%g L=%d: steps against ln(1/λ): slope %.3g, R² %.4f; want a positive slope with R² ≥ 0.95 (steps %v)", tc.opt, tc.q, tc.depth, b, r2, e.Steps)
			}
			if e.Regime != RegimeLog {
				t.Errorf("%s q=%g L=%d: regime %q, want log", tc.opt, tc.q, tc.depth, e.Regime)
			}
			continue
		}
		slope, _ := ownFit(lx, ly)
		if math.Abs(slope-tc.slope) > 0.15 {
			t.Errorf("%s q=%g L=%d: log–log slope %.3f, want %g ± 0.15 (λ %v, steps %v)", tc.opt, tc.q, tc.depth, slope, tc.slope, e.Lambdas, e.Steps)
		}
		if e.Slope == nil || math.Abs(*e.Slope-slope) > 1e-9 {
			t.Errorf("%s L=%d: reported slope %s, recomputed %.6f", tc.opt, tc.depth, fmtNum(e.Slope, 6), slope)
		}
		if e.Predicted == nil || *e.Predicted != tc.slope {
			t.Errorf("%s L=%d: reported prediction %s, want %g", tc.opt, tc.depth, fmtNum(e.Predicted, 6), tc.slope)
		}
		if !e.OK {
			t.Errorf("%s L=%d: verdict not ok", tc.opt, tc.depth)
		}
	}
	if reducedTime > 0 {
		t.Logf("reduced run took %v", reducedTime)
	}
}

func TestFirstStepExponentsInReport(t *testing.T) {
	rep := reduced(t)
	for _, e := range rep.Exponents {
		want := map[string]float64{"sgd": 2, "sign": 1, "steepest": e.Q}[e.Optimizer] * float64(e.Depth-1)
		if e.FirstStepExponent == nil || math.Abs(*e.FirstStepExponent-want) > 1e-6 {
			t.Errorf("%s q=%g L=%d: first-step exponent %s, want %g", e.Optimizer, e.Q, e.Depth, fmtNum(e.FirstStepExponent, 12), want)
		}
	}
}

func TestBalanceInReport(t *testing.T) {
	rep := reduced(t)
	var drift, decay int
	for _, b := range rep.Balance {
		if len(b.Trace) < 10 || len(b.Trace) != len(b.TraceSteps) {
			t.Fatalf("%s: trace of %d points for %d steps", b.Optimizer, len(b.Trace), len(b.TraceSteps))
		}
		if b.WeightDecay == 0 {
			drift++
			m := 0.0
			for _, v := range b.Trace {
				m = math.Max(m, v)
			}
			if m >= 1e-3 || b.MaxRelDrift == nil || *b.MaxRelDrift != m {
				t.Errorf("%s q=%g: max relative drift %.3g (reported %s), want < 1e-3", b.Optimizer, b.Q, m, fmtNum(b.MaxRelDrift, 3))
			}
			continue
		}
		decay++
		var xs, ys []float64
		for i, v := range b.Trace {
			xs = append(xs, float64(b.TraceSteps[i]))
			ys = append(ys, math.Log(v))
		}
		slope, r2 := ownFit(xs, ys)
		want := b.Q * b.WeightDecay * b.LR
		if math.Abs(-slope-want) > 0.05*want || r2 < 0.999 {
			t.Errorf("%s q=%g α=%g: decay rate %.5g per step (R² %.5f), want q·α·lr = %.5g ± 5 %%", b.Optimizer, b.Q, b.WeightDecay, -slope, r2, want)
		}
	}
	if drift == 0 || decay == 0 {
		t.Fatalf("want runs with and without weight decay, got %d and %d", drift, decay)
	}
}

func TestWeightDecayTable(t *testing.T) {
	rep := reduced(t)
	rows := map[string]WeightDecayRow{}
	for _, w := range rep.WeightDecay {
		rows[w.Optimizer+"/"+w.Mode+"/"+string(rune('0'+w.Depth))] = w
		if w.Sparsity < 0 || w.Sparsity > 1 || math.IsNaN(w.Error) {
			t.Errorf("bad row %+v", w)
		}
	}
	if len(rep.WeightDecay) != 2*2*3 {
		t.Fatalf("%d rows, want q ∈ {1,2} × 2 depths × 3 modes", len(rep.WeightDecay))
	}
	for _, d := range []string{"2", "3"} {
		c, dc := rows["sgd/coupled/"+d], rows["sgd/decoupled/"+d]
		// For GD, coupled and decoupled decay are the same rule: x ← x − lr·(g + α·x).
		if math.Abs(c.Error-dc.Error) > 1e-9 || c.Sparsity != dc.Sparsity {
			t.Errorf("GD L=%s: coupled (%.6g, %.3f) and decoupled (%.6g, %.3f) should match", d, c.Error, c.Sparsity, dc.Error, dc.Sparsity)
		}
	}
	// Sign descent at L = 2: coupled decay is an L1 penalty (sparse), decoupled decay an L_{3/2} one (dense).
	c, dc := rows["sign/coupled/2"], rows["sign/decoupled/2"]
	if c.Sparsity <= dc.Sparsity {
		t.Errorf("sign L=2: coupled sparsity %.3f should exceed decoupled %.3f", c.Sparsity, dc.Sparsity)
	}
	if *dc.PredictedPenalty != 1.5 || *c.PredictedPenalty != 1 {
		t.Errorf("sign L=2: predicted penalties %g (decoupled), %g (coupled); want 1.5 and 1", *dc.PredictedPenalty, *c.PredictedPenalty)
	}
}

func TestPredictedPenalty(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		q     float64
		depth int
		want  float64
	}{
		{"decoupled", 1, 2, 1.5}, {"decoupled", 1, 3, 4.0 / 3}, {"decoupled", 1, 5, 1.2},
		{"decoupled", 2, 2, 1}, {"decoupled", 2, 3, 2.0 / 3}, {"coupled", 1, 5, 0.4}, {"coupled", 2, 2, 1},
	} {
		if got := PredictedPenalty(tc.mode, tc.q, tc.depth); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("PredictedPenalty(%s, q=%g, L=%d) = %g, want %g", tc.mode, tc.q, tc.depth, got, tc.want)
		}
	}
	if !math.IsNaN(PredictedPenalty("none", 1, 2)) {
		t.Error("no weight decay has no penalty")
	}
}

func TestRegimes(t *testing.T) {
	for _, tc := range []struct {
		q      float64
		depth  int
		regime string
		slope  float64
	}{{2, 2, RegimeLog, 0}, {2, 3, RegimePower, -1}, {2, 4, RegimePower, -2}, {1, 2, RegimeBounded, 0}, {1, 5, RegimeBounded, 0},
		{1.75, 3, RegimePower, -0.5}, {1.5, 3, RegimeLog, 0}, {1.5, 2, RegimeBounded, 0}} {
		p := Predict(tc.q, tc.depth)
		r, s := p.Regime, p.Slope
		if r != tc.regime || (r != RegimeLog && math.Abs(s-tc.slope) > 1e-12) {
			t.Errorf("q=%g L=%d: %s %g, want %s %g", tc.q, tc.depth, r, s, tc.regime, tc.slope)
		}
	}
}

// The written report: valid JSON with the documented keys, Markdown tables and the plots.
func TestWriteReport(t *testing.T) {
	rep := *reduced(t)
	rep.Options.Plots = true
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "theory.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("theory.json: %v", err)
	}
	exps, _ := doc["exponents"].([]any)
	if len(exps) != len(rep.Exponents) || doc["balance"] == nil || doc["weight_decay"] == nil {
		t.Fatalf("theory.json lacks exponents/balance/weight_decay: %.300s", data)
	}
	for _, key := range []string{"optimizer", "q", "depth", "slope", "predicted", "r2", "regime", "lambdas", "steps", "first_step_exponent"} {
		if _, ok := exps[0].(map[string]any)[key]; !ok {
			t.Errorf("exponents[0] lacks %q", key)
		}
	}
	md, err := os.ReadFile(filepath.Join(dir, "theory.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"## Escape steps against λ", "## Balance law", "## Coupled against decoupled", "| sgd | 2 | 4 |", "escape_sgd_L4.png"} {
		if !strings.Contains(string(md), s) {
			t.Errorf("theory.md lacks %q", s)
		}
	}
	for _, f := range []string{"escape_sgd_L3", "escape_sign_L2", "escape_overview", "escape_log_regime", "balance_drift", "balance_decay"} {
		for _, ext := range []string{".png", ".svg"} {
			if st, err := os.Stat(filepath.Join(dir, f+ext)); err != nil || st.Size() < 1000 {
				t.Errorf("%s%s: %v", f, ext, err)
			}
		}
	}
}

func TestValidateRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(o *Options)
		want string
	}{
		{"k", func(o *Options) { o.K = 0 }, "K=0"},
		{"lr", func(o *Options) { o.LR = -1 }, "LR"},
		{"lambda", func(o *Options) { o.Sweeps[0].Lambdas = []float64{1e-3, -1, 1e-2} }, "λ[1]"},
		{"few lambdas", func(o *Options) { o.Sweeps[1].Lambdas = []float64{1e-3, 1e-2} }, "at least 3"},
		{"depth", func(o *Options) { o.Sweeps[0].Depth = 1 }, "depth must be ≥ 2"},
		{"optimizer", func(o *Options) { o.Sweeps[0].Optimizer = "nope" }, `unknown optimizer "nope"`},
		{"steepest q", func(o *Options) { o.Sweeps[0] = Sweep{Optimizer: "steepest", Depth: 3} }, "set q"},
		{"fraction", func(o *Options) { o.EscapeFraction = 1 }, "EscapeFraction"},
		{"balance", func(o *Options) { o.Balance[0].LR = 0 }, "balance run 0"},
		{"wd q", func(o *Options) { o.WDQs = []float64{3} }, "weight decay q"},
	} {
		o := Reduced()
		tc.edit(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", tc.name, err, tc.want)
		}
		if _, err := Run(context.Background(), o, t.TempDir(), nil); err == nil {
			t.Errorf("%s: Run accepted bad options", tc.name)
		}
	}
	def, red := DefaultOptions(), Reduced()
	if err := def.Validate(); err != nil {
		t.Errorf("DefaultOptions: %v", err)
	}
	if err := red.Validate(); err != nil {
		t.Errorf("Reduced: %v", err)
	}
}

// A small end-to-end Run: files written, progress reported, cancellation honoured.
func TestRunSmall(t *testing.T) {
	o := Reduced()
	o.Sweeps = []Sweep{{Optimizer: "sgd", Depth: 3, Lambdas: []float64{0.01, 0.02, 0.04}}}
	o.Balance = []BalanceRun{{Optimizer: "sign", Depth: 2, LR: 1e-3, Lambda: 0.5, Steps: 100}}
	o.WDDepths, o.WDQs = []int{2}, []float64{2}
	o.WDSteps = 100
	o.Plots = true
	dir := filepath.Join(t.TempDir(), "out")
	var progress strings.Builder
	rep, err := Run(context.Background(), o, dir, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Exponents) != 1 || len(rep.Balance) != 1 || len(rep.WeightDecay) != 3 || len(rep.Plots) == 0 {
		t.Fatalf("report has %d sweeps, %d balance runs, %d weight decay rows, %d plots", len(rep.Exponents), len(rep.Balance), len(rep.WeightDecay), len(rep.Plots))
	}
	for _, f := range append([]string{"theory.json", "theory.md"}, rep.Plots...) {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(progress.String(), "escape sgd L=3") {
		t.Errorf("progress lacks the sweep line:\n%s", progress.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, o, t.TempDir(), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled run: got %v, want context.Canceled", err)
	}
	if _, err := Run(context.Background(), o, "", nil); err == nil {
		t.Error("empty output directory accepted")
	}
}
