// Package plots draws small line and scatter charts (optionally on log axes) and writes each one as both PNG and
// SVG. It is a thin wrapper over gonum.org/v1/plot for saddle's reports: escape steps against λ, loss and ‖ΔW‖
// against the step, balance quantities.
package plots

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/saddle-ml/saddle/internal/fileio"
)

const pngDPI = 144

// Series is one curve. X and Y must have the same length. Points draws markers only (measurements); otherwise the
// points are joined by a line (fits, trajectories), dashed if Dashed (predictions).
type Series struct {
	Name   string
	X, Y   []float64
	Points bool
	Dashed bool
	// Color picks the palette entry (1-based) so that e.g. a fitted line matches its measured points;
	// 0 means "by position in the list".
	Color int
}

// Figure is a whole chart. Lines covers the common case; build a Figure for the rest.
type Figure struct {
	Title, XLabel, YLabel string
	LogX, LogY            bool
	Series                []Series
	// The legend sits in the top right corner unless LegendLeft or LegendBottom move it.
	LegendLeft, LegendBottom bool
	// Width and Height in inches; 0 means 6 × 4.
	Width, Height float64
	// Fixed axis ranges, used when Min < Max (points outside are clipped); otherwise the data decide.
	XMin, XMax, YMin, YMax float64
}

// Lines draws the series and writes path+".png" and path+".svg" (path without extension).
func Lines(path, title, xlabel, ylabel string, logX, logY bool, series []Series) error {
	f := Figure{Title: title, XLabel: xlabel, YLabel: ylabel, LogX: logX, LogY: logY, Series: series}
	return f.Save(path)
}

// Save writes path+".png" and path+".svg" (path without extension). Points that a log axis cannot show (x ≤ 0 or
// y ≤ 0) and non-finite points are left out; a figure with no point left is an error, and so is a series whose X
// and Y lengths differ.
func (f Figure) Save(path string) error {
	if path == "" {
		return errors.New("plots: empty output path")
	}
	p, err := f.build()
	if err != nil {
		return fmt.Errorf("plots: %s: %w", path, err)
	}
	w, h := f.Width, f.Height
	if w <= 0 {
		w = 6
	}
	if h <= 0 {
		h = 4
	}
	for _, format := range []string{"png", "svg"} {
		if err := render(p, vg.Length(w)*vg.Inch, vg.Length(h)*vg.Inch, format, path+"."+format); err != nil {
			return fmt.Errorf("plots: %s.%s: %w", path, format, err)
		}
	}
	return nil
}

func (f Figure) build() (p *plot.Plot, err error) {
	defer func() { // gonum/plot reports some bad input by panicking; keep that inside the package
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("drawing failed: %v", r)
		}
	}()
	p = plot.New()
	p.Title.Text = f.Title
	p.X.Label.Text = f.XLabel
	p.Y.Label.Text = f.YLabel
	p.Add(plotter.NewGrid())
	p.Legend.Top = !f.LegendBottom
	p.Legend.Left = f.LegendLeft
	p.Legend.ThumbnailWidth = 0.35 * vg.Inch

	xr, yr := newRange(), newRange()
	for i, s := range f.Series {
		if len(s.X) != len(s.Y) {
			return nil, fmt.Errorf("series %d (%q): %d x values but %d y values", i, s.Name, len(s.X), len(s.Y))
		}
		pts := make(plotter.XYs, 0, len(s.X))
		for j := range s.X {
			x, y := s.X[j], s.Y[j]
			if !finite(x) || !finite(y) || (f.LogX && x <= 0) || (f.LogY && y <= 0) {
				continue
			}
			pts = append(pts, plotter.XY{X: x, Y: y})
			xr.add(x)
			yr.add(y)
		}
		if len(pts) == 0 {
			continue
		}
		c := i
		if s.Color > 0 {
			c = s.Color - 1
		}
		if s.Points {
			sc, err := plotter.NewScatter(pts)
			if err != nil {
				return nil, fmt.Errorf("series %d (%q): %w", i, s.Name, err)
			}
			sc.GlyphStyle = draw.GlyphStyle{Color: plotutil.Color(c), Shape: plotutil.Shape(c), Radius: vg.Points(3)}
			p.Add(sc)
			if s.Name != "" {
				p.Legend.Add(s.Name, sc)
			}
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("series %d (%q): %w", i, s.Name, err)
		}
		l.LineStyle.Color = plotutil.Color(c)
		l.LineStyle.Width = vg.Points(1.5)
		if s.Dashed {
			l.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(l)
		if s.Name != "" {
			p.Legend.Add(s.Name, l)
		}
	}
	if xr.empty() {
		return nil, errors.New("no point to draw (log axes leave out values ≤ 0)")
	}
	setAxis(&p.X, xr, f.LogX)
	setAxis(&p.Y, yr, f.LogY)
	if f.XMin < f.XMax && (!f.LogX || f.XMin > 0) {
		p.X.Min, p.X.Max = f.XMin, f.XMax
	}
	if f.YMin < f.YMax && (!f.LogY || f.YMin > 0) {
		p.Y.Min, p.Y.Max = f.YMin, f.YMax
	}
	return p, nil
}

