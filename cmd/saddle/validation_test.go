package main

// Validation before any work (issue 12): settings that are not finite, that underflow, or that leave nothing to
// train; sweep lists with repeats; a model whose vocabulary does not cover its tokenizer, for every command that
// loads both; files that are not regular files (a FIFO must never block); `--data -`; and config.json values that
// info does not understand. Each refusal must name the flag or file, exit non-zero without a panic, and leave
// --out empty.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// validationCase is one command line that must be refused.
type validationCase struct {
	name string
	args []string
	code int
	want []string // substrings of stderr
}

// runRefused runs each case with a deadline (a blocked open of a FIFO fails the case instead of hanging the
// suite) and checks the exit code, the message and that out stays empty.
func runRefused(t *testing.T, out string, cases []validationCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			os.RemoveAll(out)
			type result struct {
				code int
				msg  string
			}
			done := make(chan result, 1)
			go func() {
				var stdout, stderr bytes.Buffer
				code := run(tc.args, &stdout, &stderr)
				done <- result{code, stderr.String()}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(60 * time.Second):
				t.Fatalf("saddle %q did not return within 60 s (blocked on a file?)", tc.args)
			}
			if strings.Contains(r.msg, "panic") || strings.Contains(r.msg, "goroutine ") {
				t.Fatalf("saddle %q printed a panic:\n%s", tc.args, r.msg)
			}
			if r.code != tc.code {
				t.Errorf("saddle %q: exit %d, want %d\nstderr: %s", tc.args, r.code, tc.code, r.msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.msg, w) {
					t.Errorf("saddle %q: stderr does not mention %q\nstderr: %s", tc.args, w, r.msg)
				}
			}
			if entries, err := os.ReadDir(out); err == nil && len(entries) > 0 {
				t.Errorf("saddle %q: --out holds %d entries after a refusal", tc.args, len(entries))
			}
		})
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTrainRefusesNumbersThatCannotMeanAnything: every float flag is checked for finiteness, a learning rate that
// underflows to 0 is refused, and so is an init whose factors all start at zero.
func TestTrainRefusesNumbersThatCannotMeanAnything(t *testing.T) {
	ggufPath, _ := testenv.Stories260K(t)
	dir := t.TempDir()
	good := writeFile(t, dir, "good.jsonl", strings.Repeat(`{"text": "Once upon a time there was a cat."}`+"\n", 4))
	out := filepath.Join(dir, "out")
	train := func(flags ...string) []string {
		return append([]string{"train", "--model", ggufPath, "--data", good, "--steps", "1", "--batch-size", "1",
			"--seq-len", "8", "--out", out}, flags...)
	}
	var cases []validationCase
	usage := func(name string, args []string, want ...string) {
		cases = append(cases, validationCase{name: name, args: args, code: 2, want: want})
	}
	// each float flag with NaN and ±Inf: refused naming the flag (or, for the optimizer's, its field)
	for _, fl := range []struct{ flag, want string }{
		{"lr", "--lr"}, {"alpha", "alpha"}, {"dropout", "--dropout"}, {"init-scale", "init"},
		{"escape-delta", "--escape-delta"}, {"escape-norm", "--escape-norm"}, {"clip-norm", "--clip-norm"},
		{"eval-split", "--eval-split"}, {"min-lr-ratio", "--min-lr-ratio"}, {"diverge-factor", "--diverge-factor"},
		{"weight-decay", "weight-decay"}, {"beta1", "beta1"}, {"beta2", "beta2"}, {"eps", "eps"},
	} {
		for _, v := range []string{"NaN", "Inf", "-Inf"} {
			usage(fmt.Sprintf("--%s %s", fl.flag, v), train("--"+fl.flag, v), fl.want)
		}
	}
	for _, v := range []string{"NaN", "Inf"} {
		usage("--q "+v, train("--optimizer", "steepest", "--q", v), "q")
		usage("--momentum "+v, train("--optimizer", "sgd", "--momentum", v), "momentum")
	}
	usage("--lr 1e-400 underflows to 0", train("--lr", "1e-400"), "--lr", "1e-400 rounds to 0")
	usage("--lr 0", train("--lr", "0"), "--lr", "never moves")
	usage("--lr below float32", train("--lr", "1e-42"), "--lr", "float32")
	usage("--lr beyond float32", train("--lr", "1e39"), "--lr", "float32")
	usage("--init-scale 0 with the saddle init", train("--init", "saddle", "--init-scale", "0"), "--init-scale", "saddle", "never move")
	usage("--init-scale 0 with the small init", train("--init", "small", "--init-scale", "0"), "--init-scale", "small")
	usage("--init-scale 1e-400 with the saddle init", train("--init", "saddle", "--init-scale", "1e-400"), "--init-scale")
	usage("--eps 1e-50 rounds to 0 in float32 (0/0 in Adam)", train("--eps", "1e-50"), "eps", "float32")
	usage("--data - (stdin)", train("--data", "-"), "--data", "standard input", "write it to a file")
	usage("--eval-data - (stdin)", train("--eval-data", "-"), "--eval-data", "standard input")
	cfg := writeFile(t, dir, "run.yaml", "lr: 1e-400\n")
	usage("config file lr underflowing", train("--config", cfg), "--lr")
	runRefused(t, out, cases)
}

