// Package plots draws small line and scatter charts (optionally on log axes) and writes each one as both PNG and
// SVG. It is a thin wrapper over gonum.org/v1/plot for saddle's reports: escape steps against λ, loss and ‖ΔW‖
// against the step, balance quantities.
package plots

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/saddle-ml/saddle/internal/fileio"
)

const pngDPI = 144

// Series is one curve. X and Y must have the same length. Points draws markers only (measurements); otherwise the
// points are joined by a line (fits, trajectories), dashed if Dashed (predictions) or in the pattern Dash picks.
type Series struct {
	Name   string
	X, Y   []float64
	Points bool
	Dashed bool
	// Dash picks the line's pattern (Dashes): 0 is solid unless Dashed, 1 dashed, 2 dotted, 3 dash-dot and so on;
	// for Points it picks the marker shape instead.
	Dash int
	// Color picks the palette entry (1-based, see Color) so that e.g. a fitted line matches its measured points;
	// 0 means "by position in the list".
	Color int
	// Panel names the panel the series is drawn in. Series with different Panel values are drawn as small
	// multiples: a grid of panels with shared axis ranges, titled by Panel, and one legend beside them.
	Panel string
}

// Figure is a whole chart. Lines covers the common case; build a Figure for the rest. The legend (the series'
// names, each once) sits outside the data, to the right of the panels.
type Figure struct {
	Title, XLabel, YLabel string
	LogX, LogY            bool
	Series                []Series
	// Width and Height in inches of one panel; 0 means 6 × 4 for a single panel and 4 × 3 for small multiples.
	Width, Height float64
	// Fixed axis ranges, used when Min < Max (points outside are clipped); otherwise the data decide.
	XMin, XMax, YMin, YMax float64
}

// palette is Okabe and Ito's colour-blind-safe set (yellow last: it is faint on white), then four of Paul Tol's
// muted colours; figures with more colour keys than entries reuse them.
var palette = []color.RGBA{
	{0x00, 0x72, 0xB2, 0xFF}, // blue
	{0xD5, 0x5E, 0x00, 0xFF}, // vermillion
	{0x00, 0x9E, 0x73, 0xFF}, // bluish green
	{0xCC, 0x79, 0xA7, 0xFF}, // reddish purple
	{0xE6, 0x9F, 0x00, 0xFF}, // orange
	{0x56, 0xB4, 0xE9, 0xFF}, // sky blue
	{0x00, 0x00, 0x00, 0xFF}, // black
	{0xF0, 0xE4, 0x42, 0xFF}, // yellow
	{0x88, 0x22, 0x55, 0xFF}, // wine
	{0x44, 0xAA, 0x99, 0xFF}, // teal
	{0x99, 0x99, 0x33, 0xFF}, // olive
	{0x33, 0x22, 0x88, 0xFF}, // indigo
}

// Colors is the number of distinct colours: up to that many colour keys never share one.
var Colors = len(palette)

// Color is palette entry i (0-based), wrapping around.
func Color(i int) color.Color { return palette[((i%len(palette))+len(palette))%len(palette)] }

// dashes are the line patterns Series.Dash picks (in points); solid first.
var dashes = [][]float64{nil, {6, 3}, {1.5, 2.5}, {7, 2.5, 1.5, 2.5}, {12, 3}, {7, 2, 1.5, 2, 1.5, 2}}

// Dashes is the number of distinct line patterns.
var Dashes = len(dashes)

// Keys numbers the distinct keys in order of first appearance (1-based, for Series.Color or, less one,
// Series.Dash): give it the optimizer of every series and each optimizer keeps one colour in every plot.
func Keys(keys []string) map[string]int {
	m := map[string]int{}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			m[k] = len(m) + 1
		}
	}
	return m
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
	c, err := f.compose()
	if err != nil {
		return fmt.Errorf("plots: %s: %w", path, err)
	}
	for _, format := range []string{"png", "svg"} {
		if err := render(c, format, path+"."+format); err != nil {
			return fmt.Errorf("plots: %s.%s: %w", path, format, err)
		}
	}
	return nil
}

