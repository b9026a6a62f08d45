package theory

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// Report is everything Run measured; it is written as theory.json. Optional numbers are pointers: null in JSON
// when undefined (e.g. R² of constant data, the log–log prediction of the logarithmic regime).
type Report struct {
	Options        Options          `json:"options"`
	Backend        string           `json:"backend"`
	Problem        ProblemInfo      `json:"problem"`
	Exponents      []Exponent       `json:"exponents"`
	Balance        []Balance        `json:"balance"`
	WeightDecay    []WeightDecayRow `json:"weight_decay"`
	Plots          []string         `json:"plots,omitempty"`
	ElapsedSeconds float64          `json:"elapsed_seconds"`
}

// ProblemInfo describes the regression problem.
type ProblemInfo struct {
	K            int     `json:"k"`
	N            int     `json:"n"`
	NonZeros     int     `json:"non_zeros"`
	Seed         uint64  `json:"seed"`
	InitialLoss  float64 `json:"initial_loss"`  // f(0) = ‖y‖²/(2n)
	MaxAbsGrad   float64 `json:"max_abs_grad"`  // max |∇f(0)ᵢ|
	MaxCurvature float64 `json:"max_curvature"` // λmax(ZᵀZ/n): plain GD on x is stable for lr < 2/max_curvature
	XStarNorm    float64 `json:"x_star_norm"`
}

// Exponent is one escape sweep: steps to leave the saddle against λ, with the fits and the predictions.
type Exponent struct {
	Optimizer string  `json:"optimizer"`
	Q         float64 `json:"q"`
	Depth     int     `json:"depth"`
	M         float64 `json:"m"`      // q(L−1)/L: dx/dt ∝ |x|^m once the factors are balanced
	Regime    string  `json:"regime"` // power, log or bounded
	// Log–log fit of steps against λ, and the predicted slope −(q(L−1)−L) (power) or 0 (bounded); null for log.
	Slope     *float64 `json:"slope"`
	Predicted *float64 `json:"predicted"`
	R2        *float64 `json:"r2"`
	Intercept *float64 `json:"intercept"`
	// Fit of steps against ln(1/λ): steps ≈ log_intercept + log_slope·ln(1/λ); predicted slope in the log regime.
	LogSlope          *float64 `json:"log_slope"`
	LogR2             *float64 `json:"log_r2"`
	LogIntercept      *float64 `json:"log_intercept"`
	PredictedLogSlope *float64 `json:"predicted_log_slope,omitempty"`

	LR       float64   `json:"lr"`
	Lambdas  []float64 `json:"lambdas"`
	Steps    []int     `json:"steps"` // −1: not escaped within max_steps
	Time     []float64 `json:"time"`  // steps·lr (0 where steps is −1)
	MaxSteps int       `json:"max_steps"`
	Escaped  int       `json:"escaped"`

	// First step from the escape init: |Δx| per λ, the fitted exponent of |Δx| against λ, the predicted q(L−1),
	// and the largest relative difference between Δx and its closed form.
	FirstStepDelta             []float64 `json:"first_step_delta"`
	FirstStepExponent          *float64  `json:"first_step_exponent"`
	PredictedFirstStepExponent float64   `json:"predicted_first_step_exponent"`
	FirstStepMaxResidual       *float64  `json:"first_step_max_log_residual"`
	FirstStepMaxRelErr         *float64  `json:"first_step_max_rel_err"`

	OK bool `json:"ok"` // within SlopeTolerance (power, bounded) or LogR2 ≥ MinLogR2 (log), every λ escaped
}

// Balance is one balance-law run.
type Balance struct {
	Optimizer   string  `json:"optimizer"`
	Q           float64 `json:"q"`
	Depth       int     `json:"depth"`
	LR          float64 `json:"lr"`
	Lambda      float64 `json:"lambda"`
	Steps       int     `json:"steps"`
	WeightDecay float64 `json:"weight_decay"`
	WDMode      string  `json:"wd_mode,omitempty"`
	InitialLoss float64 `json:"initial_loss"`
	FinalLoss   float64 `json:"final_loss"`
	// Without weight decay: max over the run of ‖D(t) − D(0)‖/‖D(0)‖, D = |w₁|^q − |wⱼ|^q.
	MaxRelDrift *float64 `json:"max_rel_drift,omitempty"`
	// With decoupled weight decay: the decay rate per step of ‖D(t)‖ (fit of its log) against q·α·lr.
	FittedRate    *float64 `json:"fitted_rate,omitempty"`
	PredictedRate *float64 `json:"predicted_rate,omitempty"`
	RateRelErr    *float64 `json:"rate_rel_err,omitempty"`
	RateR2        *float64 `json:"rate_r2,omitempty"`
	// The trace at the end of every chunk: the drift (no decay) or ‖D(t)‖/‖D(0)‖ (decay).
	TraceSteps []int     `json:"trace_steps"`
	Trace      []float64 `json:"trace"`
	OK         bool      `json:"ok"`
}

