package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// A PEFT adapter whose init_lora_weights makes PEFT rewrite the base weights on load is refused with a message
// naming the file and the setting (exit 1, no panic); an init-only value loads.
func TestGenerateChecksThePEFTAdaptersInit(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	peft := filepath.Join(t.TempDir(), "peft")
	if code, _, errs := saddle(t, "export", "--checkpoint", filepath.Join("testdata", "export-golden", "run"), "--model", gguf,
		"--format", "peft", "--out", peft); code != 0 {
		t.Fatalf("export: exit %d\n%s", code, errs)
	}
	for _, c := range []struct {
		value any
		code  int
		want  string
	}{
		{"gaussian", 0, ""},
		{"pissa", 1, `adapter_config.json: init_lora_weights "pissa": PEFT subtracts`},
		{"loftq", 1, `adapter_config.json: init_lora_weights "loftq": PEFT replaces the base weights`},
		{"no-such-init", 1, `adapter_config.json: init_lora_weights "no-such-init" is not a LoRA initialization`},
	} {
		setJSONKey(t, filepath.Join(peft, "adapter_config.json"), "init_lora_weights", c.value)
		code, _, errs := saddle(t, "generate", "--model", gguf, "--adapter", peft, "--max-tokens", "2", "--temperature", "0")
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("init_lora_weights %v: exit %d (want %d), stderr %q (want it to contain %q)", c.value, code, c.code, errs, c.want)
		}
	}
}
