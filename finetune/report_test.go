package finetune

import (
	"bytes"
	"encoding/base64"
	"image/color"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/plots"
)

// reportFixture is a sweep folder as the sweep leaves it, with columns this package does not write (seed,
// lower_bound: the report shows whatever runs.csv holds), a hostile run name, fits.csv, two command lines and
// two plots.
func reportFixture(t *testing.T) (string, *SweepResult) {
	t.Helper()
	dir := t.TempDir()
	res := &SweepResult{Out: dir}
	for _, name := range []string{"sgd_a", "sign_b"} {
		if err := os.MkdirAll(filepath.Join(dir, "runs", name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "runs", name, "config.json"), `{"backend": "go:ops_sequential", "dtype": "f32"}`)
		res.Runs = append(res.Runs, SweepRun{Name: name})
	}
	writeFile(t, filepath.Join(dir, "runs.csv"), "name,optimizer,seed,lr,escape_step,lower_bound\n"+
		"sgd_a,sgd,1,0.001,,true\n"+
		"\"sign_<b>&\"\"x\"\"\",sign,1,0.001,12,false\n")
	writeFile(t, filepath.Join(dir, "fits.csv"), "optimizer,q,depth,lr,kind,points,lower_bounds,slope,ci_low,ci_high,"+
		"predicted_regime,predicted_exponent,agrees\n"+
		"sgd,2,3,0.01,power,4,0,-1.02,-1.2,-0.85,power,-1,true\n"+
		"sign,1,3,0.01,power,4,1,0.4,0.2,0.6,bounded,0,false\n")
	if err := RecordSweepCommand(dir, "saddle escape --out="+dir+" --optimizers=sgd,sign"); err != nil {
		t.Fatal(err)
	}
	if err := RecordSweepCommand(dir, "saddle escape --out="+dir+" --optimizers=sgd,sign --steps=9"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"zeta_extra", "loss"} {
		err := plots.Lines(filepath.Join(dir, name), name, "step", "loss", false, false, []plots.Series{
			{Name: "sgd", X: []float64{0, 1, 2}, Y: []float64{3, 2, 1}, Color: 1},
			{Name: "sign", X: []float64{0, 1, 2}, Y: []float64{3, 1, 0.5}, Color: 2},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir, res
}

func TestReportHoldsEverythingInOneFile(t *testing.T) {
	dir, res := reportFixture(t)
	if err := writeReport(dir, res); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	page := string(data)
	for _, want := range []string{
		"<th>seed</th>", "<th>lower_bound</th>", // runs.csv's columns, whatever they are
		"sign_&lt;b&gt;&amp;&#34;x&#34;",                          // escaped, not markup
		"<th>slope [ci_low, ci_high]</th>", "-1.02 [-1.2, -0.85]", // the fitted slope with its interval
		`<td class="good">true</td>`, `<td class="bad">false</td>`,
		"--optimizers=sgd,sign\n", "--steps=9\n", // both invocations
		"<th>Go</th><td>" + runtime.Version(), "go:ops_sequential", "f32",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	if strings.Contains(page, "<b>&") {
		t.Error("a run name reached the page unescaped")
	}
	// The slope sits next to the prediction: slope, predicted_exponent, predicted_regime, agrees.
	if !regexp.MustCompile(`slope \[ci_low, ci_high\]</th><th>predicted_exponent</th><th>predicted_regime</th><th>agrees</th>`).MatchString(page) {
		t.Error("the fits table does not put the fitted slope beside the prediction")
	}
	// Both plots are inline, the sweep's own first, byte for byte the PNG files; nothing is linked.
	imgs := regexp.MustCompile(`<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(imgs) != 2 || imgs[0][2] != "loss.png" || imgs[1][2] != "zeta_extra.png" {
		t.Fatalf("want loss.png then zeta_extra.png inline, got %d images", len(imgs))
	}
	for _, m := range imgs {
		got, err := base64.StdEncoding.DecodeString(m[1])
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(filepath.Join(dir, m[2]))
		if !bytes.Equal(got, want) {
			t.Errorf("the inline %s differs from the file", m[2])
		}
	}
	if m := regexp.MustCompile(`(?i)(src|href)="(https?:|file:|//|[a-z_]+\.(png|svg|css|js))`).FindString(page); m != "" {
		t.Errorf("report.html refers to something outside it: %s", m)
	}
}

// Without fits.csv the report shows the sweep's own slopes; a broken runs.csv is an error naming it and the line.
func TestReportFallbacksAndBadInput(t *testing.T) {
	dir, res := reportFixture(t)
	if err := os.Remove(filepath.Join(dir, "fits.csv")); err != nil {
		t.Fatal(err)
	}
	res.Slopes = []SlopeFit{{Optimizer: "sgd", LR: 0.01, Depth: 3, Init: "saddle", Points: 3, Slope: -0.987, Predicted: ptr("power law, slope -1")}}
	if err := writeReport(dir, res); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "report.html"))
	for _, want := range []string{"no fits.csv", "-0.987", "power law, slope -1"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("report.html without fits.csv lacks %q", want)
		}
	}
	writeFile(t, filepath.Join(dir, "runs.csv"), "name,lr\n\"unterminated,1\n")
	err := writeReport(dir, res)
	if err == nil || !strings.Contains(err.Error(), "runs.csv") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("want an error naming runs.csv and line 2, got %v", err)
	}
}

