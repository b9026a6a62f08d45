// Package theory runs the saddle paper's diagonal model, x = w₁⊙…⊙w_L ∈ ℝᵏ fitted to a sparse regression
// y = Z·x*, with the same optimizer code (package optimizers) that fine-tunes LLMs, and checks the paper's
// predictions numerically:
//
//   - escape from the saddle: with the escape init w₁ = 0, wᵢ = λ (i ≥ 2), the number of steps until the loss
//     drops to 95 % of its initial value grows like λ^(−(q(L−1)−L)) when q(L−1) > L, like ln(1/λ) when
//     q(L−1) = L, and stays bounded when q(L−1) < L (q = 2 for gradient descent, 1 for sign descent);
//   - the first step moves x by exactly lr·|g|^(q−1)·λ^(q(L−1)) (an implementation check);
//   - the balance law: |wᵢ|^q − |wⱼ|^q is conserved without weight decay and decays like exp(−q·α·lr·t) with
//     decoupled weight decay α;
//   - coupled against decoupled weight decay: sparsity and error of the solution, next to the regularizer the
//     paper predicts (Σ|x|^(2−q(L−1)/L) for decoupled decay, Σ|x|^(2/L) for coupled decay).
//
// Run does everything and writes theory.json, theory.md and PNG/SVG plots.
package theory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/saddle-ml/saddle/backend"
	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/optimizers"
)

// Tolerances of the verdicts in the report (the acceptance criteria).
const (
	SlopeTolerance = 0.15 // |fitted − predicted| log–log slope, power-law and bounded regimes
	MinLogR2       = 0.95 // R² of steps against ln(1/λ), logarithmic regime
	DriftTolerance = 1e-3 // max relative drift of the balance quantity without weight decay
	RateTolerance  = 0.05 // relative error of the fitted decay rate with decoupled weight decay
	SparseBelow    = 1e-3 // |xᵢ| below this counts as zero for the sparsity of x
)

// Sweep measures escape steps against λ for one optimizer at one depth.
type Sweep struct {
	Optimizer string    `json:"optimizer"` // a registered optimizer: "sgd" (GD, q=2), "sign" (q=1), "steepest" (set Q), "adam", ...
	Q         float64   `json:"q"`         // steepest only
	Depth     int       `json:"depth"`     // L ≥ 2
	LR        float64   `json:"lr"`        // 0: Options.LR for q > 1, Options.SignLR for q = 1 rules
	Lambdas   []float64 `json:"lambdas"`   // nil: Options.Lambdas
	MaxSteps  int       `json:"max_steps"` // 0: Options.MaxSteps
}

// BalanceRun checks the balance law for one optimizer; Alpha > 0 adds decoupled weight decay.
type BalanceRun struct {
	Optimizer string  `json:"optimizer"`
	Q         float64 `json:"q"`
	Depth     int     `json:"depth"`
	LR        float64 `json:"lr"`
	Lambda    float64 `json:"lambda"` // escape init w₁ = 0, wᵢ = Lambda
	Steps     int     `json:"steps"`
	Alpha     float64 `json:"alpha"`
}

// Options configures Run. DefaultOptions is the full run; Reduced is a small, fast preset for tests and CI.
type Options struct {
	Seed     uint64 `json:"seed"`
	K        int    `json:"k"`         // dimension of x
	N        int    `json:"n"`         // number of observations
	NonZeros int    `json:"non_zeros"` // non-zeros of x*

	LR       float64   `json:"lr"`        // learning rate of the sweeps with q > 1 (fixed across λ)
	SignLR   float64   `json:"sign_lr"`   // learning rate of the sweeps with q = 1 (sign descent, Adam): its step is lr per factor
	Lambdas  []float64 `json:"lambdas"`   // λ grid of sweeps that give none
	MaxSteps int       `json:"max_steps"` // cap on the steps of one sweep; lanes that have not escaped by then are reported as −1

	EscapeFraction float64 `json:"escape_fraction"` // the saddle is left when loss ≤ EscapeFraction·initial loss (0.95)
	Chunk          int     `json:"chunk"`           // optimizer steps per graph execution (unrolled)
	Backend        string  `json:"backend"`         // backend configuration for backend.New; "" = $GOMLX_BACKEND or the Go backend

	Sweeps  []Sweep      `json:"sweeps"`
	Balance []BalanceRun `json:"balance"`

	// Coupled against decoupled weight decay: every depth × q × mode (none, coupled, decoupled).
	WDDepths    []int     `json:"wd_depths"`
	WDQs        []float64 `json:"wd_qs"` // the steepest-descent rule for each q (optimizers.ForQ): 1 sign, 2 sgd
	WDAlpha     float64   `json:"wd_alpha"`
	WDLR        float64   `json:"wd_lr"`         // for q > 1
	WDSignLR    float64   `json:"wd_sign_lr"`    // for q = 1
	WDSteps     int       `json:"wd_steps"`      // for q > 1
	WDSignSteps int       `json:"wd_sign_steps"` // for q = 1
	WDLambda    float64   `json:"wd_lambda"`     // escape init of the weight decay runs

	Plots bool `json:"plots"` // write PNG and SVG plots next to theory.json
}

