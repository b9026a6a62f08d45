package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/finetune"
	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/internal/testenv"
)

// fakeMemory makes the memory check see bytes available, for the rest of the test.
func fakeMemory(t *testing.T, bytes int64) {
	old := availableMemory
	availableMemory = func() (finetune.Available, bool) {
		return finetune.Available{Bytes: bytes, Source: "test limit"}, true
	}
	t.Cleanup(func() { availableMemory = old })
}

// TestTrainRefusesARunThatCannotFit: with too little memory, train stops before it builds anything, with the
// estimate and the flags that would fit; --no-memory-check runs it anyway.
func TestTrainRefusesARunThatCannotFit(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	smallest := "even with --batch-size 1 --grad-checkpoint it would need about"
	if !testbackend.IsGo() {
		smallest = "even with --batch-size 1 --grad-checkpoint --dtype bf16 it would need about"
	}
	big := []string{"train", "--model", gguf, "--steps", "1", "--batch-size", "64", "--seq-len", "256", "--eval-every", "0"}
	for _, tc := range []struct {
		avail int64
		want  []string
	}{
		// Batch 64 × 256 of stories260K needs about 1.5 GB, most of it activations.
		{800_000_000, []string{"more than the 800.0 MB available (test limit)", "what would fit: --batch-size ", "--seq-len ", "--grad-checkpoint (about"}},
		// Below the fixed overhead nothing fits. The weights are f32 on disk: --dtype bf16 is among the smallest
		// settings, except on the Go backend, which refuses it (model.ResolveCompute).
		{1_000_000, []string{smallest, "smaller model"}},
	} {
		fakeMemory(t, tc.avail)
		out := t.TempDir()
		code, _, errs := saddle(t, append(big, "--out", out)...)
		if code != 1 {
			t.Fatalf("at %d bytes: exit %d, want 1\n%s", tc.avail, code, errs)
		}
		for _, want := range append(tc.want, "this run needs about", "weights ", "activations ", "--no-memory-check") {
			if !strings.Contains(errs, want) {
				t.Errorf("at %d bytes the refusal lacks %q:\n%s", tc.avail, want, errs)
			}
		}
		if strings.Contains(errs, "batch_size") || strings.Contains(errs, "grad_checkpoint") {
			t.Errorf("the refusal names settings, not flags:\n%s", errs)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 0 {
			t.Errorf("the refused run wrote %d files into --out", len(entries))
		}
	}
	fakeMemory(t, 1_000_000)
	out := t.TempDir()
	code, stdout, errs := saddle(t, "train", "--model", gguf, "--steps", "2", "--batch-size", "2", "--seq-len", "32",
		"--eval-every", "1", "--no-memory-check", "--out", out, "--json")
	if code != 0 {
		t.Fatalf("--no-memory-check: exit %d\n%s", code, errs)
	}
	var sum finetune.Summary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatal(err)
	}
	m, tm := sum.Memory, sum.Times
	if m == nil || m.Total <= 0 || m.Total != m.Weights+m.Adapters+m.Activations+m.Transient+m.Loss+m.Overhead {
		t.Fatalf("summary memory estimate %+v", m)
	}
	if tm == nil || tm.Load <= 0 || tm.Train <= 0 ||
		tm.Load+tm.Hash+tm.Setup+tm.Compile+tm.Train+tm.Eval+tm.Save > tm.Total {
		t.Fatalf("summary times %+v", tm)
	}
	if sum.PeakRSS <= 0 && isLinux() {
		t.Errorf("no peak resident memory on Linux")
	}
}

func isLinux() bool {
	_, err := os.Stat("/proc/self/status")
	return err == nil
}

// TestTrainHeaderSaysTheEstimateAndTheEvalBound: the run header has the memory estimate and the eval bound, and the
// printed summary the times.
func TestTrainHeaderSaysTheEstimateAndTheEvalBound(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	out := t.TempDir()
	code, stdout, errs := saddle(t, "train", "--model", gguf, "--steps", "2", "--batch-size", "2", "--seq-len", "32",
		"--eval-every", "1", "--eval-batches", "2", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	for _, want := range []string{"saddle train: memory estimate ", "(weights ", "available", "each eval on the first 2 of "} {
		if !strings.Contains(errs, want) {
			t.Errorf("the header lacks %q:\n%s", want, errs)
		}
	}
	for _, want := range []string{"time: load ", "compile ", "in all", "memory: estimated "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the summary lacks %q:\n%s", want, stdout)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "summary.json")); err != nil {
		t.Fatal(err)
	}
}

func TestGenerateRefusesAModelThatCannotFit(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	fakeMemory(t, 1_000_000)
	code, _, errs := saddle(t, "generate", "--model", gguf, "--max-tokens", "5")
	if code != 1 || !strings.Contains(errs, "positions needs about") || !strings.Contains(errs, "--no-memory-check") {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	if code, out, errs := saddle(t, "generate", "--model", gguf, "--max-tokens", "5", "--no-memory-check"); code != 0 || out == "" {
		t.Fatalf("--no-memory-check: exit %d\n%s", code, errs)
	}
}

// TestTrainHashesTheBaseOncePerMachine: a run with checkpoints at every step reads the base model once for its
// identity; a second run on the unchanged file reads it no more, and both pin the same sha256.
func TestTrainHashesTheBaseOncePerMachine(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	old := checkpoints.DefaultHasher
	t.Cleanup(func() { checkpoints.DefaultHasher = old })
	opened := 0
	checkpoints.DefaultHasher = &checkpoints.Hasher{CacheDir: t.TempDir(), Open: func(path string) (io.ReadCloser, error) {
		opened++
		return os.Open(path)
	}}
	var pinned []string
	for run, want := range []int{1, 1} { // files read so far, after each run
		out := t.TempDir()
		code, _, errs := saddle(t, "train", "--model", gguf, "--steps", "3", "--batch-size", "2", "--seq-len", "32",
			"--eval-every", "0", "--save-every", "1", "--keep", "0", "--out", out)
		if code != 0 {
			t.Fatalf("run %d: exit %d\n%s", run, code, errs)
		}
		if opened != want {
			t.Fatalf("after run %d the base model was opened %d times, want %d", run, opened, want)
		}
		st, err := checkpoints.Load(out)
		if err != nil {
			t.Fatal(err)
		}
		pinned = append(pinned, st.Base.SHA256)
	}
	if pinned[0] != pinned[1] || len(pinned[0]) != 64 {
		t.Fatalf("the runs pinned %q", pinned)
	}
}
