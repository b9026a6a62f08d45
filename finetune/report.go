package finetune

import (
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// Files of a sweep's folder that the report reads besides runs.csv and the plots: the command lines that ran the
// sweep (RecordSweepCommand) and the fits with confidence intervals, when the sweep wrote them.
const (
	reportFile  = "report.html"
	commandFile = "command.txt"
	fitsFile    = "fits.csv"
)

// RecordSweepCommand adds the command line that starts (or resumes) the sweep in out to out/command.txt, one line
// per invocation, for the report.
func RecordSweepCommand(out, command string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	path := filepath.Join(out, commandFile)
	old, err := fileio.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	command = strings.ReplaceAll(command, "\n", " ")
	return fileio.WriteFile(path, append(old, command+"\n"...))
}

// reportTable is a table as the report shows it; Class marks a column's cells (numbers are right-aligned).
type reportTable struct {
	Header []string
	Rows   [][]reportCell
}

type reportCell struct {
	Text, Class string
}

type reportPlot struct {
	Name, Caption string
	Src           template.HTMLAttr // src="data:…": inline, so that the page needs no other file
}

type reportPage struct {
	Title     string
	Generated string
	Commands  []string
	Versions  [][2]string
	Runs      *reportTable
	Fits      *reportTable
	FitsNote  string
	Plots     []reportPlot
}

// plotCaptions are the sweep's own plots, in the order the report shows them; other PNGs in the folder follow.
var plotCaptions = []struct{ name, caption string }{
	{"loss", "Loss against the step, one curve per run: colour by optimizer, line pattern by the first setting that varies."},
	{"delta_w", "Mean ‖ΔW‖/‖W‖ of the adapters against the step (log scale): leaving the saddle is the steep rise."},
	{"escape_vs_lambda", "Escape step against the init scale λ (log–log), with a fitted line where a series has enough points."},
}

// writeReport writes out/report.html: one self-contained page (no script, style sheet, font or image outside it)
// with the command lines, the versions, the fits, the plots and the runs table, all read from the sweep's folder.
func writeReport(out string, res *SweepResult) error {
	page := reportPage{Title: "saddle escape sweep: " + filepath.Base(filepath.Clean(out)),
		Generated: time.Now().UTC().Format(time.RFC3339)}
	var err error
	if page.Commands, err = readLines(filepath.Join(out, commandFile)); err != nil {
		return err
	}
	if page.Versions, err = reportVersions(out, res.Runs); err != nil {
		return err
	}
	if page.Runs, err = readCSVTable(filepath.Join(out, "runs.csv")); err != nil {
		return err
	}
	page.Fits, err = readCSVTable(filepath.Join(out, fitsFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		page.Fits, page.FitsNote = slopeTable(res.Slopes), "(no "+fitsFile+": least-squares slopes without confidence intervals)"
	case err != nil:
		return err
	default:
		page.Fits = fitsView(page.Fits)
	}
	if page.Plots, err = reportPlots(out); err != nil {
		return err
	}
	var b bytes.Buffer
	if err := reportTemplate.Execute(&b, page); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(out, reportFile), err)
	}
	return fileio.WriteFile(filepath.Join(out, reportFile), b.Bytes())
}