// logspace returns n values from 10^a to 10^b, evenly spaced in log scale.
func logspace(a, b float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = math.Pow(10, a+(b-a)*float64(i)/float64(n-1))
	}
	return out
}

// DefaultOptions is the full run (k=300, n=100, 5 non-zeros). It takes about four minutes on two cores, most of it
// in gradient descent at depth 4, whose escape time grows like λ⁻² (225k steps at the smallest λ), and in steepest
// descent q=1.75, whose |g|^(q−1) is a math.Pow per element.
//
// Learning rates: 0.1 for q > 1, below the stability limit 2/λmax(ZᵀZ/n) ≈ 0.27 of plain least squares and
// small enough that steps·lr at escape no longer depends on lr (halving it changes steps·lr by < 0.5 %, see
// TestEscapeTimeIndependentOfLR); 2·10⁻⁴ for sign descent, whose step moves every factor by lr, so that escape
// takes hundreds of steps. The λ grids sit where each law is asymptotic: far below the scale at which the
// factors leave the saddle (and, for the power laws, small enough that the λ-independent part of the escape time
// is negligible).
func DefaultOptions() Options {
	return Options{
		Seed: 1, K: 300, N: 100, NonZeros: 5,
		LR: 0.1, SignLR: 2e-4,
		Lambdas:        logspace(-3, -1.5, 6),
		MaxSteps:       600_000,
		EscapeFraction: 0.95,
		Chunk:          50,
		Sweeps: []Sweep{
			{Optimizer: "sgd", Depth: 2, Lambdas: logspace(-5, -2, 7)},
			{Optimizer: "sgd", Depth: 3, Lambdas: logspace(-3, -1.5, 6)},
			{Optimizer: "sgd", Depth: 4, Lambdas: logspace(-2.25, -0.75, 6)},
			{Optimizer: "sign", Depth: 2, Lambdas: logspace(-5, -3, 5)},
			{Optimizer: "sign", Depth: 3, Lambdas: logspace(-5, -3, 5)},
			{Optimizer: "steepest", Q: 1.75, Depth: 3, Lambdas: logspace(-4.5, -3, 6)},
			{Optimizer: "steepest", Q: 1.5, Depth: 3, Lambdas: logspace(-6, -3, 7)},
			{Optimizer: "adam", Depth: 2, LR: 1e-3, Lambdas: logspace(-5, -3, 5)},
			{Optimizer: "adam", Depth: 3, LR: 1e-3, Lambdas: logspace(-5, -3, 5)},
		},
		Balance: []BalanceRun{
			{Optimizer: "sgd", Depth: 3, LR: 1e-3, Lambda: 0.5, Steps: 20_000},
			{Optimizer: "steepest", Q: 1.5, Depth: 3, LR: 1e-3, Lambda: 0.5, Steps: 20_000},
			{Optimizer: "sign", Depth: 3, LR: 1e-4, Lambda: 0.5, Steps: 20_000},
			{Optimizer: "sgd", Depth: 3, LR: 1e-3, Lambda: 0.5, Steps: 3_000, Alpha: 0.5},
			{Optimizer: "steepest", Q: 1.5, Depth: 3, LR: 1e-3, Lambda: 0.5, Steps: 4_000, Alpha: 0.5},
			{Optimizer: "sign", Depth: 3, LR: 1e-4, Lambda: 0.5, Steps: 15_000, Alpha: 2},
		},
		WDDepths: []int{2, 3, 5}, WDQs: []float64{1, 2},
		WDAlpha: 0.05, WDLR: 0.05, WDSignLR: 1e-3, WDSteps: 8_000, WDSignSteps: 20_000, WDLambda: 0.5,
		Plots: true,
	}
}