// TestEscapeRefusesRepeatsAndZeroLambda: a sweep list naming a value twice would run twice into one folder, and
// λ = 0 finishes its runs only to fail in the log-log plot; both are refused before anything runs.
func TestEscapeRefusesRepeatsAndZeroLambda(t *testing.T) {
	ggufPath, _ := testenv.Stories260K(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "sweep")
	escape := func(flags ...string) []string {
		return append([]string{"escape", "--model", ggufPath, "--steps", "1", "--batch-size", "1", "--seq-len", "8",
			"--optimizers", "adam", "--lrs", "1e-3", "--init-scales", "0.1", "--out", out}, flags...)
	}
	var cases []validationCase
	usage := func(name string, args []string, want ...string) {
		cases = append(cases, validationCase{name: name, args: args, code: 2, want: want})
	}
	usage("--init-scales 0", escape("--init-scales", "0.1,0"), "--init-scales", "positive")
	usage("--init-scales 0 with the lora init", escape("--init-scales", "0", "--inits", "lora"), "--init-scales")
	usage("--lrs repeated", escape("--lrs", "1e-3,1e-3"), "--lrs", "twice")
	usage("--lrs repeated in another spelling", escape("--lrs", "1e-3,0.001"), "--lrs", "twice")
	usage("--optimizers repeated", escape("--optimizers", "adam,sign,adam"), "--optimizers", "twice")
	usage("--depths repeated", escape("--depths", "2,3,2"), "--depths", "twice")
	usage("--inits repeated", escape("--inits", "saddle,saddle"), "--inits", "twice")
	usage("--init-scales repeated", escape("--init-scales", "0.1,0.1"), "--init-scales", "twice")
	usage("--lrs NaN", escape("--lrs", "NaN"), "--lrs", "finite")
	usage("--init-scales Inf", escape("--init-scales", "Inf"), "--init-scales", "finite")
	usage("--lrs 1e-400", escape("--lrs", "1e-400"), "--lr")
	usage("--depths 2.5", escape("--depths", "2,2.5"), "--depths", "whole number")
	runRefused(t, out, cases)
}

// TestEveryCommandChecksTheVocabulary: a model whose vocabulary is smaller than its tokenizer's is refused by every
// command that loads both (generate used to sample from ids the embedding does not have).
func TestEveryCommandChecksTheVocabulary(t *testing.T) {
	_, hfPath := testenv.Stories260K(t)
	h := &hostileFiles{t: t, dir: t.TempDir(), hf: hfPath}
	big := h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "tokenizer.json", func(m map[string]any) {
			vocab := m["model"].(map[string]any)["vocab"].(map[string]any)
			for i := range 8 {
				vocab[fmt.Sprintf("<extra_%d>", i)] = len(vocab)
			}
		})
	})
	out := filepath.Join(h.dir, "out")
	want := []string{big, "the tokenizer has 520 tokens but the model's vocabulary only 512"}
	runRefused(t, out, []validationCase{
		{"generate", []string{"generate", "--model", big, "--max-tokens", "2", "--temperature", "0"}, 1, want},
		{"info", []string{"info", "--model", big}, 1, want},
		{"tokenize --model", []string{"tokenize", "--model", big, "--text", "Once"}, 1, want},
		{"train", []string{"train", "--model", big, "--steps", "1", "--batch-size", "1", "--seq-len", "8", "--out", out}, 1, want},
		{"escape", []string{"escape", "--model", big, "--steps", "1", "--batch-size", "1", "--seq-len", "8", "--out", out}, 1, want},
	})
	// the tokenizer alone still tokenizes: no model, nothing to disagree with
	if code, _, stderr := saddle(t, "tokenize", "--tokenizer", filepath.Join(big, "tokenizer.json"), "--text", "Once"); code != 0 {
		t.Errorf("tokenize --tokenizer alone: exit %d: %s", code, stderr)
	}
}

