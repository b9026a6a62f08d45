package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
)

// noNetwork points every cache at empty temporary folders and the Hugging Face hub at a closed port, so that
// nothing the user has is used and any download fails. It returns the HOME it set.
func noNetwork(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, v := range []string{"XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "SADDLE_CACHE", "HF_HUB_OFFLINE"} {
		t.Setenv(v, "")
	}
	old := model.HubBaseURL
	model.HubBaseURL = testenv.ClosedURL(t)
	t.Cleanup(func() { model.HubBaseURL = old })
	return home
}

// Without --model, generate, info, train, escape and export run on the built-in stories260K with no network and
// empty caches, and generate tells the same greedy story as ../shared's file.
func TestDefaultModelNeedsNoNetwork(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	home := noNetwork(t)
	want := generateText(t, gguf, "")
	code, out, errs := saddle(t, "generate", "--temperature", "0", "--max-tokens", "120")
	if code != 0 || out != want {
		t.Fatalf("generate without --model: exit %d, %q, want %q\n%s", code, out, want, errs)
	}
	if !strings.HasPrefix(out, storiesGreedy) {
		t.Fatalf("generate printed %q", out)
	}
	code, out, errs = saddle(t, "info")
	if code != 0 || !strings.Contains(out, "model:         stories260K (built into saddle; from Hugging Face ggml-org/models)") {
		t.Fatalf("info: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = saddle(t, "info", "--json", "--model", "ggml-org/models:tinyllamas/stories260K.gguf")
	var info infoResult
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || !info.Embedded || info.HubID != "ggml-org/models" ||
		info.Parameters <= 0 || info.Vocab != 512 {
		t.Fatalf("info --json --model <hub name>: exit %d, %+v\n%s", code, info, errs)
	}

	run := filepath.Join(t.TempDir(), "run")
	code, _, errs = saddle(t, "train", "--steps", "2", "--batch-size", "2", "--seq-len", "32", "--eval-every", "0", "--out", run)
	if code != 0 {
		t.Fatalf("train without --model: exit %d\n%s", code, errs)
	}
	var cfg struct{ Model string }
	if b, err := os.ReadFile(filepath.Join(run, "config.json")); err != nil || json.Unmarshal(b, &cfg) != nil || cfg.Model != model.DefaultModel {
		t.Fatalf("config.json model %q (%v): want the name %q, which resolves anywhere", cfg.Model, err, model.DefaultModel)
	}
	code, _, errs = saddle(t, "escape", "--optimizers", "sign", "--lrs", "1e-3", "--init-scales", "0.1", "--depths", "2",
		"--inits", "saddle", "--steps", "2", "--batch-size", "2", "--seq-len", "32", "--eval-every", "0",
		"--out", filepath.Join(t.TempDir(), "escape"))
	if code != 0 {
		t.Fatalf("escape without --model: exit %d\n%s", code, errs)
	}

	// The PEFT export, of the run or of its checkpoint, names the base by its Hugging Face id, which saddle knows
	// for the built-in model.
	ck, err := checkpoints.Resolve(run)
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{run, ck} {
		code, out, errs = saddle(t, "export", "--checkpoint", from, "--format", "peft", "--out", filepath.Join(t.TempDir(), "peft"), "--json")
		var r exportResult
		if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("export %s: exit %d\n%s", from, code, errs)
		}
		if got := peftBase(t, r.Out); got != "ggml-org/models" || r.BaseModelID != got || strings.Contains(errs, "--base-model-id") {
			t.Errorf("export %s: base_model_name_or_path %q (result %q), stderr %q", from, got, r.BaseModelID, errs)
		}
	}
	if entries, err := os.ReadDir(filepath.Join(home, ".cache", "huggingface")); err == nil {
		t.Errorf("the Hugging Face cache was written: %v", entries)
	}
}

// peftBase reads base_model_name_or_path from an exported PEFT folder.
func peftBase(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, lora.PEFTConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Base string `json:"base_model_name_or_path"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Base
}

// A base loaded from a local path is named by that path, with a note suggesting --base-model-id; the flag sets
// the name (peft only); a base loaded by its Hugging Face name is named by its id.
func TestExportBaseModelID(t *testing.T) {
	gguf, hf := testenv.Stories260K(t)
	noNetwork(t)
	run := fakeRun(t, gguf)
	exportPEFT := func(extra ...string) (string, string) {
		out := filepath.Join(t.TempDir(), "peft")
		code, _, errs := saddle(t, append([]string{"export", "--checkpoint", run, "--format", "peft", "--out", out}, extra...)...)
		if code != 0 {
			t.Fatalf("export %v: exit %d\n%s", extra, code, errs)
		}
		return peftBase(t, out), errs
	}
	if base, errs := exportPEFT(); base != gguf || !strings.Contains(errs, "pass --base-model-id owner/name") {
		t.Errorf("local base: base_model_name_or_path %q, stderr %q", base, errs)
	}
	if base, errs := exportPEFT("--base-model-id", "karpathy/stories260K"); base != "karpathy/stories260K" || errs != "" {
		t.Errorf("--base-model-id: %q, stderr %q", base, errs)
	}
	for _, bad := range [][]string{
		{"--base-model-id", " ", "--format", "peft"},
		{"--base-model-id", "a/b", "--format", "gguf"},
	} {
		code, _, errs := saddle(t, append([]string{"export", "--checkpoint", run, "--out", filepath.Join(t.TempDir(), "x")}, bad...)...)
		if code != 2 || !strings.Contains(errs, "--base-model-id") {
			t.Errorf("%v: exit %d, %q", bad, code, errs)
		}
	}

	// A base named karpathy/stories260K, found in a Hugging Face cache that Python filled (offline).
	cache := t.TempDir()
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_HUB_OFFLINE", "1")
	const commit = "fedcba9876543210fedcba9876543210fedcba98"
	snap := filepath.Join(cache, "models--karpathy--stories260K", "snapshots", commit)
	os.MkdirAll(snap, 0o755)
	for _, f := range []string{"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} {
		if err := os.Symlink(filepath.Join(hf, f), filepath.Join(snap, f)); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(cache, "models--karpathy--stories260K", "refs"), 0o755)
	os.WriteFile(filepath.Join(cache, "models--karpathy--stories260K", "refs", "main"), []byte(commit), 0o644)
	if got := generateText(t, "karpathy/stories260K", ""); !strings.HasPrefix(got, storiesGreedy) {
		t.Fatalf("generate from the Hugging Face cache: %q", got)
	}
	if base, errs := exportPEFT("--model", "karpathy/stories260K"); base != "karpathy/stories260K" || errs != "" {
		t.Errorf("hub-named base: %q, stderr %q", base, errs)
	}
}