// Reduced is a small preset (k=100, n=40, 3 non-zeros, narrower λ grids, fewer steps) that still reaches each
// asymptotic regime; it runs in seconds and is what the tests use.
func Reduced() Options {
	o := DefaultOptions()
	o.K, o.N, o.NonZeros = 100, 40, 3
	o.MaxSteps = 200_000
	o.Lambdas = logspace(-2.5, -1.5, 5)
	o.Sweeps = []Sweep{
		{Optimizer: "sgd", Depth: 2, Lambdas: logspace(-5, -2, 5)},
		{Optimizer: "sgd", Depth: 3, Lambdas: logspace(-2.5, -1.5, 5)},
		{Optimizer: "sgd", Depth: 4, Lambdas: logspace(-1.75, -0.75, 5)},
		{Optimizer: "sign", Depth: 2, Lambdas: logspace(-5, -3, 5)},
		{Optimizer: "sign", Depth: 3, Lambdas: logspace(-5, -3, 5)},
		{Optimizer: "steepest", Q: 1.75, Depth: 3, Lambdas: logspace(-4, -2.5, 5)},
		{Optimizer: "steepest", Q: 1.5, Depth: 3, Lambdas: logspace(-6, -3, 5)},
	}
	o.Balance = []BalanceRun{
		{Optimizer: "sgd", Depth: 3, LR: 1e-3, Lambda: 0.5, Steps: 4_000},
		{Optimizer: "sign", Depth: 3, LR: 1e-4, Lambda: 0.5, Steps: 4_000},
		{Optimizer: "sgd", Depth: 3, LR: 1e-3, Lambda: 0.5, Steps: 2_000, Alpha: 0.5},
		{Optimizer: "sign", Depth: 3, LR: 1e-4, Lambda: 0.5, Steps: 5_000, Alpha: 3},
	}
	o.WDDepths = []int{2, 3}
	o.WDSteps, o.WDSignSteps = 2_000, 5_000
	o.WDSignLR = 2e-3
	o.Plots = false
	return o
}

// lrFor is the sweep's learning rate after defaults.
func (o *Options) lrFor(s Sweep, q float64) float64 {
	switch {
	case s.LR > 0:
		return s.LR
	case q == 1:
		return o.SignLR
	default:
		return o.LR
	}
}

// newOptimizer builds a registered optimizer (q is used only by rules that take it), with decoupled or coupled
// weight decay alpha if alpha > 0.
func newOptimizer(name string, q, alpha float64, mode string) (optimizers.Optimizer, optimizers.Config, error) {
	cfg := optimizers.Spec{Name: name, Q: q}.Apply(optimizers.Config{WeightDecay: alpha, WDMode: mode, Explicit: []string{"weight-decay"}})
	if alpha == 0 {
		cfg.WDMode = ""
	}
	opt, err := optimizers.New(name, cfg)
	if err != nil {
		return nil, cfg, err
	}
	resolved, err := optimizers.Resolve(name, cfg)
	return opt, resolved, err
}

func checkLambdas(where string, ls []float64) error {
	if len(ls) < 3 {
		return fmt.Errorf("%s: need at least 3 values of λ to fit a slope, got %d", where, len(ls))
	}
	for i, l := range ls {
		if !(l > 0) || math.IsInf(l, 0) {
			return fmt.Errorf("%s: λ[%d] = %g must be positive and finite", where, i, l)
		}
	}
	return nil
}

func positive(name string, v float64) error {
	if !(v > 0) || math.IsInf(v, 0) {
		return fmt.Errorf("%s must be positive and finite, got %g", name, v)
	}
	return nil
}

// Validate checks the options; Run calls it first.
func (o *Options) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("theory options: %w", err))
		}
	}
	if o.K < 1 || o.N < 1 || o.NonZeros < 1 || o.NonZeros > o.K {
		add(fmt.Errorf("need K ≥ 1, N ≥ 1 and 1 ≤ NonZeros ≤ K, got K=%d N=%d NonZeros=%d", o.K, o.N, o.NonZeros))
	}
	add(positive("LR", o.LR))
	add(positive("SignLR", o.SignLR))
	if o.MaxSteps < 1 {
		add(fmt.Errorf("MaxSteps must be ≥ 1, got %d", o.MaxSteps))
	}
	if !(o.EscapeFraction > 0 && o.EscapeFraction < 1) {
		add(fmt.Errorf("EscapeFraction must be in (0, 1), got %g", o.EscapeFraction))
	}
	if o.Chunk < 1 || o.Chunk > 1000 {
		add(fmt.Errorf("Chunk must be in [1, 1000], got %d", o.Chunk))
	}
	for i, s := range o.Sweeps {
		where := fmt.Sprintf("sweep %d (%s, L=%d)", i, s.Optimizer, s.Depth)
		if s.Depth < 2 {
			add(fmt.Errorf("%s: depth must be ≥ 2 (the escape init needs w₁ = 0 and another factor)", where))
		}
		if s.LR < 0 || s.MaxSteps < 0 {
			add(fmt.Errorf("%s: LR and MaxSteps must not be negative", where))
		}
		ls := s.Lambdas
		if ls == nil {
			ls = o.Lambdas
		}
		add(checkLambdas(where, ls))
		if _, _, err := newOptimizer(s.Optimizer, s.Q, 0, ""); err != nil {
			add(fmt.Errorf("%s: %w", where, err))
		}
	}
	for i, b := range o.Balance {
		where := fmt.Sprintf("balance run %d (%s, L=%d)", i, b.Optimizer, b.Depth)
		if b.Depth < 2 || b.Steps < 1 {
			add(fmt.Errorf("%s: need depth ≥ 2 and steps ≥ 1", where))
		}
		add(positive(where+": LR", b.LR))
		add(positive(where+": Lambda", b.Lambda))
		if b.Alpha < 0 {
			add(fmt.Errorf("%s: Alpha must not be negative", where))
		}
		if _, _, err := newOptimizer(b.Optimizer, b.Q, b.Alpha, optimizers.Decoupled); err != nil {
			add(fmt.Errorf("%s: %w", where, err))
		}
	}
	if len(o.WDDepths) > 0 || len(o.WDQs) > 0 {
		for _, d := range o.WDDepths {
			if d < 2 {
				add(fmt.Errorf("weight decay depths must be ≥ 2, got %d", d))
			}
		}
		for _, q := range o.WDQs {
			if q < 1 || q > 2 {
				add(fmt.Errorf("weight decay q must be in [1, 2], got %g", q))
			}
		}
		add(positive("WDAlpha", o.WDAlpha))
		add(positive("WDLR", o.WDLR))
		add(positive("WDSignLR", o.WDSignLR))
		add(positive("WDLambda", o.WDLambda))
		if o.WDSteps < 1 || o.WDSignSteps < 1 {
			add(fmt.Errorf("WDSteps and WDSignSteps must be ≥ 1"))
		}
	}
	return errors.Join(errs...)
}

