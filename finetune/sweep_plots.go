package finetune

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/saddle-ml/saddle/internal/fit"
	"github.com/saddle-ml/saddle/plots"
)

// maxSeriesPerPanel is how many runs one loss or ‖ΔW‖ panel shows before the sweep's plots become small multiples.
const maxSeriesPerPanel = 6

// factor is one setting a sweep varies besides the optimizer, as plots name it.
type factor struct {
	name  string
	value func(SweepRun) string
}

var sweepFactors = []factor{
	{"lr", func(r SweepRun) string { return "lr=" + strconv.FormatFloat(r.LR, 'g', -1, 64) }},
	{"λ", func(r SweepRun) string { return "λ=" + strconv.FormatFloat(r.InitScale, 'g', -1, 64) }},
	{"depth", func(r SweepRun) string { return "L=" + strconv.Itoa(r.Depth) }},
	{"init", func(r SweepRun) string { return r.Init }},
}

// runStyle tells a sweep's runs apart in the loss and ‖ΔW‖ plots: the colour is the optimizer's, the dash pattern
// follows the first setting that varies (lr, then λ, depth, init), and the settings that vary besides it pick the
// panel. When only one setting varies but there are more than maxSeriesPerPanel runs, it picks the panel too; when
// it takes more values than there are dash patterns, the panel alone tells them apart.
type runStyle struct {
	colors map[string]int // optimizer label → palette entry (1-based)
	dash   *factor
	dashes map[string]int // value of dash → pattern
	panel  []factor
}

func newRunStyle(runs []SweepRun) runStyle {
	st := runStyle{colors: plots.Keys(mapped(runs, func(r SweepRun) string { return r.Optimizer }))}
	var varying []factor
	for _, f := range sweepFactors {
		if len(plots.Keys(mapped(runs, f.value))) > 1 {
			varying = append(varying, f)
		}
	}
	if len(varying) == 0 {
		return st
	}
	st.dash = &varying[0]
	st.dashes = plots.Keys(mapped(runs, st.dash.value))
	st.panel = varying[1:]
	switch {
	case len(st.dashes) > plots.Dashes: // patterns would repeat within a panel: one panel per value instead
		st.dash, st.dashes, st.panel = nil, nil, varying
	case len(st.panel) == 0 && len(runs) > maxSeriesPerPanel:
		st.panel = varying[:1]
	}
	return st
}

// series is run r's curve: named by its optimizer and dash setting (the legend's entries), in its panel.
func (st runStyle) series(r SweepRun, x, y []float64) plots.Series {
	s := plots.Series{Name: r.Optimizer, X: x, Y: y, Color: st.colors[r.Optimizer]}
	if st.dash != nil {
		s.Name += " " + st.dash.value(r)
		s.Dash = st.dashes[st.dash.value(r)] - 1
	}
	var panel []string
	for _, f := range st.panel {
		panel = append(panel, f.value(r))
	}
	s.Panel = strings.Join(panel, " ")
	return s
}

// sweepPlots draws loss vs step and mean ‖ΔW‖/‖W‖ vs step (log) for every run, and escape step vs λ (log–log).
func sweepPlots(out string, res *SweepResult) error {
	var loss, norm []plots.Series
	title := "Eval loss"
	st := newRunStyle(res.Runs)
	for _, r := range res.Runs {
		t, err := readTrajectory(filepath.Join(out, "runs", r.Name, "metrics.jsonl"))
		if err != nil {
			return err
		}
		// The eval loss is smooth and comparable across runs; per-batch training loss is the fallback.
		if len(t.evalSteps) > 1 {
			loss = append(loss, st.series(r, t.evalSteps, t.evalLoss))
		} else {
			title = "Training loss"
			loss = append(loss, st.series(r, t.steps, t.loss))
		}
		norm = append(norm, st.series(r, t.steps, t.rel))
	}
	if len(loss) == 0 {
		return nil
	}
	if err := plots.Lines(filepath.Join(out, "loss"), title, "step", "loss", false, false, loss); err != nil {
		return err
	}
	if err := plots.Lines(filepath.Join(out, "delta_w"), "Adapter size", "step", "mean ‖ΔW‖/‖W‖", false, true, norm); err != nil {
		return err
	}
	title, escape := "Escape step vs init scale", escapeSeries(res.Runs, st.colors)
	if fitted := fitSeries(res.Fits, st.colors); len(fitted) > 0 {
		title, escape = "Loss escape vs init scale: median over seeds (bars: min–max), fits", fitted
	}
	if len(escape) == 0 {
		return nil
	}
	return plots.Lines(filepath.Join(out, "escape_vs_lambda"), title, "λ", "escape step", true, true, escape)
}

