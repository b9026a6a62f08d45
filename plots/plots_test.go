package plots

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

func TestLinesWritesPNGAndSVG(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "escape")
	var x, y []float64
	for i := 0; i <= 10; i++ {
		l := math.Pow(10, -3+0.15*float64(i))
		x = append(x, l)
		y = append(y, 3/l)
	}
	err := Lines(path, "escape steps", "λ", "steps", true, true, []Series{
		{Name: "gd L=3", X: x, Y: y, Points: true},
		{Name: "fit slope -1.00", X: x, Y: y, Color: 1},
		{Name: "predicted", X: x, Y: y, Dashed: true, Color: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	img := readPNG(t, path+".png")
	b := img.Bounds()
	if b.Dx() < 300 || b.Dy() < 200 {
		t.Fatalf("PNG is %dx%d, want a readable size", b.Dx(), b.Dy())
	}
	// The first palette colour must actually appear: the markers and the fit were drawn.
	want := Color(0)
	wr, wg, wb, _ := want.RGBA()
	colored := 0
	for py := b.Min.Y; py < b.Max.Y; py++ {
		for px := b.Min.X; px < b.Max.X; px++ {
			r, g, bl, _ := img.At(px, py).RGBA()
			if near(r, wr) && near(g, wg) && near(bl, wb) {
				colored++
			}
		}
	}
	if colored < 100 {
		t.Fatalf("only %d pixels in the series colour: the series was not drawn", colored)
	}
	svg, err := os.ReadFile(path + ".svg")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"<svg", "gd L=3", "fit slope -1.00", "escape steps"} {
		if !strings.Contains(string(svg), s) {
			t.Errorf("%s.svg lacks %q", path, s)
		}
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only escape.png and escape.svg", names)
	}
}

func near(a, b uint32) bool {
	d := int(a>>8) - int(b>>8)
	return d > -12 && d < 12
}

func TestLogAxesDropNonPositivePoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loss")
	err := Lines(path, "", "step", "loss", false, true, []Series{
		{Name: "loss", X: []float64{0, 1, 2, 3}, Y: []float64{1, 0, math.NaN(), 0.5}},
	})
	if err != nil {
		t.Fatalf("points with y ≤ 0 or NaN on a log axis should be skipped, got %v", err)
	}
	err = Lines(path, "", "step", "loss", true, true, []Series{{Name: "none", X: []float64{0, -1}, Y: []float64{1, 2}}})
	if err == nil || !strings.Contains(err.Error(), "no point") {
		t.Fatalf("want an error for a figure with nothing to draw, got %v", err)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	err := Lines(filepath.Join(dir, "bad"), "", "", "", false, false, []Series{{Name: "s", X: []float64{1, 2}, Y: []float64{1}}})
	if err == nil || !strings.Contains(err.Error(), `"s"`) || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("want an error naming the file and the series, got %v", err)
	}
	err = Lines(filepath.Join(dir, "missing", "dir", "p"), "", "", "", false, false, []Series{{X: []float64{1}, Y: []float64{1}}})
	if err == nil {
		t.Fatal("want an error for a directory that does not exist")
	}
	if err := Lines("", "", "", "", false, false, nil); err == nil {
		t.Fatal("want an error for an empty path")
	}
	// A single point and constant data still give a valid (non-degenerate) axis.
	if err := Lines(filepath.Join(dir, "one"), "", "", "", true, true, []Series{{X: []float64{5}, Y: []float64{7}, Points: true}}); err != nil {
		t.Fatal(err)
	}
}

func TestLogTicksLabelNarrowRanges(t *testing.T) {
	labels := func(lo, hi float64) []string {
		var out []string
		for _, tk := range (logTicks{}).Ticks(lo, hi) {
			if tk.Value < lo || tk.Value > hi {
				t.Errorf("tick %g outside [%g, %g]", tk.Value, lo, hi)
			}
			if tk.Label != "" {
				out = append(out, tk.Label)
			}
		}
		return out
	}
	if got := labels(35, 130); strings.Join(got, ",") != "50,100" {
		t.Errorf("labels in [35, 130] = %v, want [50 100]", got)
	}
	if got := labels(1e-4, 0.2); strings.Join(got, ",") != "0.0001,0.001,0.01,0.1" {
		t.Errorf("labels in [1e-4, 0.2] = %v", got)
	}
	if got := labels(1.5e-6, 2.2e-5); strings.Join(got, ",") != "2e-06,5e-06,1e-05,2e-05" {
		t.Errorf("labels in [1.5e-6, 2.2e-5] = %v", got)
	}
	if got := labels(0, 1); got != nil {
		t.Errorf("a non-positive range has no log ticks, got %v", got)
	}
}

func TestLinearTickLabelsHaveNoTrailingZeros(t *testing.T) {
	var labels []string
	for _, tk := range (linearTicks{}).Ticks(0, 5000) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if len(labels) < 2 {
		t.Fatalf("too few labels: %v", labels)
	}
	for _, l := range labels {
		if strings.Contains(l, ".") {
			t.Errorf("label %q of an integer tick has a decimal point (all: %v)", l, labels)
		}
	}
	for _, tk := range (linearTicks{}).Ticks(0, 0.9) {
		if strings.Contains(tk.Label, "0000000") {
			t.Errorf("label %q shows binary noise", tk.Label)
		}
	}
}

