package finetune

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// grid is every combination of the optimizers, lrs and λs, depth 2, saddle init.
func gridRuns(opts []string, lrs, lambdas []float64) []SweepRun {
	var runs []SweepRun
	for _, o := range opts {
		for _, lr := range lrs {
			for _, l := range lambdas {
				runs = append(runs, SweepRun{Name: fmt.Sprintf("%s_%g_%g", o, lr, l), Optimizer: o, LR: lr, InitScale: l, Depth: 2, Init: "saddle"})
			}
		}
	}
	return runs
}

// In the loss and ‖ΔW‖ plots every optimizer has its own colour, every lr its own line pattern, no two runs of a
// panel look alike, and a sweep of many runs is drawn as small multiples.
func TestRunStyleTellsRunsApart(t *testing.T) {
	for _, tc := range []struct {
		runs   []SweepRun
		panels int
	}{
		{gridRuns([]string{"sgd", "adam"}, []float64{1e-3, 1e-2}, []float64{0.1}), 1},               // 4 runs, one plot
		{gridRuns([]string{"sgd", "adam", "sign"}, []float64{1e-3, 1e-2}, []float64{0.01, 0.1}), 2}, // 12 runs: a panel per λ
		{gridRuns([]string{"sgd", "adam"}, []float64{1e-4, 1e-3, 1e-2, 1e-1}, []float64{0.1}), 4},   // 8 runs, only lr varies: a panel per lr
		{gridRuns([]string{"sgd", "adam", "steepest:1.5"}, []float64{1e-3}, []float64{0.01, 0.1}), 1},
		{gridRuns([]string{"sgd", "adam"}, []float64{1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1}, []float64{0.01, 0.1}), 14}, // more lrs than patterns // 6 runs: λ is the pattern
	} {
		st := newRunStyle(tc.runs)
		colourOf, panels, looks := map[int]string{}, map[string]bool{}, map[string]string{}
		for _, r := range tc.runs {
			s := st.series(r, []float64{0}, []float64{1})
			if o, ok := colourOf[s.Color]; ok && o != r.Optimizer {
				t.Errorf("%s and %s share colour %d", o, r.Optimizer, s.Color)
			}
			colourOf[s.Color] = r.Optimizer
			panels[s.Panel] = true
			look := fmt.Sprintf("%s|%d|%d", s.Panel, s.Color, s.Dash)
			if other, ok := looks[look]; ok {
				t.Errorf("runs %s and %s are drawn alike (panel %q, colour %d, dash %d)", other, r.Name, s.Panel, s.Color, s.Dash)
			}
			looks[look] = r.Name
			if !strings.HasPrefix(s.Name, r.Optimizer) {
				t.Errorf("run %s is named %q in the legend", r.Name, s.Name)
			}
		}
		if len(panels) != tc.panels {
			t.Errorf("%d runs: %d panels %v, want %d", len(tc.runs), len(panels), panels, tc.panels)
		}
		if n := len(tc.runs) / len(panels); n > maxSeriesPerPanel && len(st.panel) == 0 {
			t.Errorf("%d runs in one panel", n)
		}
	}
}

// escape_vs_lambda fits a line only through series of at least minFitPoints escaped runs.
func TestEscapeFitsNeedThreePoints(t *testing.T) {
	runs := gridRuns([]string{"sgd", "sign"}, []float64{1e-3}, []float64{0.01, 0.1, 1})
	for i := range runs {
		step := int(math.Round(10 / runs[i].InitScale)) // slope −1
		runs[i].EscapeStep = &step
	}
	runs[3].EscapeStep = nil // sign escapes only twice
	series := escapeSeries(runs, map[string]int{"sgd": 1, "sign": 2})
	var fits []string
	for _, s := range series {
		if !s.Points {
			fits = append(fits, s.Name)
		}
	}
	if len(series) != 3 || len(fits) != 1 || !strings.Contains(fits[0], "sgd: fit slope -1.00 (3 points)") {
		t.Fatalf("want sgd's points and fit and sign's points only, got %d series, fits %q", len(series), fits)
	}
	if series[0].Color == series[2].Color {
		t.Error("sgd and sign share a colour")
	}
}
