package finetune

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/fileio"
)

func mkfiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestCheckFreshOutAndClearRun(t *testing.T) {
	root := t.TempDir()
	if err := CheckFreshOut(filepath.Join(root, "absent")); err != nil {
		t.Fatalf("absent folder: %v", err)
	}
	empty := filepath.Join(root, "empty")
	mkfiles(t, empty, ".lock", ".config.json.tmp123")
	if err := CheckFreshOut(empty); err != nil {
		t.Fatalf("folder with only a lock and a temporary file: %v", err)
	}

	run := filepath.Join(root, "run")
	mkfiles(t, run, ".lock", "config.json", "metrics.jsonl", "checkpoints/latest", "checkpoints/step-000002/state.json",
		"adapter.json", ".overwritten-run123/metrics.jsonl")
	var exists *RunExistsError
	if err := CheckFreshOut(run); !errors.As(err, &exists) || !slices.Contains(exists.Files, "metrics.jsonl") {
		t.Fatalf("run folder: %v, want a RunExistsError naming metrics.jsonl", err)
	}
	if err := ClearRun(run); err != nil {
		t.Fatal(err)
	}
	if got := entries(t, run); !slices.Equal(got, []string{".lock"}) {
		t.Fatalf("after ClearRun the folder holds %v, want only .lock", got)
	}

	mixed := filepath.Join(root, "mixed")
	mkfiles(t, mixed, "config.json", "checkpoints/latest", "notes.txt")
	var foreign *NotRunError
	if err := ClearRun(mixed); !errors.As(err, &foreign) || !slices.Equal(foreign.Files, []string{"notes.txt"}) {
		t.Fatalf("ClearRun of a folder with notes.txt: %v, want a NotRunError naming it", err)
	}
	if got := entries(t, mixed); !slices.Equal(got, []string{"checkpoints", "config.json", "notes.txt"}) {
		t.Fatalf("a refused ClearRun changed the folder: %v", got)
	}
}

// TestCheckSweepOut: a sweep takes an absent or empty folder, or its own earlier sweep's; a folder holding anything
// else (someone's notes, a training run) is refused, naming what is there.
func TestCheckSweepOut(t *testing.T) {
	dir := t.TempDir()
	if err := CheckSweepOut(filepath.Join(dir, "absent")); err != nil {
		t.Fatalf("absent folder: %v", err)
	}
	if err := CheckSweepOut(dir); err != nil {
		t.Fatalf("empty folder: %v", err)
	}
	for _, name := range []string{"runs", "runs.json", "loss.png", fileio.LockName} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := CheckSweepOut(dir); err != nil {
		t.Fatalf("an earlier sweep's folder: %v", err)
	}
	for _, name := range []string{"notes.txt", "config.json"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var foreign *NotRunError
	err := CheckSweepOut(dir)
	if !errors.As(err, &foreign) || !strings.Contains(err.Error(), "notes.txt") || !strings.Contains(err.Error(), "sweep") {
		t.Fatalf("a folder with other files: %v", err)
	}
}
