package lora

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/internal/safetensors"
)

// PEFT adapter files (what Hugging Face PEFT, vLLM and llama.cpp's convert_lora_to_gguf.py read).
const (
	PEFTConfigFile  = "adapter_config.json"
	PEFTWeightsFile = "adapter_model.safetensors"
	peftPrefix      = "base_model.model."
)

// PEFTConfig is the adapter_config.json saddle writes, in PEFT's LoraConfig field names.
type PEFTConfig struct {
	PeftType            string             `json:"peft_type"`
	TaskType            string             `json:"task_type"`
	BaseModelNameOrPath string             `json:"base_model_name_or_path"`
	R                   int                `json:"r"`
	LoraAlpha           float64            `json:"lora_alpha"`
	LoraDropout         float64            `json:"lora_dropout"`
	TargetModules       any                `json:"target_modules"` // []string of module names, or one regex (re.fullmatch)
	LayersToTransform   []int              `json:"layers_to_transform,omitempty"`
	Bias                string             `json:"bias"`
	UseRSLoRA           bool               `json:"use_rslora"`
	UseDoRA             bool               `json:"use_dora"`
	FanInFanOut         bool               `json:"fan_in_fan_out"`
	InferenceMode       bool               `json:"inference_mode"`
	InitLoraWeights     bool               `json:"init_lora_weights"`
	ModulesToSave       []string           `json:"modules_to_save"`
	RankPattern         map[string]int     `json:"rank_pattern"`
	AlphaPattern        map[string]float64 `json:"alpha_pattern"`
	Revision            *string            `json:"revision"`
}

// PEFTOptions tune WritePEFT.
type PEFTOptions struct {
	BaseModel string // base_model_name_or_path
	DType     string // tensor dtype: "F32" (default), "F16" or "BF16"
	// NumLayers is the base model's layer count; with it, layers_to_transform is written only when the adapter
	// leaves some layers out. Zero writes it whenever the spec restricts layers.
	NumLayers int
}

// PEFTKey is the PEFT tensor name of factor "lora_A" or "lora_B" of module.
func PEFTKey(module, factor string) string { return peftPrefix + module + "." + factor + ".weight" }

// WritePEFT writes set as a PEFT LoRA adapter into dir: adapter_config.json and adapter_model.safetensors with
// lora_A [r, in] and lora_B [out, r] per module. A deeper product is folded first (B' = B·M_{L−2}⋯M_1, exact in
// float64), and r and lora_alpha keep the scale, so W + s·B'·A is what saddle applies. An rsLoRA set (s = α/√r) is
// written as lora_alpha = α·√r with use_rslora false: the same s for PEFT and vLLM, and for llama.cpp's
// convert_lora_to_gguf.py, which reads lora_alpha only and would apply a use_rslora adapter √r times too weakly. The files are
// written one by one (each atomically); for an all-or-nothing folder, write into fileio.WriteDir's temporary
// folder, as saddle export does.
func WritePEFT(dir string, set *Set, opts PEFTOptions) error {
	if err := set.Spec.Validate(); err != nil {
		return err
	}
	if len(set.Adapters) == 0 {
		return fmt.Errorf("%s: the adapter set is empty", dir)
	}
	targets, layers := peftTargets(set, opts.NumLayers)
	cfg := PEFTConfig{
		PeftType: "LORA", TaskType: "CAUSAL_LM", BaseModelNameOrPath: opts.BaseModel,
		R: set.Spec.Rank, LoraAlpha: GGUFAlpha(set.Spec), LoraDropout: set.Spec.Dropout, // α/r = s for every reader
		TargetModules: targets, LayersToTransform: layers, Bias: "none", UseRSLoRA: false,
		InferenceMode: true, InitLoraWeights: true, RankPattern: map[string]int{}, AlphaPattern: map[string]float64{},
	}
	named := map[string]safetensors.Tensor{}
	for _, a := range set.Adapters {
		A, B := a.Fold(set.Spec.Depth, set.Spec.Rank)
		named[PEFTKey(a.Module, "lora_A")] = safetensors.Tensor{Shape: []int{set.Spec.Rank, a.In}, Data: A, DType: opts.DType}
		named[PEFTKey(a.Module, "lora_B")] = safetensors.Tensor{Shape: []int{a.Out, set.Spec.Rank}, Data: B, DType: opts.DType}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := safetensors.Write(filepath.Join(dir, PEFTWeightsFile), named, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return fileio.WriteFile(filepath.Join(dir, PEFTConfigFile), append(data, '\n'))
}

// peftTargets expresses the adapted modules in PEFT's terms: module names plus layers_to_transform when the
// modules are every (layer, name) combination of the layers and names present, else one regex matching exactly
// the adapted module paths.
func peftTargets(set *Set, numLayers int) (any, []int) {
	var names []string
	var layers []int
	have := map[string]bool{}
	for _, a := range set.Adapters {
		layer, short, ok := splitModule(a.Module)
		if !ok {
			return exactRegex(set), nil
		}
		have[a.Module] = true
		if !slices.Contains(names, short) {
			names = append(names, short)
		}
		if !slices.Contains(layers, layer) {
			layers = append(layers, layer)
		}
	}
	slices.Sort(names)
	slices.Sort(layers)
	if len(names)*len(layers) != len(set.Adapters) {
		return exactRegex(set), nil
	}
	for _, l := range layers {
		for _, n := range names {
			if !have[moduleName(l, n)] {
				return exactRegex(set), nil
			}
		}
	}
	every := numLayers > 0 && len(layers) == numLayers && layers[0] == 0 && layers[len(layers)-1] == numLayers-1
	if every || (numLayers == 0 && len(set.Spec.Layers) == 0) {
		layers = nil
	}
	return names, layers
}

func exactRegex(set *Set) string {
	alts := make([]string, len(set.Adapters))
	for i, a := range set.Adapters {
		alts[i] = regexp.QuoteMeta(a.Module)
	}
	return "(?:" + strings.Join(alts, "|") + ")"
}

// moduleName is the HF path of a Llama-family linear module.
func moduleName(layer int, short string) string {
	block := "self_attn"
	if short == "gate_proj" || short == "up_proj" || short == "down_proj" {
		block = "mlp"
	}
	return "model.layers." + strconv.Itoa(layer) + "." + block + "." + short
}
