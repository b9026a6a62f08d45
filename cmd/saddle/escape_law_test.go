package main

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// TestEscapeSeedsProbeAndFits: a tiny sweep with two seeds, per-optimizer learning rates, the per-step probe and
// stop at escape writes one run per seed, records each run's seed, budget and criteria in runs.csv, and writes
// fits.csv and fits.json.
func TestEscapeSeedsProbeAndFits(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	out := filepath.Join(t.TempDir(), "sweep")
	code, stdout, stderr := saddle(t, "escape", "--model", gguf, "--steps", "4", "--batch-size", "2", "--seq-len", "16",
		"--optimizers", "sign,sgd", "--lrs", "sign=3e-3,sgd=0.05", "--init-scales", "0.1,0.3", "--depths", "2",
		"--seeds", "1,2", "--escape-probe", "1", "--stop-at-escape", "--eval-every", "0", "--save-every", "-1", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	f, err := os.Open(filepath.Join(out, "runs.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	for _, h := range []string{"seed", "budget", "steps", "escape_at", "escape_lower_bound", "escape_criterion"} {
		if _, ok := col[h]; !ok {
			t.Fatalf("runs.csv has no %s column: %v", h, rows[0])
		}
	}
	if len(rows) != 1+2*2*2 {
		t.Fatalf("%d runs, want 8 (2 optimizers × 2 λ × 2 seeds)", len(rows)-1)
	}
	seeds, lrs := map[string]int{}, map[string]string{}
	for _, r := range rows[1:] {
		seeds[r[col["seed"]]]++
		lrs[r[col["optimizer"]]] = r[col["lr"]]
		if r[col["budget"]] != "4" || !strings.Contains(r[col["escape_criterion"]], "probe loss (first 1 eval batches) after every step") {
			t.Errorf("run %s: budget %s, criterion %q", r[0], r[col["budget"]], r[col["escape_criterion"]])
		}
		if never := r[col["escape_at"]] == ""; never != (r[col["escape_lower_bound"]] == "true") {
			t.Errorf("run %s: escape_at %q but lower bound %s", r[0], r[col["escape_at"]], r[col["escape_lower_bound"]])
		}
	}
	if seeds["1"] != 4 || seeds["2"] != 4 || lrs["sign"] != "0.003" || lrs["sgd"] != "0.05" {
		t.Errorf("seeds %v, learning rates %v", seeds, lrs)
	}
	data, err := os.ReadFile(filepath.Join(out, "fits.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fits struct {
		Fits []struct {
			Optimizer string `json:"optimizer"`
		} `json:"fits"`
	}
	if err := json.Unmarshal(data, &fits); err != nil {
		t.Fatalf("fits.json: %v", err)
	}
	csvFits, err := os.ReadFile(filepath.Join(out, "fits.csv"))
	if err != nil || !strings.HasPrefix(string(csvFits), "optimizer,q,depth,lr,init,criterion,kind,points,lower_bounds,slope,ci_low,ci_high") {
		t.Fatalf("fits.csv: %v %q", err, csvFits)
	}
	if n := strings.Count(string(csvFits), "\n") - 1; n != len(fits.Fits) {
		t.Errorf("fits.csv has %d rows, fits.json %d fits", n, len(fits.Fits))
	}
}

// TestEscapeRefusesBadSeedsAndLRs: --seeds and keyed --lrs entries are checked before anything runs.
func TestEscapeRefusesBadSeedsAndLRs(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	out := filepath.Join(t.TempDir(), "sweep")
	escape := func(flags ...string) []string {
		return append([]string{"escape", "--model", gguf, "--steps", "1", "--batch-size", "1", "--seq-len", "8",
			"--optimizers", "adam,sgd", "--init-scales", "0.1", "--out", out}, flags...)
	}
	runRefused(t, out, []validationCase{
		{"--seeds repeated", escape("--lrs", "1e-3", "--seeds", "1,2,1"), 2, []string{"--seeds", "twice"}},
		{"--seeds not a number", escape("--lrs", "1e-3", "--seeds", "1,x"), 2, []string{"--seeds", `"x"`}},
		{"--lrs for an optimizer not swept", escape("--lrs", "1e-3,sign=1e-3"), 2, []string{"--lrs", "sign=1e-3", "--optimizers"}},
		{"--lrs missing an optimizer", escape("--lrs", "adam=1e-3"), 2, []string{"--lrs", "sgd"}},
		{"--lrs keyed repeat", escape("--lrs", "adam=1e-3,adam=0.001,sgd=0.1"), 2, []string{"--lrs", "adam=0.001", "twice"}},
		{"--lrs keyed NaN", escape("--lrs", "adam=NaN,sgd=0.1"), 2, []string{"--lrs", "finite"}},
		{"--escape-probe negative", escape("--lrs", "1e-3", "--escape-probe", "-1"), 2, []string{"--escape-probe"}},
		{"--escape-probe beyond the eval set", escape("--lrs", "1e-3", "--escape-probe", "100000"), 2, []string{"--escape-probe 100000", "eval batches"}},
	})
}