// composed is a figure laid out on a page of Width × Height: each panel's plot and the rectangle it is drawn in,
// the title above them and the legend to their right.
type composed struct {
	Width, Height vg.Length
	title         string
	titleStyle    text.Style
	panels        []*plot.Plot
	areas         []vg.Rectangle
	legend        *plot.Legend // nil when no series has a name
	legendArea    vg.Rectangle
}

const gap = 0.15 * vg.Inch

func (f Figure) compose() (c *composed, err error) {
	defer func() { // gonum/plot reports some bad input by panicking; keep that inside the package
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("drawing failed: %v", r)
		}
	}()
	var names []string
	byPanel := map[string][]int{}
	for i, s := range f.Series {
		if len(s.X) != len(s.Y) {
			return nil, fmt.Errorf("series %d (%q): %d x values but %d y values", i, s.Name, len(s.X), len(s.Y))
		}
		if _, ok := byPanel[s.Panel]; !ok {
			names = append(names, s.Panel)
		}
		byPanel[s.Panel] = append(byPanel[s.Panel], i)
	}
	multi := len(names) > 1
	xr, yr := newRange(), newRange()
	for _, s := range f.Series {
		for j := range s.X {
			if x, y := s.X[j], s.Y[j]; f.shows(x, y) {
				xr.add(x)
				yr.add(y)
			}
		}
	}
	if xr.empty() {
		return nil, errors.New("no point to draw (log axes leave out values ≤ 0)")
	}
	c = &composed{title: f.Title}
	leg := plot.NewLegend()
	leg.Left, leg.Top = true, true
	leg.ThumbnailWidth = 0.35 * vg.Inch
	leg.Padding = vg.Points(2)
	inLegend := map[string]bool{}
	for _, name := range names {
		p := plot.New()
		c.titleStyle = p.Title.TextStyle
		p.Title.Text = f.Title
		if multi {
			p.Title.Text = name
			p.Title.TextStyle.Font.Size = p.X.Label.TextStyle.Font.Size
		}
		p.X.Label.Text = f.XLabel
		p.Y.Label.Text = f.YLabel
		p.Add(plotter.NewGrid())
		for _, i := range byPanel[name] {
			th, err := f.add(p, i)
			if err != nil {
				return nil, err
			}
			if s := f.Series[i]; th != nil && s.Name != "" && !inLegend[s.Name] {
				inLegend[s.Name] = true
				leg.Add(s.Name, th)
			}
		}
		setAxis(&p.X, xr, f.LogX)
		setAxis(&p.Y, yr, f.LogY)
		if f.XMin < f.XMax && (!f.LogX || f.XMin > 0) {
			p.X.Min, p.X.Max = f.XMin, f.XMax
		}
		if f.YMin < f.YMax && (!f.LogY || f.YMin > 0) {
			p.Y.Min, p.Y.Max = f.YMin, f.YMax
		}
		c.panels = append(c.panels, p)
	}

	// Page: [title] above a grid of panels, the legend in a column to the right of the grid.
	pw, ph := vg.Length(f.Width)*vg.Inch, vg.Length(f.Height)*vg.Inch
	cols, rows := 1, 1
	if multi {
		cols = min(len(names), max(2, int(math.Ceil(math.Sqrt(float64(len(names)))))), 4)
		rows = (len(names) + cols - 1) / cols
		if pw <= 0 {
			pw = 4 * vg.Inch
		}
		if ph <= 0 {
			ph = 3 * vg.Inch
		}
	} else {
		if pw <= 0 {
			pw = 6 * vg.Inch
		}
		if ph <= 0 {
			ph = 4 * vg.Inch
		}
	}
	var titleH vg.Length
	if multi && f.Title != "" {
		titleH = c.titleStyle.Rectangle(f.Title).Size().Y + gap
	}
	gridW, gridH := vg.Length(cols)*pw, vg.Length(rows)*ph
	var legW, legH vg.Length
	if len(inLegend) > 0 {
		c.legend = &leg
		size := leg.Rectangle(draw.Canvas{}).Size()
		legW, legH = size.X+2*gap, size.Y
	}
	c.Width = gridW + legW
	c.Height = titleH + max(gridH, legH+gap)
	top := c.Height - titleH
	for k := range names {
		x, y := vg.Length(k%cols)*pw, top-vg.Length(k/cols+1)*ph
		c.areas = append(c.areas, vg.Rectangle{Min: vg.Point{X: x, Y: y}, Max: vg.Point{X: x + pw - gap/2, Y: y + ph - gap/2}})
	}
	if c.legend != nil {
		c.legendArea = vg.Rectangle{Min: vg.Point{X: gridW + gap, Y: top - gap - legH}, Max: vg.Point{X: c.Width - gap, Y: top - gap}}
	}
	return c, nil
}

