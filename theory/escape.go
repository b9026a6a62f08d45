package theory

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/gomlx/compute"

	"github.com/saddle-ml/saddle/optimizers"
)

// runner holds what every experiment shares.
type runner struct {
	ctx      context.Context
	b        compute.Backend
	prob     *problem
	opts     *Options
	progress io.Writer
	l0       float64   // loss at x = 0 (every escape init starts there)
	g0       []float64 // ∇f(0) = −Zᵀy/n
}

// Regimes of the escape time as λ → 0.
const (
	RegimePower   = "power"   // q(L−1) > L: steps ∝ λ^(−(q(L−1)−L))
	RegimeLog     = "log"     // q(L−1) = L: steps ≈ a + b·ln(1/λ)
	RegimeBounded = "bounded" // q(L−1) < L: steps stay bounded
)

// Prediction is the paper's escape law for geometry q at depth L, as λ → 0. This is the one place the formula
// lives: the diagonal-model report and the fine-tuning sweeps both print it.
type Prediction struct {
	Regime string  // RegimePower, RegimeLog or RegimeBounded
	Slope  float64 // log–log slope of escape steps against λ: −(q(L−1)−L), 0 when bounded, NaN in the log regime
}

// Predict applies the law: escape steps grow like λ^(−(q(L−1)−L)) when q(L−1) > L, like ln(1/λ) at equality,
// and stay bounded below it.
func Predict(q float64, depth int) Prediction {
	excess := q*float64(depth-1) - float64(depth)
	switch {
	case math.Abs(excess) <= 1e-9:
		return Prediction{Regime: RegimeLog, Slope: math.NaN()}
	case excess > 0:
		return Prediction{Regime: RegimePower, Slope: -excess}
	default:
		return Prediction{Regime: RegimeBounded, Slope: 0}
	}
}

// String says the prediction in words: "power law, slope -1", "log(1/λ)", "bounded (slope 0)".
func (p Prediction) String() string {
	switch p.Regime {
	case RegimeLog:
		return "log(1/λ)"
	case RegimePower:
		return fmt.Sprintf("power law, slope %.3g", p.Slope)
	}
	return "bounded (slope 0)"
}

// escapeInit is w₁ = 0, wᵢ = λ (i ≥ 2), one λ per lane.
func escapeInit(lambdas []float64) func(factor, lane int) float64 {
	return func(factor, lane int) float64 {
		if factor == 0 {
			return 0
		}
		return lambdas[lane]
	}
}

func filled(n int, v float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// sweep measures the first step and the escape steps over the sweep's λ grid, all λ as lanes of one graph.
func (r *runner) sweep(s Sweep) (Exponent, error) {
	opt, cfg, err := newOptimizer(s.Optimizer, s.Q, 0, "")
	if err != nil {
		return Exponent{}, fmt.Errorf("theory: sweep %s L=%d: %w", s.Optimizer, s.Depth, err)
	}
	q := opt.Q()
	lr := r.opts.lrFor(s, q)
	lambdas := s.Lambdas
	if lambdas == nil {
		lambdas = r.opts.Lambdas
	}
	maxSteps := s.MaxSteps
	if maxSteps == 0 {
		maxSteps = r.opts.MaxSteps
	}
	pred := Predict(q, s.Depth)
	regime, predicted := pred.Regime, pred.Slope
	ex := Exponent{
		Optimizer: opt.Name(), Q: q, Depth: s.Depth, M: q * float64(s.Depth-1) / float64(s.Depth),
		Regime: regime, Predicted: num(predicted), LR: lr, Lambdas: lambdas, MaxSteps: maxSteps,
		PredictedFirstStepExponent: q * float64(s.Depth-1),
	}
	label := fmt.Sprintf("%s L=%d (q=%g, lr=%g)", opt.Name(), s.Depth, q, lr)
	fmt.Fprintf(r.progress, "escape %s: %d values of λ in [%.3g, %.3g], regime %s\n", label, len(lambdas),
		minOf(lambdas), maxOf(lambdas), regime)

	if err := r.firstStep(&ex, opt, cfg, lambdas, lr); err != nil {
		return ex, err
	}

	start := time.Now()
	e, err := newEngine(r.b, r.prob, opt, s.Depth, len(lambdas), r.opts.Chunk)
	if err != nil {
		return ex, err
	}
	defer e.close()
	st := e.newState(escapeInit(lambdas))
	thr := filled(len(lambdas), r.opts.EscapeFraction*r.l0)
	last := time.Now()
	err = e.run(r.ctx, st, thr, lr, maxSteps, true, func(st *laneState, _ []float64) error {
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			done := 0
			for _, v := range st.escape {
				if v >= 0 {
					done++
				}
			}
			fmt.Fprintf(r.progress, "  step %d of at most %d: %d/%d values of λ escaped\n", st.step, maxSteps, done, len(lambdas))
		}
		return nil
	})
	if err != nil {
		return ex, fmt.Errorf("theory: escape sweep %s: %w", label, err)
	}
	var fitL, fitSteps, fitLogInv []float64
	for b, v := range st.escape {
		steps := int(v)
		if v < 0 || steps > maxSteps { // the last chunk may run past maxSteps
			steps = -1
		}
		ex.Steps = append(ex.Steps, steps)
		ex.Time = append(ex.Time, float64(max(steps, 0))*lr)
		if steps > 0 {
			fitL = append(fitL, math.Log(lambdas[b]))
			fitSteps = append(fitSteps, float64(steps))
			fitLogInv = append(fitLogInv, -math.Log(lambdas[b]))
		}
	}
	ex.Escaped = len(fitSteps)
	ll := fitLine(fitL, logs(fitSteps))
	ex.Slope, ex.R2, ex.Intercept = num(ll.Slope), num(ll.R2), num(ll.Intercept)
	lin := fitLine(fitLogInv, fitSteps)
	ex.LogSlope, ex.LogR2, ex.LogIntercept = num(lin.Slope), num(lin.R2), num(lin.Intercept)
	if regime == RegimeLog {
		// Near the saddle x grows like exp(L·|g|^(q−1)·t) once the factors are balanced, starting from ~λ^L, so
		// t ≈ ln(1/λ)/|g|^(q−1) for the coordinate with the largest gradient; in steps that is divided by lr.
		ex.PredictedLogSlope = num(1 / (lr * math.Pow(maxAbs(r.g0), q-1)))
	}
	ex.OK = ex.verdict()
	fmt.Fprintf(r.progress, "  %s in %.1fs: steps %v, %s\n", label, time.Since(start).Seconds(), ex.Steps, ex.summary())
	return ex, nil
}