// readLines returns the non-empty lines of a text file, none if it does not exist.
func readLines(path string) ([]string, error) {
	data, err := fileio.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// readCSVTable reads a CSV file with a header line into a table, whatever its columns.
func readCSVTable(path string) (*reportTable, error) {
	data, err := fileio.ReadFile(path)
	if err != nil {
		return nil, err
	}
	records, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(records) == 0 {
		return nil, fmt.Errorf("%s: empty (want a header line)", path)
	}
	t := &reportTable{Header: records[0]}
	for _, rec := range records[1:] {
		row := make([]reportCell, len(rec))
		for i, v := range rec {
			row[i] = textCell(v)
		}
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}

func textCell(v string) reportCell {
	if v == "" {
		return reportCell{Text: "—", Class: "none"}
	}
	if _, err := strconv.ParseFloat(v, 64); err == nil {
		return reportCell{Text: v, Class: "num"}
	}
	return reportCell{Text: v}
}

// fitsView shows slope, ci_low and ci_high as one column "slope [ci_low, ci_high]" and moves it, the prediction
// and the verdict (predicted_exponent, predicted_regime, agrees, where present) to the end, side by side.
func fitsView(t *reportTable) *reportTable {
	col := map[string]int{}
	for i, h := range t.Header {
		col[h] = i
	}
	_, hasSlope := col["slope"]
	iLo, hasLo := col["ci_low"]
	iHi, hasHi := col["ci_high"]
	tail := []string{"slope", "predicted_exponent", "predicted_regime", "agrees"}
	out := &reportTable{}
	var keep []int
	for i, h := range t.Header {
		if !slices.Contains(tail, h) && !(hasSlope && hasLo && hasHi && (h == "ci_low" || h == "ci_high")) {
			keep = append(keep, i)
			out.Header = append(out.Header, h)
		}
	}
	for _, h := range tail {
		if i, ok := col[h]; ok {
			keep = append(keep, i)
			if h == "slope" && hasLo && hasHi {
				h = "slope [ci_low, ci_high]"
			}
			out.Header = append(out.Header, h)
		}
	}
	for _, row := range t.Rows {
		cell := func(i int) reportCell {
			if i < len(row) {
				return row[i]
			}
			return textCell("")
		}
		var r []reportCell
		for _, i := range keep {
			c := cell(i)
			switch t.Header[i] {
			case "slope":
				if hasLo && hasHi && c.Class == "num" {
					c.Text = fmt.Sprintf("%s [%s, %s]", c.Text, cell(iLo).Text, cell(iHi).Text)
				}
			case "agrees":
				switch strings.ToLower(c.Text) {
				case "true", "yes":
					c.Class = "good"
				case "false", "no":
					c.Class = "bad"
				}
			}
			r = append(r, c)
		}
		out.Rows = append(out.Rows, r)
	}
	return out
}

// slopeTable is the sweep's own slope fits (runs.json's "slopes") for a folder without fits.csv.
func slopeTable(fits []SlopeFit) *reportTable {
	t := &reportTable{Header: []string{"optimizer", "lr", "depth", "init", "points", "slope", "predicted"}}
	for _, f := range fits {
		pred := ""
		if f.Predicted != nil {
			pred = *f.Predicted
		}
		t.Rows = append(t.Rows, []reportCell{textCell(f.Optimizer), textCell(fmtF(f.LR)), textCell(strconv.Itoa(f.Depth)),
			textCell(f.Init), textCell(strconv.Itoa(f.Points)), textCell(strconv.FormatFloat(f.Slope, 'f', 3, 64)), textCell(pred)})
	}
	return t
}

// reportPlots inlines the folder's PNG plots: the sweep's own first, then any other, by name.
func reportPlots(out string) ([]reportPlot, error) {
	entries, err := os.ReadDir(out)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".png"); ok && e.Type().IsRegular() {
			names = append(names, name)
		}
	}
	rank := func(name string) int {
		for i, p := range plotCaptions {
			if p.name == name {
				return i
			}
		}
		return len(plotCaptions)
	}
	slices.SortStableFunc(names, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	var plotsOut []reportPlot
	for _, name := range names {
		data, err := fileio.ReadFile(filepath.Join(out, name+".png"))
		if err != nil {
			return nil, err
		}
		p := reportPlot{Name: name + ".png", Src: pngSrc(data)}
		if r := rank(name); r < len(plotCaptions) {
			p.Caption = plotCaptions[r].caption
		}
		plotsOut = append(plotsOut, p)
	}
	return plotsOut, nil
}

// pngSrc is the attribute src="data:image/png;base64,…". It is written as a whole attribute because html/template
// would escape each '+' of the base64 text in a URL as "&#43;" (five bytes for one); base64 holds no quote.
func pngSrc(png []byte) template.HTMLAttr {
	return template.HTMLAttr(`src="data:image/png;base64,` + base64.StdEncoding.EncodeToString(png) + `"`)
}

// reportVersions are saddle's module version and VCS revision, the Go toolchain, the GoMLX modules it was built
// with, and the backends and compute dtypes the runs' config.json files name.
func reportVersions(out string, runs []SweepRun) ([][2]string, error) {
	var v [][2]string
	deps := map[string]string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		saddle := strings.TrimSpace(bi.Main.Path + " " + bi.Main.Version)
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if rev := settings["vcs.revision"]; rev != "" {
			saddle += ", revision " + rev
			if settings["vcs.modified"] == "true" {
				saddle += " (with uncommitted changes)"
			}
		} else {
			saddle += ", no VCS revision stamped (built with -buildvcs=false, by go test, or outside a git checkout)"
		}
		v = append(v, [2]string{"saddle", saddle})
		if exp := settings["GOEXPERIMENT"]; exp != "" {
			v = append(v, [2]string{"GOEXPERIMENT", exp})
		}
		for _, d := range bi.Deps {
			deps[d.Path] = d.Version
		}
	} else {
		v = append(v, [2]string{"saddle", "unknown (built without module information)"})
	}
	v = append(v, [2]string{"Go", runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH})
	for _, m := range []string{"github.com/gomlx/gomlx", "github.com/gomlx/compute", "github.com/gomlx/go-xla"} {
		if ver, ok := deps[m]; ok {
			v = append(v, [2]string{m, ver})
		}
	}
	var backends, dtypes []string
	for _, r := range runs {
		path := filepath.Join(out, "runs", r.Name, "config.json")
		data, err := fileio.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var c struct {
			Backend string `json:"backend"`
			DType   string `json:"dtype"`
		}
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if !slices.Contains(backends, c.Backend) {
			backends = append(backends, c.Backend)
		}
		if !slices.Contains(dtypes, c.DType) {
			dtypes = append(dtypes, c.DType)
		}
	}
	v = append(v, [2]string{"backend", strings.Join(backends, ", ")}, [2]string{"compute dtype", strings.Join(dtypes, ", ")})
	return v, nil
}

