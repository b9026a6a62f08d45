package theory

import (
	"fmt"
	"math"
	"path/filepath"

	"github.com/saddle-ml/saddle/optimizers"
	"github.com/saddle-ml/saddle/plots"
)

// sweepName is a file-name-safe name of a sweep: sgd_L3, steepest_q1.75_L3.
func sweepName(e Exponent) string {
	if e.spec().TakesQ() {
		return fmt.Sprintf("%s_q%g_L%d", e.Optimizer, e.Q, e.Depth)
	}
	return fmt.Sprintf("%s_L%d", e.Optimizer, e.Depth)
}

func sweepLabel(e Exponent) string {
	if e.spec().TakesQ() {
		return fmt.Sprintf("%s q=%g L=%d", e.Optimizer, e.Q, e.Depth)
	}
	return fmt.Sprintf("%s L=%d", e.Optimizer, e.Depth)
}

// spec is the optimizer choice the sweep ran.
func (e Exponent) spec() optimizers.Spec { return optimizers.Spec{Name: e.Optimizer, Q: e.Q} }

// escapedPoints returns λ and steps of the lanes that escaped.
func escapedPoints(e Exponent) (lambdas, steps []float64) {
	for i, s := range e.Steps {
		if s > 0 {
			lambdas = append(lambdas, e.Lambdas[i])
			steps = append(steps, float64(s))
		}
	}
	return lambdas, steps
}

// fitCurve evaluates the fit of e at xs: the power law exp(intercept)·λ^slope, or in the log regime
// log_intercept + log_slope·ln(1/λ).
func fitCurve(e Exponent, xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, l := range xs {
		out[i] = math.NaN()
		switch {
		case e.Regime == RegimeLog && e.LogSlope != nil:
			out[i] = *e.LogIntercept + *e.LogSlope*math.Log(1/l)
		case e.Slope != nil:
			out[i] = math.Exp(*e.Intercept + *e.Slope*math.Log(l))
		}
	}
	return out
}

