package finetune

import (
	"math"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/plots"
)

// TestFitSeriesDrawsMediansBarsAndTheChosenFit: escape_vs_lambda draws, per series, the median over seeds at each
// λ, a min–max bar where the seeds differ, and one fitted law — the log fit for GD at depth 2 (the log regime), the
// power fit elsewhere — whose line follows the fit and whose name carries the interval and the prediction.
func TestFitSeriesDrawsMediansBarsAndTheChosenFit(t *testing.T) {
	lambdas := []float64{0.025, 0.05, 0.1, 0.2}
	var runs []SweepRun
	for _, l := range lambdas {
		for seed, jitter := range []float64{0.9, 1, 1.2} {
			runs = append(runs, synthRun("sgd", 2, 3, l, uint64(seed), 5/l*jitter, 10000))                 // λ⁻¹
			runs = append(runs, synthRun("sgd", 2, 2, l, uint64(seed), (3+4*math.Log(1/l))*jitter, 10000)) // ln(1/λ)
		}
	}
	series := fitSeries(FitEscapes(runs), plots.Keys([]string{"sgd"}))
	var medians, bars, lines []plots.Series
	for _, s := range series {
		switch {
		case s.Points:
			medians = append(medians, s)
		case len(s.X) == 2 && s.X[0] == s.X[1]:
			bars = append(bars, s)
		default:
			lines = append(lines, s)
		}
	}
	if len(medians) != 2 || len(bars) != 2*len(lambdas) || len(lines) != 2 {
		t.Fatalf("%d median series, %d bars, %d fit lines; want 2, %d, 2", len(medians), len(bars), len(lines), 2*len(lambdas))
	}
	for _, m := range medians {
		if len(m.X) != len(lambdas) {
			t.Fatalf("%s: %d medians, want one per λ", m.Name, len(m.X))
		}
		for i, l := range lambdas {
			want := 5 / l // the depth-3 series' median seed (jitter 1)
			if strings.Contains(m.Name, "L=2") {
				want = 3 + 4*math.Log(1/l)
			}
			if math.Abs(m.Y[i]-want) > 1e-9 {
				t.Errorf("%s at λ=%g: median %g, want %g", m.Name, l, m.Y[i], want)
			}
		}
	}
	for _, b := range bars {
		if !(b.Y[0] < b.Y[1]) {
			t.Errorf("bar %s at λ=%g goes from %g to %g", b.Name, b.X[0], b.Y[0], b.Y[1])
		}
	}
	for _, l := range lines {
		log := strings.Contains(l.Name, "L=2")
		if log != strings.Contains(l.Name, "ln(1/λ)") || !strings.Contains(l.Name, "[") || !strings.Contains(l.Name, "theory") {
			t.Errorf("fit line %q: want the log fit for depth 2, the power fit for depth 3, with interval and theory", l.Name)
		}
		// The line passes through the law it fitted (exact data: the fit is exact).
		x, y := l.X[len(l.X)/2], l.Y[len(l.Y)/2]
		want := 5 / x
		if log {
			want = 3 + 4*math.Log(1/x)
		}
		if math.Abs(y-want) > 1e-6*want {
			t.Errorf("%s at λ=%g: %g, want %g", l.Name, x, y, want)
		}
	}
}