var reportTemplate = template.Must(template.New(reportFile).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
pre { background: #f4f4f4; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
th { background: #eee; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.none { color: #999; text-align: center; }
td.good { background: #dff0d8; } td.bad { background: #f2dede; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
.note { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="note">Written {{.Generated}} by saddle escape. Everything on this page is inside this one file.</p>
<h2>Command</h2>
{{if .Commands}}<pre id="command">{{range .Commands}}{{.}}
{{end}}</pre>{{if gt (len .Commands) 1}}<p class="note">One line per invocation: a rerun with the same --out resumes the sweep.</p>{{end}}
{{else}}<p class="note">Not recorded (no command.txt).</p>{{end}}
<h2>Versions</h2>
<table id="versions">{{range .Versions}}<tr><th>{{index . 0}}</th><td>{{index . 1}}</td></tr>
{{end}}</table>
<section id="fits">
<h2>Fits against the predictions</h2>
{{with .FitsNote}}<p class="note">{{.}}</p>{{end}}
{{with .Fits}}{{if .Rows}}{{template "table" .}}{{else}}<p class="note">No series has enough escaped runs to fit.</p>{{end}}{{end}}
</section>
<section id="plots">
<h2>Plots</h2>
{{range .Plots}}<figure><img {{.Src}} alt="{{.Name}}"><figcaption>{{.Name}}{{with .Caption}}: {{.}}{{end}}</figcaption></figure>
{{else}}<p class="note">No plots.</p>{{end}}
</section>
<section id="runs">
<h2>Runs</h2>
{{with .Runs}}{{if .Rows}}{{template "table" .}}{{else}}<p class="note">No finished runs yet.</p>{{end}}{{end}}
</section>
</body>
</html>
{{define "table"}}<div class="scroll"><table>
<thead><tr>{{range .Header}}<th>{{.}}</th>{{end}}</tr></thead>
<tbody>{{range .Rows}}<tr>{{range .}}<td{{with .Class}} class="{{.}}"{{end}}>{{.Text}}</td>{{end}}</tr>
{{end}}</tbody>
</table></div>{{end}}`))