func (rep *Report) writePlots(dir string) ([]string, error) {
	var files []string
	save := func(name string, f plots.Figure) error {
		if err := f.Save(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("theory: %w", err)
		}
		files = append(files, name+".png", name+".svg")
		return nil
	}

	// One plot per sweep: measured steps, the fit and the predicted slope through the data's centre.
	var overview, logRegime []plots.Series
	for i, e := range rep.Exponents {
		ls, steps := escapedPoints(e)
		if len(ls) == 0 {
			continue
		}
		grid := logGrid(minOf(ls), maxOf(ls), 30)
		series := []plots.Series{
			{Name: "measured", X: ls, Y: steps, Points: true, Color: 1},
			{Name: "fit: " + fitText(e), X: grid, Y: fitCurve(e, grid), Color: 1},
		}
		if e.Predicted != nil && e.Regime != RegimeLog {
			mx, my := meanLog(ls), meanLog(steps)
			pred := make([]float64, len(grid))
			for j, l := range grid {
				pred[j] = math.Exp(my + *e.Predicted*(math.Log(l)-mx))
			}
			series = append(series, plots.Series{Name: fmt.Sprintf("predicted slope %g", *e.Predicted), X: grid, Y: pred, Dashed: true, Color: 2})
		}
		title := fmt.Sprintf("Escape steps, %s (q=%g, lr=%g, %s regime)", sweepLabel(e), e.Q, e.LR, e.Regime)
		fig := plots.Figure{Title: title, XLabel: "λ (escape init w1 = 0, wi = λ)",
			YLabel: fmt.Sprintf("steps to loss ≤ %g·initial", rep.Options.EscapeFraction), LogX: true, LogY: true, Series: series}
		if lo, hi := minOf(steps), maxOf(steps); hi < 10*lo {
			// Show at least a decade, so that a flat (bounded) curve looks flat rather than noisy.
			c := math.Sqrt(lo * hi)
			fig.YMin, fig.YMax = c/math.Sqrt(10)/1.2, c*math.Sqrt(10)*1.2
		}
		if err := save("escape_"+sweepName(e), fig); err != nil {
			return files, err
		}

		times := make([]float64, len(steps))
		for j := range steps {
			times[j] = steps[j] * e.LR
		}
		fit := fitCurve(e, grid)
		for j := range fit {
			fit[j] *= e.LR
		}
		overview = append(overview,
			plots.Series{Name: sweepLabel(e), X: ls, Y: times, Points: true, Color: i + 1},
			plots.Series{X: grid, Y: fit, Color: i + 1})
		if e.Regime == RegimeLog {
			inv := make([]float64, len(ls))
			for j, l := range ls {
				inv[j] = math.Log(1 / l)
			}
			line := fitCurve(e, ls)
			logRegime = append(logRegime,
				plots.Series{Name: sweepLabel(e), X: inv, Y: steps, Points: true, Color: len(logRegime)/2 + 1},
				plots.Series{Name: fitText(e), X: inv, Y: line, Color: len(logRegime)/2 + 1})
		}
	}
	if len(overview) > 0 {
		if err := save("escape_overview", plots.Figure{Title: "Escape time (steps·lr) against λ, all sweeps",
			XLabel: "λ", YLabel: "steps·lr", LogX: true, LogY: true, Series: overview, Width: 7, Height: 5}); err != nil {
			return files, err
		}
	}
	if len(logRegime) > 0 {
		if err := save("escape_log_regime", plots.Figure{Title: "Logarithmic regime q(L−1) = L: steps against ln(1/λ)",
			XLabel: "ln(1/λ)", YLabel: "steps", Series: logRegime}); err != nil {
			return files, err
		}
	}

	var drift, decay []plots.Series
	for _, b := range rep.Balance {
		xs := make([]float64, len(b.TraceSteps))
		for i, s := range b.TraceSteps {
			xs[i] = float64(s)
		}
		label := fmt.Sprintf("%s q=%g L=%d lr=%g", b.Optimizer, b.Q, b.Depth, b.LR)
		if b.WeightDecay == 0 {
			drift = append(drift, plots.Series{Name: label, X: xs, Y: b.Trace})
			continue
		}
		c := len(decay)/2 + 1
		pred := make([]float64, len(xs))
		for i, x := range xs {
			pred[i] = math.Exp(-b.Q * b.WeightDecay * b.LR * x)
		}
		predName := ""
		if len(decay) == 0 {
			predName = "predicted exp(−q·α·lr·step), dashed"
		}
		decay = append(decay,
			plots.Series{Name: fmt.Sprintf("%s, α=%g", label, b.WeightDecay), X: xs, Y: b.Trace, Color: c},
			plots.Series{Name: predName, X: xs, Y: pred, Dashed: true, Color: c})
	}
	if len(drift) > 0 {
		if err := save("balance_drift", plots.Figure{Title: "Balance law without weight decay: drift of D = |w1|^q − |wj|^q",
			XLabel: "step", YLabel: "‖D(t) − D(0)‖ / ‖D(0)‖", LogY: true, Series: drift, Width: 7}); err != nil {
			return files, err
		}
	}
	if len(decay) > 0 {
		if err := save("balance_decay", plots.Figure{Title: "Balance law with decoupled weight decay: ‖D(t)‖/‖D(0)‖",
			XLabel: "step", YLabel: "‖D(t)‖ / ‖D(0)‖", LogY: true, Series: decay, Width: 7}); err != nil {
			return files, err
		}
	}
	return files, nil
}

func fitText(e Exponent) string {
	if e.Regime == RegimeLog {
		return fmt.Sprintf("%s + %s·ln(1/λ), R²=%s", fmtNum(e.LogIntercept, 3), fmtNum(e.LogSlope, 3), fmtNum(e.LogR2, 3))
	}
	return fmt.Sprintf("slope %s", fmtNum(e.Slope, 3))
}

func logGrid(lo, hi float64, n int) []float64 {
	if lo == hi {
		return []float64{lo}
	}
	return logspace(math.Log10(lo), math.Log10(hi), n)
}

func meanLog(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += math.Log(x)
	}
	return s / float64(len(v))
}