// The report opens in a real browser (headless chromium, no network) from a folder of its own: no console
// message, no broken image, nothing fetched, and the screenshot shows the page. Tampered copies prove that the
// check sees a broken image, a script error and a file beside the page.
func TestReportRendersInChromium(t *testing.T) {
	testenv.Chromium(t)
	dir, res := reportFixture(t)
	if err := writeReport(dir, res); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "report.html")
	p := testenv.LoadInBrowser(t, path, 1200, 1600)
	if len(p.Console) > 0 || len(p.Broken) > 0 || len(p.External) > 0 {
		t.Errorf("console %q, broken images %q, fetched %q", p.Console, p.Broken, p.External)
	}
	if n := strings.Count(p.DOM, "<tr>"); n < 2+2+1 { // two runs, two fits, their headers
		t.Errorf("the rendered page has %d table rows", n)
	}
	b := p.Screenshot.Bounds()
	if b.Dx() != 1200 || b.Dy() != 1600 {
		t.Errorf("screenshot is %v", b)
	}
	colours, ink := map[color.RGBA]bool{}, 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := p.Screenshot.At(x, y).RGBA()
			colours[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), 0}] = true
			if r < 0xe000 || g < 0xe000 || bl < 0xe000 {
				ink++
			}
		}
	}
	if ink < b.Dx()*b.Dy()/4/50 || len(colours) < 20 {
		t.Errorf("the screenshot looks blank: %d of %d sampled pixels inked, %d colours", ink, b.Dx()*b.Dy()/4, len(colours))
	}

	page, _ := os.ReadFile(path)
	tamper := func(name, from, to string) testenv.Page {
		s := string(page)
		if !strings.Contains(s, from) {
			t.Fatalf("%s: the report has no %q", name, from)
		}
		bad := filepath.Join(t.TempDir(), name+".html")
		writeFile(t, bad, strings.Replace(s, from, to, 1))
		return testenv.LoadInBrowser(t, bad, 0, 0)
	}
	if p := tamper("corrupt", "data:image/png;base64,", "data:image/png;base64,AAAA"); len(p.Broken) != 1 || len(p.Console) == 0 {
		t.Errorf("a corrupt inline image: broken %q, console %q", p.Broken, p.Console)
	}
	if p := tamper("beside", "</h1>", `</h1><img src="loss.png" alt="beside">`); len(p.Broken) != 1 {
		t.Errorf("an image file beside the page: broken %q", p.Broken)
	}
	if p := tamper("script", "</h1>", "</h1><script>noSuchFunction();</script>"); len(p.Console) == 0 {
		t.Error("a script error reached no console line")
	}
}
