package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
)

// fakeRun writes what 'saddle train' leaves in --out: config.json naming the base model and a trained-looking
// native adapter (every factor non-zero), at depth 3.
func fakeRun(t *testing.T, base string) string {
	t.Helper()
	p, err := model.Load(base)
	if err != nil {
		t.Fatal(err)
	}
	s := lora.DefaultSpec()
	s.Init, s.Scale, s.Depth, s.Alpha, s.Seed, s.Targets = "small", 0.1, 3, 640, 3, []string{"all-linear"}
	set, err := lora.Attach(p.Config, s)
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	if err := lora.Save(run, set, base); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]string{"model": base})
	if err := os.WriteFile(filepath.Join(run, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return run
}

func greedyTokens(t *testing.T, args ...string) []int {
	t.Helper()
	args = append([]string{"generate", "--temperature", "0", "--max-tokens", "40", "--prompt", "Once upon a time", "--json"}, args...)
	code, out, errs := saddle(t, args...)
	if code != 0 {
		t.Fatalf("saddle %v: exit %d\n%s", args, code, errs)
	}
	var r generateResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("generate --json: %v\n%s", err, out)
	}
	return r.Tokens
}

func export(t *testing.T, args ...string) exportResult {
	t.Helper()
	code, out, errs := saddle(t, append([]string{"export", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("saddle export %v: exit %d\n%s", args, code, errs)
	}
	var r exportResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("export --json: %v\n%s", err, out)
	}
	for _, f := range r.Files {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("export listed %s: %v", f, err)
		}
	}
	return r
}

// Every export format generates what the adapter generates: the PEFT folder through --adapter, the merged
// models as plain models.
func TestExportFormatsGenerateLikeTheAdapter(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	run := fakeRun(t, gguf)
	want := greedyTokens(t, "--model", gguf, "--adapter", run)
	if plain := greedyTokens(t, "--model", gguf); slices.Equal(plain, want) {
		t.Fatal("the adapter does not change the greedy text; the comparisons would prove nothing")
	}
	out := t.TempDir()

	peft := filepath.Join(out, "peft")
	if r := export(t, "--checkpoint", run, "--format", "peft", "--out", peft); r.Depth != 3 || r.Modules != 35 {
		t.Errorf("peft export reports depth %d, %d modules", r.Depth, r.Modules)
	}
	if got := greedyTokens(t, "--model", gguf, "--adapter", peft); !slices.Equal(got, want) {
		t.Errorf("PEFT adapter generates %v, native adapter %v", got, want)
	}

	merged := filepath.Join(out, "merged")
	export(t, "--checkpoint", run, "--format", "merged", "--out", merged)
	if got := greedyTokens(t, "--model", merged); !slices.Equal(got, want) {
		t.Errorf("merged HF model generates %v, adapter %v", got, want)
	}

	mergedGGUF := filepath.Join(out, "merged.gguf")
	export(t, "--checkpoint", run, "--format", "merged-gguf", "--out", mergedGGUF)
	if got := greedyTokens(t, "--model", mergedGGUF); !slices.Equal(got, want) {
		t.Errorf("merged GGUF generates %v, adapter %v", got, want)
	}

	r := export(t, "--checkpoint", run, "--format", "gguf", "--out", filepath.Join(out, "gguf"))
	if len(r.Files) != 1 || filepath.Base(r.Files[0]) != "adapter.gguf" {
		t.Errorf("gguf export wrote %v", r.Files)
	}
}

// A run folder whose final adapter is not written yet exports its latest checkpoint.
func TestExportFollowsTheLatestCheckpoint(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	src := fakeRun(t, gguf)
	run := t.TempDir()
	step := filepath.Join(run, "checkpoints", "step-000010")
	if err := os.MkdirAll(step, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"adapter.json", "adapter.safetensors"} {
		data, _ := os.ReadFile(filepath.Join(src, f))
		os.WriteFile(filepath.Join(step, f), data, 0o644)
	}
	data, _ := os.ReadFile(filepath.Join(src, "config.json"))
	os.WriteFile(filepath.Join(run, "config.json"), data, 0o644)
	os.WriteFile(filepath.Join(run, "checkpoints", "latest"), []byte("step-000010\n"), 0o644)
	r := export(t, "--checkpoint", run, "--format", "peft", "--out", filepath.Join(t.TempDir(), "p"))
	if r.Adapter != step || r.BaseModel != gguf {
		t.Errorf("exported %s on %s, want %s on %s", r.Adapter, r.BaseModel, step, gguf)
	}
}

func TestExportUsageErrors(t *testing.T) {
	gguf, hf := testenv.Stories260K(t)
	run := fakeRun(t, hf)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"export", "--format", "peft", "--out", t.TempDir()}, 2, "--checkpoint"},
		{[]string{"export", "--checkpoint", run, "--format", "onnx", "--out", t.TempDir()}, 2, "onnx"},
		{[]string{"export", "--checkpoint", run, "--format", "merged", "--out", t.TempDir(), "--dtype", "Q4"}, 2, "Q4"},
		{[]string{"export", "--checkpoint", run, "--format", "merged-gguf", "--out", t.TempDir()}, 2, "GGUF base"},
		{[]string{"export", "--checkpoint", t.TempDir(), "--format", "peft", "--out", t.TempDir()}, 1, "no adapter"},
		// The adapter's modules do not fit a model of another size.
		{[]string{"export", "--checkpoint", fakeRunTiny(t), "--model", gguf, "--format", "peft", "--out", t.TempDir()}, 1, "adapter"},
	} {
		code, _, errs := saddle(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("saddle %v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errs, c.code, c.want)
		}
	}
}

// fakeRunTiny is a native adapter for a model of a different shape than stories260K.
func fakeRunTiny(t *testing.T) string {
	cfg := model.Config{Architecture: "llama", HiddenSize: 16, IntermediateSize: 24, NumLayers: 2, NumHeads: 4,
		NumKVHeads: 2, HeadDim: 4, VocabSize: 32, MaxPositions: 64, RMSNormEps: 1e-5, RopeTheta: 10000}
	s := lora.DefaultSpec()
	s.Init = "small"
	set, err := lora.Attach(cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := lora.Save(dir, set, ""); err != nil {
		t.Fatal(err)
	}
	return dir
}