// shows reports whether the figure can draw the point (finite, and positive on a log axis).
func (f Figure) shows(x, y float64) bool {
	return finite(x) && finite(y) && !(f.LogX && x <= 0) && !(f.LogY && y <= 0)
}

// add draws series i into p and returns its legend thumbnail (nil when it has no point to show).
func (f Figure) add(p *plot.Plot, i int) (plot.Thumbnailer, error) {
	s := f.Series[i]
	pts := make(plotter.XYs, 0, len(s.X))
	for j := range s.X {
		if f.shows(s.X[j], s.Y[j]) {
			pts = append(pts, plotter.XY{X: s.X[j], Y: s.Y[j]})
		}
	}
	if len(pts) == 0 {
		return nil, nil
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
		sc.GlyphStyle = draw.GlyphStyle{Color: Color(c), Shape: plotutil.Shape(s.Dash), Radius: vg.Points(3)}
		p.Add(sc)
		return sc, nil
	}
	l, err := plotter.NewLine(pts)
	if err != nil {
		return nil, fmt.Errorf("series %d (%q): %w", i, s.Name, err)
	}
	l.LineStyle.Color = Color(c)
	l.LineStyle.Width = vg.Points(1.5)
	d := s.Dash
	if d == 0 && s.Dashed {
		d = 1
	}
	for _, v := range dashes[d%len(dashes)] {
		l.LineStyle.Dashes = append(l.LineStyle.Dashes, vg.Points(v))
	}
	p.Add(l)
	return l, nil
}

// draw draws the composed figure on dc, whose size is c.Width × c.Height.
func (c *composed) draw(dc draw.Canvas) {
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	if len(c.panels) > 1 && c.title != "" {
		descent := c.titleStyle.FontExtents().Descent
		dc.FillText(c.titleStyle, vg.Point{X: (c.Width - c.legendArea.Size().X) / 2, Y: c.Height + descent}, c.title)
	}
	for i, p := range c.panels {
		p.Draw(draw.Canvas{Canvas: dc.Canvas, Rectangle: c.areas[i]})
	}
	if c.legend != nil {
		c.legend.Draw(draw.Canvas{Canvas: dc.Canvas, Rectangle: c.legendArea})
	}
}

// dataAreas are the rectangles inside the panels' axes where the data are drawn.
func (c *composed) dataAreas() []vg.Rectangle {
	out := make([]vg.Rectangle, len(c.panels))
	for i, p := range c.panels {
		out[i] = p.DataCanvas(draw.Canvas{Rectangle: c.areas[i]}).Rectangle
	}
	return out
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

func render(c *composed, format, file string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("drawing failed: %v", r)
		}
	}()
	var wt io.WriterTo
	if format == "png" {
		// gonum's default is 96 dpi; 144 keeps the small fonts crisp.
		cv := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(c.Width, c.Height), vgimg.UseDPI(pngDPI))}
		c.draw(draw.New(cv))
		wt = cv
	} else {
		cv := vgsvg.New(c.Width, c.Height)
		c.draw(draw.New(cv))
		wt = cv
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
