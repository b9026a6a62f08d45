package lora

import (
	"fmt"
	"math"

	"github.com/saddle-ml/saddle/internal/gguf"
	"github.com/saddle-ml/saddle/model"
)

// GGUFAdapterOptions tune WriteGGUFAdapter.
type GGUFAdapterOptions struct {
	Name  string // general.name; "saddle adapter" when empty
	DType string // tensor type: "F32" (default), "F16" or "BF16"
}

// ggufArchitectures maps saddle's architectures to llama.cpp's general.architecture (Mistral runs as llama).
var ggufArchitectures = map[string]string{"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}

// ggufFileTypes is llama.cpp's general.file_type (LlamaFileType) per tensor type.
var ggufFileTypes = map[string]uint32{"F32": 0, "F16": 1, "BF16": 32}

// WriteGGUFAdapter writes set as a llama.cpp LoRA adapter, the way convert_lora_to_gguf.py does: general.type
// "adapter", adapter.type "lora", adapter.lora.alpha, and per module blk.N.<tensor>.weight.lora_a holding A [r, in]
// (GGUF ne = [in, r]) and .lora_b holding B [out, r] (ne = [r, out]), B with llama.cpp's Q/K row permutation for
// llama-architecture q_proj and k_proj. Deeper products are folded to B' = B·M⋯. llama.cpp scales by alpha/r with
// r = ne[0] of lora_b and ignores rsLoRA, so an rsLoRA adapter is written with alpha·√r (α/√r = α√r/r).
func WriteGGUFAdapter(path string, set *Set, cfg model.Config, opts GGUFAdapterOptions) error {
	if err := set.Spec.Validate(); err != nil {
		return err
	}
	if err := set.CheckFits(cfg); err != nil {
		return err
	}
	arch, ok := ggufArchitectures[cfg.Architecture]
	if !ok {
		return fmt.Errorf("architecture %q has no llama.cpp adapter form here (llama, mistral, qwen2, qwen3)", cfg.Architecture)
	}
	dtype := opts.DType
	if dtype == "" {
		dtype = "F32"
	}
	fileType, ok := ggufFileTypes[dtype]
	if !ok {
		return fmt.Errorf("GGUF adapter tensor type %q is not supported (F32, F16, BF16)", opts.DType)
	}
	name := opts.Name
	if name == "" {
		name = "saddle adapter"
	}
	alpha := GGUFAlpha(set.Spec)
	r := set.Spec.Rank
	var tensors []gguf.Tensor
	for _, a := range set.Adapters {
		base, ok := model.GGUFNameFromHF(a.Module + ".weight")
		if !ok {
			return fmt.Errorf("module %s has no llama.cpp tensor name", a.Module)
		}
		A, B := a.Fold(set.Spec.Depth, r)
		b := &model.Tensor{Shape: []int{a.Out, r}, Data: B}
		if heads := permutedHeads(cfg, a.Module); heads > 0 {
			var err error
			if b, err = model.LlamaCppPermute(b, heads); err != nil {
				return fmt.Errorf("module %s: %w", a.Module, err)
			}
		}
		tensors = append(tensors,
			gguf.Tensor{Name: base + ".lora_a", Shape: []int{r, a.In}, Data: A, DType: dtype},
			gguf.Tensor{Name: base + ".lora_b", Shape: b.Shape, Data: b.Data, DType: dtype})
	}
	meta := []gguf.KV{
		{Key: "general.architecture", Value: arch},
		{Key: "general.type", Value: "adapter"},
		{Key: "general.name", Value: name},
		{Key: "general.file_type", Value: fileType},
		{Key: "general.quantization_version", Value: uint32(2)},
		{Key: "adapter.type", Value: "lora"},
		{Key: "adapter.lora.alpha", Value: float32(alpha)},
	}
	return gguf.Write(path, meta, tensors)
}

// GGUFAlpha is the adapter.lora.alpha that makes llama.cpp's alpha/r equal the spec's scaling.
func GGUFAlpha(s Spec) float64 {
	if s.RSLoRA {
		return s.Alpha * math.Sqrt(float64(s.Rank))
	}
	return s.Alpha
}
