package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

const storiesGreedy = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."

// saddle runs the CLI in-process and returns exit code, stdout and stderr.
func saddle(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	if strings.Contains(errb.String(), "panic") || strings.Contains(errb.String(), "goroutine ") {
		t.Fatalf("saddle %v printed a panic:\n%s", args, errb.String())
	}
	return code, out.String(), errb.String()
}

func TestGenerateGreedyGGUFAndHFPrintTheSameStory(t *testing.T) {
	gguf, hf := testenv.Stories260K(t)
	var texts []string
	for _, m := range []string{gguf, hf} {
		code, out, errs := saddle(t, "generate", "--model", m, "--temperature", "0", "--max-tokens", "60")
		if code != 0 {
			t.Fatalf("generate %s: exit %d\n%s", m, code, errs)
		}
		if !strings.HasPrefix(out, storiesGreedy) {
			t.Fatalf("generate %s printed %q, want it to begin with %q", m, out, storiesGreedy)
		}
		texts = append(texts, out)
	}
	if texts[0] != texts[1] {
		t.Fatalf("GGUF and HF texts differ:\n%q\n%q", texts[0], texts[1])
	}
}

func TestGenerateJSONAndSamplingIsSeeded(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	var results []map[string]any
	for _, seed := range []string{"1", "1", "2"} {
		code, out, errs := saddle(t, "generate", "--model", gguf, "--prompt", "Once upon a time", "--temperature", "1",
			"--top-p", "0.9", "--top-k", "40", "--seed", seed, "--max-tokens", "30", "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("--json output is not JSON: %v\n%s", err, out)
		}
		if !strings.HasPrefix(r["text"].(string), "Once upon a time") {
			t.Fatalf("text %q does not start with the prompt", r["text"])
		}
		results = append(results, r)
	}
	if results[0]["text"] != results[1]["text"] {
		t.Fatalf("same seed, different text:\n%q\n%q", results[0]["text"], results[1]["text"])
	}
	if results[0]["text"] == results[2]["text"] {
		t.Fatalf("seeds 1 and 2 sampled the same 30 tokens: %q", results[0]["text"])
	}
}

func TestTokenizeAndInfo(t *testing.T) {
	gguf, hf := testenv.Stories260K(t)
	for _, m := range []string{gguf, hf} {
		code, out, errs := saddle(t, "tokenize", "--model", m, "--text", "Once upon a time")
		if code != 0 || strings.TrimSpace(out) != "[1,403,407,261,378]" {
			t.Fatalf("tokenize %s: exit %d, %q %s", m, code, out, errs)
		}
	}
	code, out, _ := saddle(t, "tokenize", "--tokenizer", filepath.Join(hf, "tokenizer.json"), "--text", "", "--add-special=false")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("tokenize of the empty string: exit %d, %q", code, out)
	}
	code, out, _ = saddle(t, "info", "--model", gguf, "--json")
	var info struct {
		Architecture string
		Parameters   int
		Vocab        int
		Context      int
		DType        string
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || code != 0 {
		t.Fatalf("info --json: exit %d, %v\n%s", code, err, out)
	}
	if info.Architecture != "llama" || info.Vocab != 512 || info.Parameters != 260032 || info.DType != "F32" {
		t.Fatalf("info: %+v", info)
	}
}

func TestExitCodes(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	missing := filepath.Join(t.TempDir(), "nope.gguf")
	badData := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(badData, []byte("{\"text\": \"fine\"}\n{\"text\": 3}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"generate", "--model", gguf, "--max-tokens", "-1"}, 2, "--max-tokens"},
		{[]string{"generate", "--model", gguf, "--temperature", "-1"}, 2, "temperature"},
		{[]string{"generate", "--no-such-flag"}, 2, "unknown flag"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"tokenize", "--model", gguf}, 2, "--text"},
		{[]string{"train", "--model", gguf, "--out", t.TempDir(), "--rank", "0"}, 2, "rank"},
		{[]string{"train", "--model", gguf, "--out", t.TempDir(), "--lr", "-1"}, 2, "--lr"},
		{[]string{"train", "--model", gguf, "--out", t.TempDir(), "--optimizer", "steepest", "--q", "3"}, 2, "q"},
		{[]string{"train", "--model", gguf, "--out", t.TempDir(), "--depth", "1"}, 2, "depth"},
		{[]string{"train", "--model", gguf}, 2, "--out"},
		{[]string{"generate", "--model", missing}, 1, "nope.gguf"},
		{[]string{"generate", "--model", gguf, "--backend", "xla:nosuchplugin"}, 1, "backend"},
		{[]string{"train", "--model", gguf, "--data", badData, "--out", t.TempDir(), "--steps", "1"}, 1, "bad.jsonl:2"},
	} {
		code, _, errs := saddle(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("saddle %v: exit %d (want %d), stderr %q (want it to mention %q)", tc.args, code, tc.code, errs, tc.want)
		}
	}
}

