package plots

import (
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/plotutil"
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
	f, err := os.Open(path + ".png")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s.png: %v", path, err)
	}
	b := img.Bounds()
	if b.Dx() < 300 || b.Dy() < 200 {
		t.Fatalf("PNG is %dx%d, want a readable size", b.Dx(), b.Dy())
	}
	// The first palette colour must actually appear: the markers and the fit were drawn.
	want := plotutil.Color(0)
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
