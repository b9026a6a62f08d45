package lora

import (
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/safetensors"
)

// init_lora_weights: the values after which PEFT loads an adapter onto the base weights as they are import;
// those for which PEFT rewrites the base on load (and unknown ones) are refused, naming the file and the setting.
func TestImportChecksInitLoraWeights(t *testing.T) {
	cfg := tinyConfig()
	shapes := cfg.ExpectedShapes()
	rng := rand.New(rand.NewPCG(1, 2))
	const m = "model.layers.0.self_attn.q_proj"
	shape := shapes[m+".weight"]
	tensors := map[string]safetensors.Tensor{
		peftPrefix + m + ".lora_A.weight": randomFactor(rng, 4, shape[1], "F32"),
		peftPrefix + m + ".lora_B.weight": randomFactor(rng, shape[0], 4, "F32"),
	}
	for _, v := range []any{true, false, nil, "gaussian", "Gaussian", "eva", "orthogonal"} {
		dir := writePEFTDir(t, baseConfig(map[string]any{"init_lora_weights": v, "target_modules": []string{"q_proj"}}), tensors)
		set, err := LoadAny(dir, cfg)
		if err != nil {
			t.Errorf("init_lora_weights %v: %v", v, err)
		} else if len(set.Adapters) != 1 {
			t.Errorf("init_lora_weights %v: %d adapters, want 1", v, len(set.Adapters))
		}
	}
	for _, c := range []struct {
		value any
		want  string
	}{
		{"pissa", `init_lora_weights "pissa": PEFT subtracts a PiSSA adapter's initial factors from the base weights`},
		{"pissa_niter_16", `init_lora_weights "pissa_niter_16": PEFT subtracts a PiSSA`},
		{"corda", `init_lora_weights "corda": PEFT subtracts a CorDA`},
		{"olora", `init_lora_weights "olora": PEFT subtracts an OLoRA`},
		{"OLoRA", `init_lora_weights "OLoRA": PEFT subtracts an OLoRA`},
		{"loftq", `init_lora_weights "loftq": PEFT replaces the base weights by LoftQ's quantized residual`},
		{"lora_ga", `init_lora_weights "lora_ga" is not a LoRA initialization saddle knows`},
		{"", `init_lora_weights "" is not a LoRA initialization saddle knows`},
		{"Eva", `init_lora_weights "Eva" is not a LoRA initialization saddle knows`}, // PEFT compares "eva" exactly
		{1, `init_lora_weights 1: want true, false or a string`},
		{map[string]any{"x": 1}, `init_lora_weights {"x":1}: want true, false or a string`},
	} {
		dir := writePEFTDir(t, baseConfig(map[string]any{"init_lora_weights": c.value, "target_modules": []string{"q_proj"}}), tensors)
		_, err := LoadAny(dir, cfg)
		if err == nil {
			t.Errorf("init_lora_weights %v: imported, want a refusal", c.value)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), filepath.Join(dir, PEFTConfigFile)+": ") {
			t.Errorf("init_lora_weights %v: error %q, want it to start with the config's path and contain %q", c.value, err, c.want)
		}
	}
}