// verdict applies the acceptance criteria of the issue to one sweep.
func (ex *Exponent) verdict() bool {
	if ex.Escaped < len(ex.Lambdas) {
		return false
	}
	switch ex.Regime {
	case RegimeLog:
		return ex.LogR2 != nil && *ex.LogR2 >= MinLogR2
	default:
		return ex.Slope != nil && ex.Predicted != nil && math.Abs(*ex.Slope-*ex.Predicted) <= SlopeTolerance
	}
}

func (ex *Exponent) summary() string {
	switch ex.Regime {
	case RegimeLog:
		return fmt.Sprintf("steps vs ln(1/λ): slope %s (predicted %s), R² %s", fmtNum(ex.LogSlope, 3), fmtNum(ex.PredictedLogSlope, 3), fmtNum(ex.LogR2, 4))
	default:
		return fmt.Sprintf("log–log slope %s (predicted %s)", fmtNum(ex.Slope, 3), fmtNum(ex.Predicted, 3))
	}
}

// firstStep runs one step from the escape init for every λ and compares |Δx| with the closed form
// x₁ = −lr·u(g·λ^(L−1))·λ^(L−1), where u is the rule's update for a gradient (g for GD, sign(g) for sign descent,
// sign(g)|g|^(q−1) for steepest, g/(|g|+eps) for Adam's first step) and g = ∇f(0) computed in plain Go.
func (r *runner) firstStep(ex *Exponent, opt optimizers.Optimizer, cfg optimizers.Config, lambdas []float64, lr float64) error {
	e, err := newEngine(r.b, r.prob, opt, ex.Depth, len(lambdas), 1)
	if err != nil {
		return err
	}
	defer e.close()
	st := e.newState(escapeInit(lambdas))
	if _, err := e.runChunk(st, filled(len(lambdas), math.Inf(-1)), lr); err != nil {
		return fmt.Errorf("theory: first step of %s L=%d: %w", opt.Name(), ex.Depth, err)
	}
	k := r.prob.k
	dx := make([]float64, len(lambdas))
	maxRel := 0.0
	haveClosedForm := true
	for b, l := range lambdas {
		x := st.x(b, k)
		dx[b] = norm(x) // x₀ = 0 exactly, since w₁ = 0
		pl := math.Pow(l, float64(ex.Depth-1))
		diff, ref := 0.0, 0.0
		for j, g := range r.g0 {
			u, ok := firstUpdate(opt.Name(), opt.Q(), cfg.Eps, g*pl)
			if !ok {
				haveClosedForm = false
				break
			}
			want := -lr * u * pl
			diff += (x[j] - want) * (x[j] - want)
			ref += want * want
		}
		if haveClosedForm && ref > 0 {
			maxRel = math.Max(maxRel, math.Sqrt(diff/ref))
		}
	}
	ex.FirstStepDelta = dx
	f := fitLine(logs(lambdas), logs(dx))
	ex.FirstStepExponent = num(f.Slope)
	ex.FirstStepMaxResidual = num(f.MaxResidual)
	if haveClosedForm {
		ex.FirstStepMaxRelErr = num(maxRel)
	}
	return nil
}

// firstUpdate is the first update u (x ← x − lr·u) of a rule with zero state for gradient g, in plain Go. The
// Adam family's first step is g/(|g| + ε) (m̂ = g and √v̂ = |g|); gradient descent, sign descent, steepest descent
// and the momentum sign rules (whose first momentum has the sign of g) start as steepest descent for their q,
// sign(g)·|g|^(q−1). ok is false for rules this does not know.
func firstUpdate(name string, q, eps, g float64) (float64, bool) {
	switch {
	case name == "adam" || name == "adamw" || name == "adam-l2":
		return g / (math.Abs(g) + eps), true
	case name == "sgd" || name == "sign" || name == "signum" || name == "lion" || (optimizers.Spec{Name: name}).TakesQ():
		if g == 0 {
			return 0, true
		}
		return math.Copysign(math.Pow(math.Abs(g), q-1), g), true
	}
	return 0, false
}

func minOf(v []float64) float64 {
	m := math.Inf(1)
	for _, x := range v {
		m = math.Min(m, x)
	}
	return m
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}