// WeightDecayRow is one cell of the coupled-against-decoupled table.
type WeightDecayRow struct {
	Optimizer string  `json:"optimizer"`
	Q         float64 `json:"q"`
	Depth     int     `json:"depth"`
	Mode      string  `json:"mode"` // none, coupled, decoupled
	Alpha     float64 `json:"alpha"`
	LR        float64 `json:"lr"`
	Lambda    float64 `json:"lambda"`
	Steps     int     `json:"steps"`
	// Fraction of coordinates with |xᵢ| < SparseBelow, ‖x − x*‖ and ‖x − x*‖/‖x*‖.
	Sparsity       float64 `json:"sparsity"`
	Error          float64 `json:"error"`
	RelError       float64 `json:"rel_error"`
	SupportFound   int     `json:"support_found"`   // non-zeros of x* where |xᵢ| ≥ SparseBelow
	FalsePositives int     `json:"false_positives"` // zeros of x* where |xᵢ| ≥ SparseBelow
	Loss           float64 `json:"loss"`
	LeftSaddle     bool    `json:"left_saddle"` // final loss ≤ escape_fraction·initial loss
	// p of the induced penalty Σ|xᵢ|^p (see PredictedPenalty); null for no weight decay.
	PredictedPenalty *float64 `json:"predicted_penalty_exponent"`
}

// num turns NaN and ±Inf into nil so that the report stays valid JSON.
func num(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func fmtNum(p *float64, digits int) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.*g", digits, *p)
}

func (rep *Report) jsonBytes() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rep); err != nil {
		// Every float that can be NaN goes through num; anything else is a bug worth seeing in the file.
		return []byte(fmt.Sprintf("{\"error\": %q}\n", err.Error()))
	}
	return buf.Bytes()
}