// setAxis fixes the range (padded a little, never empty) and, for log axes, the scale and a ticker that labels
// enough ticks even when the data span less than a decade.
func setAxis(a *plot.Axis, r valueRange, log bool) {
	lo, hi := r.lo, r.hi
	if log {
		if lo == hi {
			lo, hi = lo/2, hi*2
		}
		pad := math.Pow(hi/lo, 0.04)
		a.Min, a.Max = lo/pad, hi*pad
		a.Scale = plot.LogScale{}
		a.Tick.Marker = logTicks{}
		return
	}
	if lo == hi {
		d := math.Max(math.Abs(lo)/2, 1)
		lo, hi = lo-d, hi+d
	}
	pad := (hi - lo) * 0.04
	a.Min, a.Max = lo-pad, hi+pad
	a.Tick.Marker = linearTicks{}
}

// linearTicks are gonum's default ticks labelled without trailing zeros ("2500", not "2500.00").
type linearTicks struct{}

func (linearTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = formatTick(ticks[i].Value)
		}
	}
	return ticks
}

// logTicks labels the powers of ten in range, and 2× and 5× them when fewer than three powers of ten fit.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(lo > 0) || !(hi > lo) {
		return nil
	}
	first, last := int(math.Floor(math.Log10(lo))), int(math.Ceil(math.Log10(hi)))
	decades := 0
	for e := first; e <= last; e++ {
		if v := math.Pow10(e); v >= lo && v <= hi {
			decades++
		}
	}
	var ticks []plot.Tick
	for e := first; e <= last; e++ {
		base := math.Pow10(e)
		for m := 1; m < 10; m++ {
			v := base * float64(m)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || (decades < 3 && (m == 2 || m == 5)) {
				t.Label = formatTick(v)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

func formatTick(v float64) string {
	// Six significant digits hide the binary noise of tick arithmetic (0.30000000000000004, 4.9999999999999996e-06);
	// 'g' switches to an exponent below 1e-4 and from 1e6 on.
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func render(p *plot.Plot, w, h vg.Length, format, file string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("drawing failed: %v", r)
		}
	}()
	var wt io.WriterTo
	if format == "png" {
		// gonum's default is 96 dpi; 144 keeps the small fonts crisp.
		c := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(pngDPI))}
		p.Draw(draw.New(c))
		wt = c
	} else {
		var err error
		if wt, err = p.WriterTo(w, h, format); err != nil {
			return err
		}
	}
	return fileio.Write(file, func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	})
}

type valueRange struct{ lo, hi float64 }

func newRange() valueRange { return valueRange{lo: math.Inf(1), hi: math.Inf(-1)} }

func (r *valueRange) add(v float64) {
	r.lo = math.Min(r.lo, v)
	r.hi = math.Max(r.hi, v)
}

func (r valueRange) empty() bool { return r.lo > r.hi }

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