// TestFIFOsAreRefusedNotOpened: a named pipe given as a data, config, model or tokenizer file is refused at once,
// naming it, where it used to block forever.
func TestFIFOsAreRefusedNotOpened(t *testing.T) {
	ggufPath, hfPath := testenv.Stories260K(t)
	h := &hostileFiles{t: t, dir: t.TempDir(), hf: hfPath}
	fifo := filepath.Join(h.dir, "pipe.jsonl")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	// HF folders with one file replaced by a FIFO
	hfFIFO := func(name string) string {
		d := h.hfWith(func(f map[string][]byte) { f[name] = nil })
		if err := syscall.Mkfifo(filepath.Join(d, name), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	good := writeFile(t, h.dir, "good.jsonl", strings.Repeat(`{"text": "Once upon a time there was a cat."}`+"\n", 4))
	out := filepath.Join(h.dir, "out")
	train := func(flags ...string) []string {
		return append([]string{"train", "--model", ggufPath, "--data", good, "--steps", "1", "--batch-size", "1",
			"--seq-len", "8", "--out", out}, flags...)
	}
	pipe := "named pipe"
	cfgDir, tokDir, tokCfgDir := hfFIFO("config.json"), hfFIFO("tokenizer.json"), hfFIFO("tokenizer_config.json")
	runRefused(t, out, []validationCase{
		{"--data", train("--data", fifo), 1, []string{"--data", fifo, pipe}},
		{"--eval-data", train("--eval-data", fifo), 1, []string{"--eval-data", fifo, pipe}},
		{"--config", train("--config", fifo), 1, []string{fifo, pipe}},
		{"--model a FIFO", []string{"info", "--model", fifo}, 1, []string{fifo, pipe}},
		{"config.json a FIFO", []string{"info", "--model", cfgDir}, 1, []string{filepath.Join(cfgDir, "config.json"), pipe}},
		{"tokenizer.json a FIFO", []string{"generate", "--model", tokDir, "--max-tokens", "1"}, 1, []string{filepath.Join(tokDir, "tokenizer.json"), pipe}},
		{"tokenizer_config.json a FIFO", []string{"tokenize", "--model", tokCfgDir, "--text", "x"}, 1, []string{"tokenizer_config.json", pipe}},
		{"--tokenizer a FIFO", []string{"tokenize", "--tokenizer", fifo, "--text", "x"}, 1, []string{fifo, pipe}},
		{"escape --data", []string{"escape", "--model", ggufPath, "--data", fifo, "--out", out}, 1, []string{"--data", fifo, pipe}},
	})
}

// TestInfoChecksArchitecturesAndDType: config.json values info used to pass over are refused naming the key.
func TestInfoChecksArchitecturesAndDType(t *testing.T) {
	_, hfPath := testenv.Stories260K(t)
	h := &hostileFiles{t: t, dir: t.TempDir(), hf: hfPath}
	withConfig := func(key string, v any) string {
		return h.hfWith(func(f map[string][]byte) {
			editJSON(t, f, "config.json", func(m map[string]any) { m[key] = v })
		})
	}
	cls := withConfig("architectures", []string{"LlamaForSequenceClassification"})
	q := withConfig("torch_dtype", "int8")
	runRefused(t, filepath.Join(h.dir, "out"), []validationCase{
		{"architectures", []string{"info", "--model", cls}, 1, []string{filepath.Join(cls, "config.json"), "LlamaForSequenceClassification", "LlamaForCausalLM"}},
		{"torch_dtype", []string{"info", "--model", q}, 1, []string{filepath.Join(q, "config.json"), `torch_dtype "int8"`}},
	})
	if code, _, stderr := saddle(t, "info", "--model", hfPath); code != 0 {
		t.Errorf("info on the real folder (LlamaForCausalLM, float32): exit %d: %s", code, stderr)
	}
}
