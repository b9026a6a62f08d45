package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSharedDir(t *testing.T) {
	t.Setenv("SADDLE_SHARED", "")
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(filepath.Dir(wd)) // internal/testenv → the repository root
	if got, want := SharedDir(), filepath.Join(filepath.Dir(root), "shared"); got != want {
		t.Errorf("SharedDir() = %q, want %q", got, want)
	}
	t.Setenv("SADDLE_SHARED", "/elsewhere")
	if got := SharedDir(); got != "/elsewhere" {
		t.Errorf("with SADDLE_SHARED: SharedDir() = %q", got)
	}
}

func TestMissingSkipsOutsideCI(t *testing.T) {
	t.Setenv("CI", "")
	t.Setenv("SADDLE_SHARED", t.TempDir())
	t.Setenv("SADDLE_TOKENIZER_CACHE", t.TempDir())
	for name, find := range map[string]func(t *testing.T){
		"Shared":       func(t *testing.T) { Shared(t, "no", "such", "file") },
		"Stories260K":  func(t *testing.T) { Stories260K(t) },
		"Cached":       func(t *testing.T) { Cached(t, "llama3", "tokenizer.json") },
		"ChatTemplate": func(t *testing.T) { ChatTemplate(t, "llama3") },
	} {
		returned, skipped := false, false
		t.Run(name, func(t *testing.T) {
			defer func() { skipped = t.Skipped() }()
			find(t)
			returned = true
		})
		if returned || !skipped {
			t.Errorf("%s of a missing path: returned %v, skipped %v", name, returned, skipped)
		}
	}
}

// Missing fails under CI=true and skips otherwise; the test runs itself as a child to see the failure.
func TestMissingFailsUnderCI(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		Missing(t, "the data is missing")
		return
	}
	for ci, want := range map[string]string{"true": "--- FAIL", "": "--- SKIP"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissingFailsUnderCI$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", "CI="+ci)
		out, err := cmd.CombinedOutput()
		if !strings.Contains(string(out), want) || !strings.Contains(string(out), "the data is missing") || (err == nil) != (ci == "") {
			t.Errorf("CI=%q: want %s (err %v):\n%s", ci, want, err, out)
		}
	}
}