// Markdown renders the report as theory.md.
func (rep *Report) Markdown() string {
	var b strings.Builder
	p := rep.Problem
	fmt.Fprintf(&b, "# Saddle escape on the diagonal model x = w₁⊙…⊙w_L\n\n")
	fmt.Fprintf(&b, "Sparse regression y = Z·x*, Z ∈ ℝ^{%d×%d} Gaussian, %d non-zeros (seed %d), loss ‖Zx − y‖²/(2n) "+
		"= %.4g at x = 0, max |∇f(0)ᵢ| = %.4g, λmax(ZᵀZ/n) = %.4g (plain GD on x is stable for lr < %.3g). "+
		"Escape init w₁ = 0, wᵢ = λ; escape = first step with loss ≤ %.2g × initial. Backend %s; %.0f s.\n\n",
		p.N, p.K, p.NonZeros, p.Seed, p.InitialLoss, p.MaxAbsGrad, p.MaxCurvature, 2/p.MaxCurvature,
		rep.Options.EscapeFraction, rep.Backend, rep.ElapsedSeconds)

	b.WriteString("## Escape steps against λ\n\n")
	b.WriteString("Predicted (m = q(L−1)/L): steps ∝ λ^(−(q(L−1)−L)) if q(L−1) > L, ≈ a + b·ln(1/λ) with " +
		"b = 1/(lr·max|g|^(q−1)) if q(L−1) = L, bounded if q(L−1) < L. The first step moves x by exactly " +
		"lr·|u(g·λ^(L−1))|·λ^(L−1), an exponent q(L−1) in λ.\n\n")
	b.WriteString("| optimizer | q | L | m | regime | lr | λ range | steps | log–log slope | predicted | R² | slope vs ln(1/λ) | predicted | R² | first-step exponent (predicted, difference) | Δx rel. err | ok |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, e := range rep.Exponents {
		off := "–"
		if e.FirstStepExponent != nil {
			off = fmt.Sprintf("%.1e", math.Abs(*e.FirstStepExponent-e.PredictedFirstStepExponent))
		}
		fmt.Fprintf(&b, "| %s | %g | %d | %.3g | %s | %g | %.2g–%.2g | %s | %s | %s | %s | %s | %s | %s | %s (%g, %s) | %s | %s |\n",
			e.Optimizer, e.Q, e.Depth, e.M, e.Regime, e.LR, minOf(e.Lambdas), maxOf(e.Lambdas), stepsRange(e.Steps),
			fmtNum(e.Slope, 4), fmtNum(e.Predicted, 3), fmtNum(e.R2, 4), fmtNum(e.LogSlope, 4), fmtNum(e.PredictedLogSlope, 4),
			fmtNum(e.LogR2, 4), fmtNum(e.FirstStepExponent, 10), e.PredictedFirstStepExponent, off, fmtNum(e.FirstStepMaxRelErr, 2), yes(e.OK))
	}
	fmt.Fprintf(&b, "\nok: |slope − predicted| ≤ %g (power, bounded) or R² ≥ %g against ln(1/λ) (log), every λ escaped. "+
		"Δx rel. err compares the first step with its closed form, computed in plain Go from ∇f(0). Adam's first step is "+
		"g/(|g| + eps): its exponent is L−1 only while |g|·λ^(L−1) ≫ eps and tends to 2(L−1) (GD) below; the closed "+
		"form includes eps.\n\n", SlopeTolerance, MinLogR2)
	for _, e := range rep.Exponents {
		fmt.Fprintf(&b, "- %s L=%d: λ = %s → steps %v\n", e.Optimizer, e.Depth, fmtList(e.Lambdas), e.Steps)
	}
	b.WriteString("\n## Balance law\n\n")
	b.WriteString("D = |w₁|^q − |wⱼ|^q (all j ≥ 2, all coordinates). Without weight decay it is conserved by the flow; " +
		"with decoupled weight decay α it decays like exp(−q·α·lr·t).\n\n")
	b.WriteString("| optimizer | q | L | lr | λ | α (decoupled) | steps | loss start → end | max rel. drift | fitted rate / step | q·α·lr | rel. err | ok |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range rep.Balance {
		fmt.Fprintf(&b, "| %s | %g | %d | %g | %g | %g | %d | %.4g → %.4g | %s | %s | %s | %s | %s |\n",
			x.Optimizer, x.Q, x.Depth, x.LR, x.Lambda, x.WeightDecay, x.Steps, x.InitialLoss, x.FinalLoss,
			fmtNum(x.MaxRelDrift, 3), fmtNum(x.FittedRate, 5), fmtNum(x.PredictedRate, 5), fmtNum(x.RateRelErr, 2), yes(x.OK))
	}
	fmt.Fprintf(&b, "\nok: drift < %g, or decay rate within %g %% of q·α·lr.\n", DriftTolerance, 100*RateTolerance)
	if len(rep.WeightDecay) > 0 {
		b.WriteString("\n## Coupled against decoupled weight decay\n\n")
		fmt.Fprintf(&b, "Sparsity = fraction of |xᵢ| < %g; the prediction is the exponent p of the penalty Σ|xᵢ|^p that the "+
			"decay induces on x: coupled (α/2)Σ‖wᵢ‖² gives p = 2/L; decoupled decay under q-steepest descent acts like "+
			"p = 2 − q(L−1)/L (L_{3/2} for sign descent at L = 2, towards L1 as L grows). Smaller p favours sparser x. "+
			"For GD (q = 2) the two modes are the same rule. x* has %d non-zeros.\n\n", SparseBelow, p.NonZeros)
		b.WriteString("| optimizer | q | L | mode | α | lr | steps | predicted p | sparsity | ‖x − x*‖ | rel. | support found | false positives | loss |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		stuck := false
		for _, w := range rep.WeightDecay {
			loss := fmt.Sprintf("%.3g", w.Loss)
			if !w.LeftSaddle {
				loss += " (stuck)"
				stuck = true
			}
			fmt.Fprintf(&b, "| %s | %g | %d | %s | %g | %g | %d | %s | %.3f | %.4f | %.3f | %d/%d | %d | %s |\n",
				w.Optimizer, w.Q, w.Depth, w.Mode, w.Alpha, w.LR, w.Steps, fmtNum(w.PredictedPenalty, 3), w.Sparsity,
				w.Error, w.RelError, w.SupportFound, p.NonZeros, w.FalsePositives, loss)
		}
		if stuck {
			fmt.Fprintf(&b, "\n(stuck): the run never got below %g × the initial loss. With coupled decay and L ≥ 3, x = 0 is a "+
				"local minimum of f + (α/2)Σ‖wᵢ‖², since the induced penalty ∝ |x|^(2/L) outgrows the linear loss term near 0; "+
				"a run that has not left the saddle before the decay shrinks the factors stays there.\n", rep.Options.EscapeFraction)
		}
	}
	if len(rep.Plots) > 0 {
		b.WriteString("\n## Plots\n\n")
		for _, f := range rep.Plots {
			if strings.HasSuffix(f, ".png") {
				fmt.Fprintf(&b, "![%s](%s)\n\n", strings.TrimSuffix(f, ".png"), f)
			}
		}
	}
	return b.String()
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func stepsRange(steps []int) string {
	if len(steps) == 0 {
		return "–"
	}
	lo, hi := steps[0], steps[0]
	for _, s := range steps {
		lo, hi = min(lo, s), max(hi, s)
	}
	return fmt.Sprintf("%d–%d", lo, hi)
}

func fmtList(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.3g", x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
