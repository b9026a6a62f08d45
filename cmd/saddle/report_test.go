package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// A real (tiny) sweep writes report.html with the command that ran it, its runs and its plots inline; rerunning it
// into the same folder (every run already done) keeps the folder acceptable, adds the second command line and
// rewrites the report; the report opens in headless chromium without errors.
func TestEscapeWritesReport(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	out := filepath.Join(t.TempDir(), "sweep")
	args := []string{"escape", "--model", gguf, "--optimizers", "sgd,sign", "--lrs", "1e-2", "--init-scales", "0.1",
		"--steps", "3", "--batch-size", "1", "--seq-len", "8", "--eval-every", "0", "--out", out}
	if code, _, errs := saddle(t, args...); code != 0 {
		t.Fatalf("escape: exit %d\n%s", code, errs)
	}
	if code, _, errs := saddle(t, append(args, "--json")...); code != 0 {
		t.Fatalf("escape rerun: exit %d\n%s", code, errs)
	}
	data, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	page := string(data)
	command := "saddle escape --batch-size=1 --eval-every=0 --init-scales=0.1 --lrs=1e-2 --model=" + gguf +
		" --optimizers=sgd,sign --out=" + out + " --seq-len=8 --steps=3"
	rerun := strings.Replace(command, " --lrs", " --json --lrs", 1) // flags by name
	for _, want := range []string{command + "\n" + rerun + "\n", "sgd_lr0.01_lambda0.1_L2_saddle",
		"sign_lr0.01_lambda0.1_L2_saddle", `alt="loss.png"`, `alt="delta_w.png"`} {
		if !strings.Contains(page, want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	if n := len(regexp.MustCompile(`<img src="data:image/png;base64,`).FindAllString(page, -1)); n < 2 {
		t.Errorf("report.html inlines %d plots", n)
	}
	t.Run("chromium", func(t *testing.T) {
		p := testenv.LoadInBrowser(t, filepath.Join(out, "report.html"), 0, 0)
		if len(p.Console) > 0 || len(p.Broken) > 0 || len(p.External) > 0 {
			t.Errorf("console %q, broken images %q, fetched %q", p.Console, p.Broken, p.External)
		}
	})
}
