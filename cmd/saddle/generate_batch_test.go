package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/internal/testenv"
)

// TestGenerateDecodersAndBatchesAgree: the CPU decoder (the Go backend's default) and the graph decoder print the
// same greedy text, with and without an adapter, and a --prompts-file batch gives each prompt the text it gets
// alone.
func TestGenerateDecodersAndBatchesAgree(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	adapter := t.TempDir()
	if code, _, errs := saddle(t, "train", "--model", gguf, "--optimizer", "adam", "--lr", "3e-3", "--steps", "15",
		"--eval-every", "0", "--save-every", "-1", "--out", adapter); code != 0 {
		t.Fatalf("train: exit %d\n%s", code, errs)
	}
	prompts := []string{"Once upon a time", "Lily saw a big", "The dog"}
	file := filepath.Join(t.TempDir(), "prompts.txt")
	if err := os.WriteFile(file, []byte(strings.Join([]string{prompts[0], "", prompts[1], "  ", prompts[2]}, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	decoders := []string{"graph"}
	if testbackend.IsGo() {
		decoders = append(decoders, "cpu")
	}
	for _, adapterDir := range []string{"", adapter} {
		alone := map[string][]string{}
		for _, dec := range decoders {
			for _, p := range prompts {
				args := []string{"generate", "--model", gguf, "--temperature", "0", "--max-tokens", "40", "--json",
					"--decoder", dec, "--prompt", p}
				if adapterDir != "" {
					args = append(args, "--adapter", adapterDir)
				}
				code, out, errs := saddle(t, args...)
				if code != 0 {
					t.Fatalf("generate %v: exit %d\n%s", args, code, errs)
				}
				var r generateResult
				if err := json.Unmarshal([]byte(out), &r); err != nil {
					t.Fatal(err)
				}
				alone[dec] = append(alone[dec], r.Text)
			}
			args := []string{"generate", "--model", gguf, "--temperature", "0", "--max-tokens", "40", "--json",
				"--decoder", dec, "--prompts-file", file}
			if adapterDir != "" {
				args = append(args, "--adapter", adapterDir)
			}
			code, out, errs := saddle(t, args...)
			if code != 0 {
				t.Fatalf("generate %v: exit %d\n%s", args, code, errs)
			}
			var batch []generateResult
			if err := json.Unmarshal([]byte(out), &batch); err != nil {
				t.Fatalf("--prompts-file --json: %v\n%s", err, out)
			}
			if len(batch) != len(prompts) {
				t.Fatalf("%d results for %d prompts", len(batch), len(prompts))
			}
			for i, r := range batch {
				if r.Text != alone[dec][i] {
					t.Errorf("adapter %q, %s decoder, prompt %d: batched %q, alone %q", adapterDir, dec, i, r.Text, alone[dec][i])
				}
			}
		}
		for i := range prompts {
			if len(decoders) == 2 && alone["cpu"][i] != alone["graph"][i] {
				t.Errorf("adapter %q, prompt %d: the CPU decoder printed %q, the graph %q", adapterDir, i, alone["cpu"][i], alone["graph"][i])
			}
		}
		if adapterDir != "" && alone["graph"][0] == generateText(t, gguf, "") {
			t.Error("the adapter did not change generation")
		}
	}
}

func TestGenerateBatchRefusals(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	empty := filepath.Join(t.TempDir(), "empty.txt")
	if err := os.WriteFile(empty, []byte("\n  \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--decoder", "fast"}, 2, "--decoder"},
		{[]string{"--prompt", "x", "--prompts-file", empty}, 2, "--prompts-file"},
		{[]string{"--prompts-file", empty}, 1, "empty.txt: no prompts"},
		{[]string{"--prompts-file", filepath.Dir(empty)}, 1, filepath.Dir(empty)},
	} {
		code, _, errs := saddle(t, append([]string{"generate", "--model", gguf, "--max-tokens", "2"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("generate %v: exit %d, want %d with %q in:\n%s", c.args, code, c.code, c.want, errs)
		}
	}
}