// fitSeries draws the loss-escape fits of fits.csv: per series (optimizer, lr, depth, init) the median escape over
// seeds at each λ with a bar from the fastest to the slowest seed, and the fitted law (the power fit, or the log fit
// where the theory predicts ln(1/λ)) with its interval beside the prediction. Runs differing only in seed are
// replicates here, as in the loss plots; λ whose median is only a lower bound are drawn but were not fitted.
func fitSeries(fits []EscapeFit, colors map[string]int) []plots.Series {
	var chosen []EscapeFit
	for _, f := range fits {
		if f.Criterion != CriterionLoss {
			continue
		}
		// One fit per series: the log fit where there is one (the predicted regime), else the power fit.
		if i := slices.IndexFunc(chosen, func(c EscapeFit) bool { return c.sameSeries(f) }); i >= 0 {
			if f.Kind == "log" {
				chosen[i] = f
			}
			continue
		}
		chosen = append(chosen, f)
	}
	shapes := plots.Keys(mapped(chosen, func(f EscapeFit) string { return fmt.Sprintf("L=%d lr=%g %s", f.Depth, f.LR, f.Init) }))
	var out []plots.Series
	for _, f := range chosen {
		name := fmt.Sprintf("%s lr=%g L=%d", f.Optimizer, f.LR, f.Depth)
		shape := shapes[fmt.Sprintf("L=%d lr=%g %s", f.Depth, f.LR, f.Init)] - 1
		med := plots.Series{Name: name, Points: true, Color: colors[f.Optimizer], Dash: shape}
		for _, p := range f.Lambdas {
			med.X, med.Y = append(med.X, p.Lambda), append(med.Y, p.Median)
			if p.Max > p.Min {
				out = append(out, plots.Series{Name: name, Color: colors[f.Optimizer], X: []float64{p.Lambda, p.Lambda}, Y: []float64{p.Min, p.Max}})
			}
		}
		out = append(out, med)
		if f.Points < minFitPoints || len(med.X) == 0 {
			continue
		}
		ci := ""
		if f.CILow != nil {
			ci = fmt.Sprintf(" [%.2f, %.2f]", *f.CILow, *f.CIHigh)
		}
		lo, hi := slices.Min(med.X), slices.Max(med.X)
		line := plots.Series{Color: colors[f.Optimizer], Dash: shape}
		for k := range 9 {
			l := math.Exp(math.Log(lo) + float64(k)/8*(math.Log(hi)-math.Log(lo)))
			y := math.Exp(f.Intercept + f.Slope*math.Log(l))
			if f.Kind == "log" {
				y = f.Intercept + f.Slope*math.Log(1/l)
			}
			if y > 0 {
				line.X, line.Y = append(line.X, l), append(line.Y, y)
			}
		}
		if f.Kind == "log" {
			line.Name = fmt.Sprintf("%s: steps = a + %.2f%s·ln(1/λ); theory %s", name, f.Slope, ci, f.Prediction)
		} else {
			line.Name = fmt.Sprintf("%s: λ^%.2f%s; theory %s", name, f.Slope, ci, f.Prediction)
		}
		out = append(out, line)
	}
	return out
}

// minFitPoints is the fewest escaped runs a series needs for escape_vs_lambda to draw a fitted line through them
// (a line through two points fits anything).
const minFitPoints = 3

// escapeSeries are the escape steps against λ, one series of markers per (optimizer, lr, depth, init), coloured by
// optimizer with a marker shape per remaining setting, and the log–log fit of each series with enough points.
func escapeSeries(runs []SweepRun, colors map[string]int) []plots.Series {
	var varying []factor
	for _, f := range sweepFactors {
		if f.name != "λ" && len(plots.Keys(mapped(runs, f.value))) > 1 {
			varying = append(varying, f)
		}
	}
	group := func(r SweepRun) (label, rest string) {
		var parts []string
		for _, f := range varying {
			parts = append(parts, f.value(r))
		}
		rest = strings.Join(parts, " ")
		return strings.TrimSpace(r.Optimizer + " " + rest), rest
	}
	shapes := plots.Keys(mapped(runs, func(r SweepRun) string { _, rest := group(r); return rest }))
	byGroup := map[string]*plots.Series{}
	var order []string
	for _, r := range runs {
		if r.EscapeStep == nil {
			continue
		}
		g, rest := group(r)
		if byGroup[g] == nil {
			byGroup[g] = &plots.Series{Name: g, Points: true, Color: colors[r.Optimizer], Dash: shapes[rest] - 1}
			order = append(order, g)
		}
		byGroup[g].X = append(byGroup[g].X, r.InitScale)
		byGroup[g].Y = append(byGroup[g].Y, float64(*r.EscapeStep))
	}
	var escape []plots.Series
	for _, g := range order {
		s := byGroup[g]
		escape = append(escape, *s)
		if len(s.X) < minFitPoints {
			continue
		}
		xs, ys := make([]float64, len(s.X)), make([]float64, len(s.X))
		for j := range s.X {
			xs[j], ys[j] = math.Log(s.X[j]), math.Log(s.Y[j])
		}
		if f := fit.Line(xs, ys); !math.IsNaN(f.Slope) {
			lo, hi := slices.Min(s.X), slices.Max(s.X)
			escape = append(escape, plots.Series{Name: fmt.Sprintf("%s: fit slope %.2f (%d points)", g, f.Slope, len(s.X)),
				Color: s.Color, Dash: s.Dash, X: []float64{lo, hi},
				Y: []float64{math.Exp(f.Intercept + f.Slope*math.Log(lo)), math.Exp(f.Intercept + f.Slope*math.Log(hi))}})
		}
	}
	return escape
}

type trajectory struct {
	steps, loss, rel    []float64
	evalSteps, evalLoss []float64
}

func readTrajectory(path string) (*trajectory, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	t := &trajectory{}
	line := 0
	for sc.Scan() {
		line++
		var row MetricsRow
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if row.EvalLoss != nil {
			t.evalSteps = append(t.evalSteps, float64(row.Step))
			t.evalLoss = append(t.evalLoss, *row.EvalLoss)
		}
		if row.Loss == nil {
			continue
		}
		t.steps = append(t.steps, float64(row.Step))
		t.loss = append(t.loss, *row.Loss)
		t.rel = append(t.rel, row.All.RelDW)
	}
	return t, sc.Err()
}