// TestEscapeOrdering is the short version of the README's comparison: at lr 1e-4 Adam and sign descent leave the
// saddle while SGD does not; SGD at lr 1e-2 does. Then the trained adapter visibly changes generation.
func TestEscapeOrderingAndAdapterGeneration(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	escape := map[string]any{}
	for _, run := range []struct{ opt, lr string }{{"adam", "1e-4"}, {"sign", "1e-4"}, {"sgd", "1e-4"}, {"sgd", "1e-2"}} {
		out := t.TempDir()
		code, stdout, errs := saddle(t, "train", "--model", gguf, "--optimizer", run.opt, "--lr", run.lr,
			"--steps", "60", "--batch-size", "4", "--seq-len", "64", "--eval-every", "10", "--out", out, "--json")
		if code != 0 {
			t.Fatalf("train %v: exit %d\n%s", run, code, errs)
		}
		var s struct {
			EscapeStep *int     `json:"escape_step"`
			Initial    *float64 `json:"initial_eval_loss"`
			Final      *float64 `json:"final_eval_loss"`
		}
		if err := json.Unmarshal([]byte(stdout), &s); err != nil {
			t.Fatal(err)
		}
		key := run.opt + "@" + run.lr
		t.Logf("%s: escape step %v, eval loss %.4f → %.4f", key, deref(s.EscapeStep), *s.Initial, *s.Final)
		escape[key] = s.EscapeStep
	}
	for _, key := range []string{"adam@1e-4", "sign@1e-4", "sgd@1e-2"} {
		if escape[key].(*int) == nil {
			t.Errorf("%s did not escape the saddle in 60 steps", key)
		}
	}
	if escape["sgd@1e-4"].(*int) != nil {
		t.Errorf("sgd at lr 1e-4 escaped at step %d; the saddle should hold it", *escape["sgd@1e-4"].(*int))
	}

	// A stronger fine-tune makes generation follow the demo data (stories about Pip the robot).
	out := t.TempDir()
	if code, _, errs := saddle(t, "train", "--model", gguf, "--optimizer", "adam", "--lr", "3e-3", "--steps", "60",
		"--eval-every", "0", "--out", out); code != 0 {
		t.Fatalf("train: exit %d\n%s", code, errs)
	}
	base := generateText(t, gguf, "")
	tuned := generateText(t, gguf, out)
	if base == tuned {
		t.Fatal("the adapter did not change generation")
	}
	if strings.Contains(base, "Pip") || !strings.Contains(tuned, "Pip") {
		t.Fatalf("expected the tuned model to tell of Pip and the base not:\nbase:  %q\ntuned: %q", base, tuned)
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func generateText(t *testing.T, model, adapter string) string {
	args := []string{"generate", "--model", model, "--temperature", "0", "--max-tokens", "120"}
	if adapter != "" {
		args = append(args, "--adapter", adapter)
	}
	code, out, errs := saddle(t, args...)
	if code != 0 {
		t.Fatalf("generate: exit %d\n%s", code, errs)
	}
	return out
}

// TestConfigFileWithFlagOverride: a YAML file holds train settings; flags given on the command line win.
func TestConfigFileWithFlagOverride(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "run.yaml")
	yaml := "model: " + gguf + "\nsteps: 2\nbatch_size: 2\nseq-len: 32\nlr: 1e-3\noptimizer: sign\neval-every: 0\nout: " + filepath.Join(dir, "out") + "\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		extra []string
		steps float64
	}{{nil, 2}, {[]string{"--steps", "3", "--overwrite"}, 3}} { // the second run starts over in the first one's folder
		code, out, errs := saddle(t, append([]string{"train", "--config", cfgFile, "--json"}, tc.extra...)...)
		if code != 0 {
			t.Fatalf("train --config: exit %d\n%s", code, errs)
		}
		var s map[string]any
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatal(err)
		}
		if s["steps"] != tc.steps || s["optimizer"] != "sign" || s["lr"] != 1e-3 {
			t.Fatalf("with %v: summary %v, want %v steps of sign at lr 1e-3", tc.extra, s, tc.steps)
		}
	}
}
