package finetune

import (
	"encoding/csv"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/internal/fit"
	"github.com/saddle-ml/saddle/theory"
)

// AgreeTolerance is how far a fitted escape exponent may lie from the theory's and still count as agreeing.
const AgreeTolerance = 0.25

// Escape criteria a sweep fits.
const (
	CriterionLoss = "loss" // escape_at: the loss reaches (1−δ)·initial
	CriterionNorm = "norm" // escape_norm_at: mean ‖ΔW‖/‖W‖ passes --escape-norm
)

// EscapePoint is one λ of a fit: the escape steps of its seeds summarized. A seed that never escaped counts as
// +∞ (it escapes after its budget); the median is exact while fewer than half the seeds are such, and otherwise
// is a lower bound (the median with those seeds at the steps they ran).
type EscapePoint struct {
	Lambda     float64 `json:"lambda"`
	Median     float64 `json:"median"`
	Min        float64 `json:"min"` // spread over seeds; a seed that never escaped counts at the steps it ran
	Max        float64 `json:"max"`
	Seeds      int     `json:"seeds"`
	Escaped    int     `json:"escaped"`
	LowerBound bool    `json:"lower_bound"`
}

// EscapeFit is one fit of escape steps against λ for one series (optimizer, lr, depth, init) and criterion.
// Kind "power" fits ln(steps) = a + slope·ln λ; kind "log" fits steps = a + slope·ln(1/λ) and is made where the
// theory predicts the log regime. Points counts the λ fitted; LowerBounds the λ left out because their median is
// only a lower bound (shown in Lambdas, never dropped silently). CILow/CIHigh are the slope's OLS 95 % interval
// (fit.LineCI; null with fewer than three points).
type EscapeFit struct {
	Optimizer         string        `json:"optimizer"`
	Q                 float64       `json:"q"`
	Depth             int           `json:"depth"`
	LR                float64       `json:"lr"`
	Init              string        `json:"init"`
	Criterion         string        `json:"criterion"`
	Kind              string        `json:"kind"`
	Points            int           `json:"points"`
	LowerBounds       int           `json:"lower_bounds"`
	Slope             float64       `json:"slope"`
	CILow             *float64      `json:"ci_low"` // null with fewer than three points
	CIHigh            *float64      `json:"ci_high"`
	Intercept         float64       `json:"intercept"`
	R2                *float64      `json:"r2"` // null when the steps are all equal
	PredictedRegime   string        `json:"predicted_regime"`
	PredictedExponent *float64      `json:"predicted_exponent"` // −max(0, q(L−1)−L); null in the log regime
	Prediction        string        `json:"prediction"`         // theory.Prediction in words
	Agrees            *bool         `json:"agrees"`             // see agreement; null when it cannot be judged
	Lambdas           []EscapePoint `json:"lambdas"`
}

// sameSeries reports whether two fits are of the same series and criterion (they differ at most in kind).
func (f EscapeFit) sameSeries(g EscapeFit) bool {
	return f.Optimizer == g.Optimizer && f.LR == g.LR && f.Depth == g.Depth && f.Init == g.Init && f.Criterion == g.Criterion
}

// escapeOf is a run's escape under criterion: the interpolated crossing (or the whole step of a summary from before
// interpolation), or, when it never fired, the steps it ran as a lower bound. ok is false when the criterion is off.
func (r SweepRun) escapeOf(criterion string) (v float64, lowerBound, ok bool) {
	at, step := r.EscapeAt, r.EscapeStep
	if criterion == CriterionNorm {
		if strings.HasPrefix(r.NormCriterion, "off") {
			return 0, false, false
		}
		at, step = r.EscapeNormAt, r.EscapeNormStep
	}
	switch {
	case at != nil:
		return *at, false, true
	case step != nil:
		return float64(*step), false, true
	}
	return float64(max(r.Steps, r.Budget)), true, true
}