// Run runs every experiment of opts and writes outDir/theory.json, outDir/theory.md and (with opts.Plots) the
// plots. progress (may be nil) gets one line per experiment and periodic updates. The context cancels between
// chunks of steps.
func Run(ctx context.Context, opts Options, outDir string, progress io.Writer) (*Report, error) {
	if progress == nil {
		progress = io.Discard
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if outDir == "" {
		return nil, errors.New("theory: empty output directory")
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("theory: %w", err)
	}
	rep, err := Compute(ctx, opts, progress)
	if err != nil {
		return nil, err
	}
	if err := rep.Write(outDir); err != nil {
		return nil, err
	}
	return rep, nil
}

// Compute runs the experiments without writing anything.
func Compute(ctx context.Context, opts Options, progress io.Writer) (*Report, error) {
	if progress == nil {
		progress = io.Discard
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	b, cfg, err := backend.New(opts.Backend)
	if err != nil {
		return nil, fmt.Errorf("theory: %w", err)
	}
	defer b.Finalize()
	prob, err := newProblem(opts.Seed, opts.K, opts.N, opts.NonZeros)
	if err != nil {
		return nil, err
	}
	l0, g0 := prob.lossGrad(make([]float64, prob.k))
	rep := &Report{
		Options: opts,
		Backend: cfg,
		Problem: ProblemInfo{
			K: prob.k, N: prob.n, NonZeros: opts.NonZeros, Seed: opts.Seed,
			InitialLoss:  l0,
			MaxAbsGrad:   maxAbs(g0),
			MaxCurvature: prob.maxCurvature(),
			XStarNorm:    norm(prob.xStar),
		},
	}
	r := &runner{ctx: ctx, b: b, prob: prob, opts: &opts, progress: progress, l0: l0, g0: g0}
	for _, s := range opts.Sweeps {
		e, err := r.sweep(s)
		if err != nil {
			return nil, err
		}
		rep.Exponents = append(rep.Exponents, e)
	}
	for _, bs := range opts.Balance {
		bal, err := r.balance(bs)
		if err != nil {
			return nil, err
		}
		rep.Balance = append(rep.Balance, bal)
	}
	for _, q := range opts.WDQs {
		for _, d := range opts.WDDepths {
			for _, mode := range []string{"none", optimizers.Coupled, optimizers.Decoupled} {
				row, err := r.weightDecay(q, d, mode)
				if err != nil {
					return nil, err
				}
				rep.WeightDecay = append(rep.WeightDecay, row)
			}
		}
	}
	rep.ElapsedSeconds = time.Since(start).Seconds()
	return rep, nil
}

// Write writes theory.json, theory.md and, if the options ask for them, the plots into dir.
func (rep *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("theory: %w", err)
	}
	if rep.Options.Plots {
		files, err := rep.writePlots(dir)
		if err != nil {
			return err
		}
		rep.Plots = files
	}
	if err := fileio.WriteFile(filepath.Join(dir, "theory.json"), rep.jsonBytes()); err != nil {
		return fmt.Errorf("theory: %w", err)
	}
	if err := fileio.WriteFile(filepath.Join(dir, "theory.md"), []byte(rep.Markdown())); err != nil {
		return fmt.Errorf("theory: %w", err)
	}
	return nil
}

func maxAbs(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

func norm(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}