// The palette's colours are far apart (no two keys look alike), and Keys gives distinct keys distinct entries.
func TestPaletteColoursAreDistinct(t *testing.T) {
	for i := 0; i < Colors; i++ {
		for j := i + 1; j < Colors; j++ {
			a, b := Color(i).(color.RGBA), Color(j).(color.RGBA)
			d := math.Abs(float64(a.R)-float64(b.R)) + math.Abs(float64(a.G)-float64(b.G)) + math.Abs(float64(a.B)-float64(b.B))
			if d < 75 { // Okabe–Ito's orange and vermillion, the closest pair, are 82 apart
				t.Errorf("palette entries %d %v and %d %v are too close (distance %g)", i, a, j, b, d)
			}
		}
	}
	var labels []string
	for i := range Colors {
		labels = append(labels, fmt.Sprintf("opt%d", i), fmt.Sprintf("opt%d", i)) // each twice
	}
	keys := Keys(labels)
	if len(keys) != Colors {
		t.Fatalf("Keys gave %d keys for %d distinct labels", len(keys), Colors)
	}
	seen := map[color.Color]string{}
	for l, k := range keys {
		c := Color(k - 1)
		if other, ok := seen[c]; ok {
			t.Errorf("%s and %s share the colour %v", l, other, c)
		}
		seen[c] = l
	}
	if Keys([]string{"b", "a", "b"})["b"] != 1 {
		t.Error("Keys must number in order of first appearance")
	}
}

// manySeries is a figure of n series with long names, split into the given number of panels.
func manySeries(n, panels int) Figure {
	f := Figure{Title: "Eval loss", XLabel: "step", YLabel: "loss"}
	for i := range n {
		var x, y []float64
		for s := range 40 {
			x = append(x, float64(s))
			y = append(y, 3-float64(i)*0.1*math.Log1p(float64(s)))
		}
		f.Series = append(f.Series, Series{Name: fmt.Sprintf("steepest:1.5 lr=0.001 λ=0.01 series %d", i), X: x, Y: y,
			Color: i%3 + 1, Dash: i / 3, Panel: fmt.Sprintf("panel %d", i%panels)})
	}
	return f
}

func overlaps(a, b vg.Rectangle) bool {
	return a.Min.X < b.Max.X && b.Min.X < a.Max.X && a.Min.Y < b.Max.Y && b.Min.Y < a.Max.Y
}

// The legend is drawn beside the data, never over them: its area holds it, meets no panel's data area, and lies on
// the page.
func TestLegendIsOutsideTheData(t *testing.T) {
	for _, tc := range []struct{ n, panels int }{{1, 1}, {6, 1}, {12, 4}, {30, 6}} {
		c, err := manySeries(tc.n, tc.panels).compose()
		if err != nil {
			t.Fatal(err)
		}
		if c.legend == nil {
			t.Fatalf("%d series: no legend", tc.n)
		}
		// gonum draws a top-left legend from its area's top-left corner; the area must hold all of it.
		box, size := c.legendArea, c.legend.Rectangle(draw.Canvas{}).Size()
		if box.Size().X < size.X || box.Size().Y < size.Y {
			t.Errorf("%d series: legend of size %v spills out of its area %v", tc.n, size, box)
		}
		page := vg.Rectangle{Max: vg.Point{X: c.Width, Y: c.Height}}
		if box.Min.X < 0 || box.Min.Y < 0 || box.Max.X > page.Max.X || box.Max.Y > page.Max.Y {
			t.Errorf("%d series: legend %v is not on the page %v", tc.n, box, page)
		}
		for i, d := range c.dataAreas() {
			if overlaps(box, d) {
				t.Errorf("%d series: legend %v overlaps the data area %v of panel %d", tc.n, box, d, i)
			}
			if d.Size().X < vg.Inch || d.Size().Y < vg.Inch {
				t.Errorf("%d series: panel %d's data area %v is too small to read", tc.n, i, d)
			}
		}
	}
}

// Series with different Panel values are drawn as a grid of panels that do not overlap and share axis ranges.
func TestPanelsAreSmallMultiples(t *testing.T) {
	f := manySeries(12, 4)
	f.Series[0].Y[5] = 100 // one panel's outlier sets every panel's y range
	c, err := f.compose()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.panels) != 4 {
		t.Fatalf("%d panels, want 4", len(c.panels))
	}
	for i, p := range c.panels {
		if p.Title.Text != fmt.Sprintf("panel %d", i) {
			t.Errorf("panel %d is titled %q", i, p.Title.Text)
		}
		if p.Y.Max < 100 || p.Y.Max != c.panels[0].Y.Max || p.X.Min != c.panels[0].X.Min {
			t.Errorf("panel %d's axes (x %g…%g, y %g…%g) differ from panel 0's", i, p.X.Min, p.X.Max, p.Y.Min, p.Y.Max)
		}
		for j := i + 1; j < len(c.areas); j++ {
			if overlaps(c.areas[i], c.areas[j]) {
				t.Errorf("panels %d and %d overlap", i, j)
			}
		}
	}
	// A legend entry per name, not per series drawn.
	f.Series[1].Name = f.Series[0].Name
	c, err = f.compose()
	if err != nil {
		t.Fatal(err)
	}
	single, err := manySeries(12, 1).compose()
	if err != nil {
		t.Fatal(err)
	}
	if len(single.panels) != 1 {
		t.Fatalf("series without distinct panels drew %d panels", len(single.panels))
	}
	if h, hs := c.legend.Rectangle(draw.Canvas{}).Size().Y, single.legend.Rectangle(draw.Canvas{}).Size().Y; !(h < hs) {
		t.Errorf("a repeated name got its own legend entry (legend height %v, with 12 names %v)", h, hs)
	}
	path := filepath.Join(t.TempDir(), "grid")
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	img := readPNG(t, path+".png")
	if w := img.Bounds().Dx(); w < 2*300 {
		t.Errorf("the grid's PNG is %d pixels wide", w)
	}
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}