// summarize is the EscapePoint of one λ's runs.
func summarize(lambda float64, runs []SweepRun, criterion string) (EscapePoint, bool) {
	p := EscapePoint{Lambda: lambda, Min: math.Inf(1), Max: math.Inf(-1)}
	var sorted, bounded []float64 // never-escaped seeds at +∞, and at their steps
	for _, r := range runs {
		v, lb, ok := r.escapeOf(criterion)
		if !ok {
			return p, false
		}
		p.Seeds++
		bounded = append(bounded, v)
		p.Min, p.Max = math.Min(p.Min, v), math.Max(p.Max, v)
		if lb {
			v = math.Inf(1)
		} else {
			p.Escaped++
		}
		sorted = append(sorted, v)
	}
	p.Median = median(sorted)
	if math.IsInf(p.Median, 1) {
		p.Median, p.LowerBound = median(bounded), true
	}
	return p, p.Seeds > 0
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// FitEscapes fits every series of a sweep with at least two λ whose median escape is known, for each criterion.
func FitEscapes(runs []SweepRun) []EscapeFit {
	type key struct {
		opt   string
		q, lr float64
		depth int
		init  string
	}
	groups := map[key]map[float64][]SweepRun{}
	var keys []key
	for _, r := range runs {
		k := key{r.Optimizer, r.Q, r.LR, r.Depth, r.Init}
		if groups[k] == nil {
			groups[k] = map[float64][]SweepRun{}
			keys = append(keys, k)
		}
		groups[k][r.InitScale] = append(groups[k][r.InitScale], r)
	}
	var fits []EscapeFit
	for _, k := range keys {
		lambdas := make([]float64, 0, len(groups[k]))
		for l := range groups[k] {
			lambdas = append(lambdas, l)
		}
		slices.Sort(lambdas)
		pred := theory.Predict(k.q, k.depth)
		for _, crit := range []string{CriterionLoss, CriterionNorm} {
			base := EscapeFit{Optimizer: k.opt, Q: k.q, Depth: k.depth, LR: k.lr, Init: k.init, Criterion: crit,
				PredictedRegime: pred.Regime, Prediction: pred.String()}
			var xs, steps []float64
			usable := true
			for _, l := range lambdas {
				p, ok := summarize(l, groups[k][l], crit)
				if !ok {
					usable = false
					break
				}
				base.Lambdas = append(base.Lambdas, p)
				if p.LowerBound || !(p.Median > 0) || !(l > 0) {
					base.LowerBounds++
					continue
				}
				xs, steps = append(xs, math.Log(l)), append(steps, p.Median)
			}
			if !usable || len(xs) < 2 {
				continue
			}
			kinds := []string{"power"}
			if pred.Regime == theory.RegimeLog {
				kinds = append(kinds, "log")
			}
			for _, kind := range kinds {
				f := base
				f.Kind, f.Points = kind, len(xs)
				x, y := make([]float64, len(xs)), make([]float64, len(xs))
				for i := range xs {
					if kind == "power" {
						x[i], y[i] = xs[i], math.Log(steps[i])
					} else {
						x[i], y[i] = -xs[i], steps[i]
					}
				}
				line, lo, hi := fit.LineCI(x, y)
				if math.IsNaN(line.Slope) {
					continue
				}
				f.Slope, f.Intercept = line.Slope, line.Intercept
				f.CILow, f.CIHigh, f.R2 = number(lo), number(hi), number(line.R2)
				if kind == "power" && pred.Regime != theory.RegimeLog {
					f.PredictedExponent = ptr(pred.Slope)
				}
				f.Agrees = agreement(f)
				fits = append(fits, f)
			}
		}
	}
	return fits
}

// agreement judges a fit against the theory: a power fit agrees when its slope lies within AgreeTolerance of the
// predicted exponent; a log fit (log regime) agrees when its 95 % interval lies above 0, i.e. the escape grows
// with ln(1/λ). A power fit in the log regime, or a log fit without an interval, is not judged (nil).
func agreement(f EscapeFit) *bool {
	switch {
	case f.Kind == "power" && f.PredictedExponent != nil:
		return ptr(math.Abs(f.Slope-*f.PredictedExponent) <= AgreeTolerance)
	case f.Kind == "log" && f.CILow != nil:
		return ptr(*f.CILow > 0)
	}
	return nil
}

// slopesOf keeps runs.json's "slopes": the power fits of the loss escape.
func slopesOf(fits []EscapeFit) []SlopeFit {
	var out []SlopeFit
	for _, f := range fits {
		if f.Kind == "power" && f.Criterion == CriterionLoss {
			out = append(out, SlopeFit{Optimizer: f.Optimizer, LR: f.LR, Depth: f.Depth, Init: f.Init, Points: f.Points,
				Slope: f.Slope, Predicted: ptr(f.Prediction)})
		}
	}
	return out
}

// writeFits writes fits.csv (one row per fit) and fits.json (the same with each λ's median and spread).
func writeFits(out string, fits []EscapeFit) error {
	if fits == nil {
		fits = []EscapeFit{}
	}
	if err := writeJSONAtomic(filepath.Join(out, "fits.json"), struct {
		Tolerance float64     `json:"agree_tolerance"`
		Fits      []EscapeFit `json:"fits"`
	}{AgreeTolerance, fits}); err != nil {
		return err
	}
	var b strings.Builder
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"optimizer", "q", "depth", "lr", "init", "criterion", "kind", "points", "lower_bounds", "slope",
		"ci_low", "ci_high", "r2", "predicted_regime", "predicted_exponent", "agrees", "lambdas", "median_steps"})
	for _, f := range fits {
		var ls, ms []string
		for _, p := range f.Lambdas {
			m := fmtF(p.Median)
			if p.LowerBound {
				m = "≥" + m
			}
			ls, ms = append(ls, fmtF(p.Lambda)), append(ms, m)
		}
		pe, agrees := "", ""
		if f.PredictedExponent != nil {
			pe = fmtF(*f.PredictedExponent)
		}
		if f.Agrees != nil {
			agrees = strconv.FormatBool(*f.Agrees)
		}
		_ = w.Write([]string{f.Optimizer, fmtF(f.Q), strconv.Itoa(f.Depth), fmtF(f.LR), f.Init, f.Criterion, f.Kind,
			strconv.Itoa(f.Points), strconv.Itoa(f.LowerBounds), fmtF(f.Slope), fmtLoss(f.CILow), fmtLoss(f.CIHigh), fmtLoss(f.R2),
			f.PredictedRegime, pe, agrees, strings.Join(ls, " "), strings.Join(ms, " ")})
	}
	w.Flush()
	return fileio.WriteFile(filepath.Join(out, "fits.csv"), []byte(b.String()))
}

// number is v, or nil for NaN (JSON has no NaN; the CSV leaves it empty).
func number(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}
