package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/internal/safetensors"
)

// hfConfig is the subset of a transformers config.json this package reads. Pointers tell "absent" from zero.
type hfConfig struct {
	ModelType             string          `json:"model_type"`
	Architectures         []string        `json:"architectures"`
	TorchDType            *string         `json:"torch_dtype"`
	DType                 *string         `json:"dtype"` // transformers ≥ 5 renamed torch_dtype
	HiddenSize            *int            `json:"hidden_size"`
	IntermediateSize      *int            `json:"intermediate_size"`
	NumHiddenLayers       *int            `json:"num_hidden_layers"`
	NumAttentionHeads     *int            `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	VocabSize             *int            `json:"vocab_size"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	RopeParameters        json.RawMessage `json:"rope_parameters"` // transformers ≥ 5 folds theta and scaling here
	PartialRotaryFactor   *float64        `json:"partial_rotary_factor"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	AttentionBias         *bool           `json:"attention_bias"`
	MLPBias               *bool           `json:"mlp_bias"`
	HiddenAct             *string         `json:"hidden_act"`
	SlidingWindow         json.RawMessage `json:"sliding_window"`
	UseSlidingWindow      *bool           `json:"use_sliding_window"`
	BOSTokenID            json.RawMessage `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
}

// hfDefaults are transformers' defaults for the fields a config.json may leave out, per architecture
// (LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config).
type hfDefaults struct {
	kvHeads       int // 0: same as heads
	headDim       int // 0: hidden/heads
	maxPositions  int
	bos           int   // -1: none
	eos           []int // nil: none
	slidingWindow int   // mistral applies 4096 unless the key is present (null disables)
}

var hfArchDefaults = map[string]hfDefaults{
	"llama":   {maxPositions: 2048, bos: 1, eos: []int{2}},
	"mistral": {kvHeads: 8, maxPositions: 4096 * 32, bos: 1, eos: []int{2}, slidingWindow: 4096},
	"qwen2":   {kvHeads: 32, maxPositions: 32768, bos: -1},
	"qwen3":   {kvHeads: 32, headDim: 128, maxPositions: 32768, bos: -1},
}

// hfCausalLM is the transformers class of each supported model_type's causal language model.
var hfCausalLM = map[string]string{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

// hfTorchDTypes are the torch_dtype values of the float checkpoints saddle reads (each weight's own dtype comes
// from its safetensors header).
var hfTorchDTypes = []string{"float32", "float16", "bfloat16"}

// checkHFHead refuses an architectures entry that is not the causal LM of model_type (a classification or
// encoder head has other weights, and another family other layers) and a torch_dtype saddle does not read (such
// as a quantized checkpoint's), each naming the key.
func checkHFHead(path string, hc hfConfig) error {
	want := hfCausalLM[hc.ModelType]
	for _, a := range hc.Architectures {
		if !strings.EqualFold(a, want) { // early Llama conversions wrote LLaMAForCausalLM
			return fmt.Errorf("%s: architectures %q is not supported with model_type %q: saddle runs the causal language model %s "+
				"(a model with another head or of another family has other weights)", path, a, hc.ModelType, want)
		}
	}
	for _, d := range []struct {
		key string
		v   *string
	}{{"torch_dtype", hc.TorchDType}, {"dtype", hc.DType}} {
		if d.v != nil && !slices.Contains(hfTorchDTypes, *d.v) {
			return fmt.Errorf("%s: %s %q is not supported: saddle reads checkpoints of %s weights (for a quantized model, use its unquantized release or a GGUF file)",
				path, d.key, *d.v, strings.Join(hfTorchDTypes, ", "))
		}
	}
	return nil
}

// parseHFConfig reads config.json (and generation_config.json beside it, for eos/bos) into a Config.
func parseHFConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	data, err := fileio.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var hc hfConfig
	if err := json.Unmarshal(data, &hc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	def, ok := hfArchDefaults[hc.ModelType]
	if !ok {
		return nil, fmt.Errorf("%s: model_type %q is not supported (supported: llama, mistral, qwen2, qwen3)", path, hc.ModelType)
	}
	if err := checkHFHead(path, hc); err != nil {
		return nil, err
	}
	if hc.HiddenAct != nil && *hc.HiddenAct != "silu" {
		return nil, fmt.Errorf("%s: hidden_act %q is not supported (only silu)", path, *hc.HiddenAct)
	}
	if hc.MLPBias != nil && *hc.MLPBias {
		return nil, fmt.Errorf("%s: mlp_bias true is not supported", path)
	}
	if hc.PartialRotaryFactor != nil && *hc.PartialRotaryFactor != 1 {
		return nil, fmt.Errorf("%s: partial_rotary_factor %g is not supported", path, *hc.PartialRotaryFactor)
	}
	c := &Config{Architecture: hc.ModelType, RMSNormEps: 1e-6, RopeTheta: 10000, BOSTokenID: def.bos,
		EOSTokenIDs: slices.Clone(def.eos), MaxPositions: def.maxPositions}
	for _, f := range []struct {
		key string
		src *int
		dst *int
	}{
		{"hidden_size", hc.HiddenSize, &c.HiddenSize}, {"intermediate_size", hc.IntermediateSize, &c.IntermediateSize},
		{"num_hidden_layers", hc.NumHiddenLayers, &c.NumLayers}, {"num_attention_heads", hc.NumAttentionHeads, &c.NumHeads},
		{"vocab_size", hc.VocabSize, &c.VocabSize},
	} {
		if f.src == nil {
			return nil, fmt.Errorf("%s: %s is missing", path, f.key)
		}
		*f.dst = *f.src
	}
	if c.NumHeads <= 0 || c.HiddenSize <= 0 {
		return nil, fmt.Errorf("%s: hidden_size %d and num_attention_heads %d must be positive", path, c.HiddenSize, c.NumHeads)
	}
	c.NumKVHeads = def.kvHeads
	if hc.NumKeyValueHeads != nil {
		c.NumKVHeads = *hc.NumKeyValueHeads
	}
	if c.NumKVHeads == 0 {
		c.NumKVHeads = c.NumHeads
	}
	c.HeadDim = def.headDim
	if hc.HeadDim != nil {
		c.HeadDim = *hc.HeadDim
	}
	if c.HeadDim == 0 {
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	if hc.MaxPositionEmbeddings != nil {
		c.MaxPositions = *hc.MaxPositionEmbeddings
	}
	if hc.RMSNormEps != nil {
		c.RMSNormEps = *hc.RMSNormEps
	}
	if hc.TieWordEmbeddings != nil {
		c.TieEmbeddings = *hc.TieWordEmbeddings
	}
	bias := hc.AttentionBias != nil && *hc.AttentionBias
	switch hc.ModelType {
	case "qwen2":
		c.AttentionBias = true // Qwen2Attention always has q/k/v biases (and none on o_proj)
	case "qwen3":
		c.QKNorm = true
		if bias {
			return nil, fmt.Errorf("%s: attention_bias true is not supported for qwen3 (it adds an o_proj bias)", path)
		}
	default:
		if bias {
			return nil, fmt.Errorf("%s: attention_bias true is not supported for %s (it adds an o_proj bias)", path, hc.ModelType)
		}
	}
	if c.SlidingWindow, err = hfSlidingWindow(&hc, def); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.RopeTheta, c.RopeScaling, err = hfRope(&hc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if ids, present, err := tokenIDs(hc.BOSTokenID); err != nil {
		return nil, fmt.Errorf("%s: bos_token_id: %w", path, err)
	} else if present {
		c.BOSTokenID = -1
		if len(ids) > 0 {
			c.BOSTokenID = ids[0]
		}
	}
	if ids, present, err := tokenIDs(hc.EOSTokenID); err != nil {
		return nil, fmt.Errorf("%s: eos_token_id: %w", path, err)
	} else if present {
		c.EOSTokenIDs = ids
	}
	if err := mergeGenerationConfig(dir, c); err != nil {
		return nil, err
	}
	if err := checkConfig(path, c); err != nil {
		return nil, err
	}
	return c, nil
}

// hfSlidingWindow follows transformers: Mistral applies sliding_window (default 4096, null disables); Qwen2/3
// only with use_sliding_window, which this package does not implement (it applies per layer range).
func hfSlidingWindow(hc *hfConfig, def hfDefaults) (int, error) {
	if hc.ModelType == "qwen2" || hc.ModelType == "qwen3" {
		if hc.UseSlidingWindow != nil && *hc.UseSlidingWindow {
			return 0, errors.New("use_sliding_window true is not supported")
		}
		return 0, nil
	}
	if hc.ModelType != "mistral" {
		return 0, nil // LlamaConfig has no sliding window
	}
	if hc.SlidingWindow == nil {
		return def.slidingWindow, nil
	}
	var w *int
	if err := json.Unmarshal(hc.SlidingWindow, &w); err != nil {
		return 0, fmt.Errorf("sliding_window: %w", err)
	}
	if w == nil {
		return 0, nil
	}
	return *w, nil
}

// hfRope reads rope_theta and the scaling, from rope_parameters (transformers ≥ 5) or rope_theta/rope_scaling.
func hfRope(hc *hfConfig) (float64, *RopeScaling, error) {
	theta := 10000.0
	if hc.RopeTheta != nil {
		theta = *hc.RopeTheta
	}
	raw := hc.RopeScaling
	if len(hc.RopeParameters) > 0 && string(hc.RopeParameters) != "null" {
		raw = hc.RopeParameters
	}
	if len(raw) == 0 || string(raw) == "null" {
		return theta, nil, nil
	}
	var p struct {
		RopeTheta                     *float64 `json:"rope_theta"`
		RopeType                      string   `json:"rope_type"`
		Type                          string   `json:"type"`
		Factor                        *float64 `json:"factor"`
		LowFreqFactor                 *float64 `json:"low_freq_factor"`
		HighFreqFactor                *float64 `json:"high_freq_factor"`
		OriginalMaxPositionEmbeddings *int     `json:"original_max_position_embeddings"`
		PartialRotaryFactor           *float64 `json:"partial_rotary_factor"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return 0, nil, fmt.Errorf("rope parameters: %w", err)
	}
	if p.RopeTheta != nil {
		theta = *p.RopeTheta
	}
	if p.PartialRotaryFactor != nil && *p.PartialRotaryFactor != 1 {
		return 0, nil, fmt.Errorf("partial_rotary_factor %g is not supported", *p.PartialRotaryFactor)
	}
	kind := p.RopeType
	if kind == "" {
		kind = p.Type
	}
	get := func(v *float64, key string) (float64, error) {
		if v == nil {
			return 0, fmt.Errorf("%s rope scaling needs %s", kind, key)
		}
		return *v, nil
	}
	var err error
	switch kind {
	case "", "default":
		return theta, nil, nil
	case "linear":
		s := &RopeScaling{Type: "linear"}
		if s.Factor, err = get(p.Factor, "factor"); err != nil {
			return 0, nil, err
		}
		return theta, s, nil
	case "llama3":
		s := &RopeScaling{Type: "llama3"}
		if s.Factor, err = get(p.Factor, "factor"); err != nil {
			return 0, nil, err
		}
		if s.LowFreqFactor, err = get(p.LowFreqFactor, "low_freq_factor"); err != nil {
			return 0, nil, err
		}
		if s.HighFreqFactor, err = get(p.HighFreqFactor, "high_freq_factor"); err != nil {
			return 0, nil, err
		}
		if p.OriginalMaxPositionEmbeddings == nil {
			return 0, nil, errors.New("llama3 rope scaling needs original_max_position_embeddings")
		}
		s.OriginalMaxPositions = *p.OriginalMaxPositionEmbeddings
		return theta, s, nil
	}
	return 0, nil, fmt.Errorf("rope scaling type %q is not supported (supported: default, linear, llama3)", kind)
}

// tokenIDs parses a token id field that may be absent, null, an int or a list of ints.
func tokenIDs(raw json.RawMessage) (ids []int, present bool, err error) {
	if len(raw) == 0 {
		return nil, false, nil
	}
	if string(raw) == "null" {
		return nil, true, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int{one}, true, nil
	}
	if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, true, fmt.Errorf("want an int or a list of ints, got %s", raw)
	}
	return ids, true, nil
}

// mergeGenerationConfig adds generation_config.json's eos ids (what generate() stops at) and its bos if
// config.json had none.
func mergeGenerationConfig(dir string, c *Config) error {
	path := filepath.Join(dir, "generation_config.json")
	data, err := fileio.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var g struct {
		BOSTokenID json.RawMessage `json:"bos_token_id"`
		EOSTokenID json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(data, &g); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	eos, _, err := tokenIDs(g.EOSTokenID)
	if err != nil {
		return fmt.Errorf("%s: eos_token_id: %w", path, err)
	}
	c.EOSTokenIDs = appendUnique(c.EOSTokenIDs, eos...)
	if c.BOSTokenID < 0 {
		bos, _, err := tokenIDs(g.BOSTokenID)
		if err != nil {
			return fmt.Errorf("%s: bos_token_id: %w", path, err)
		}
		if len(bos) > 0 {
			c.BOSTokenID = bos[0]
		}
	}
	return nil
}

// safetensorsSources lists the tensors of one safetensors file, whose header internal/safetensors checks against
// the file.
func safetensorsSources(path string) (map[string]*tensorSource, error) {
	h, err := safetensors.ReadHeader(path)
	if err != nil {
		return nil, err
	}
	srcs := make(map[string]*tensorSource, len(h.Entries))
	for _, e := range h.Entries {
		if _, err := dtype.Elements(e.Shape); err != nil { // safetensors allows scalars; model weights are none
			return nil, fmt.Errorf("%s: tensor %q: %w", path, e.Name, err)
		}
		srcs[e.Name] = &tensorSource{file: path, name: e.Name, dtype: e.DType, shape: e.Shape, offset: e.Offset}
	}
	return srcs, nil
}

// ignoredHFTensor reports tensors that some checkpoints carry but that hold nothing to load.
func ignoredHFTensor(name string) bool {
	return strings.HasSuffix(name, ".rotary_emb.inv_freq") // recomputed from rope_theta
}

// loadHF loads a Hugging Face folder.
func loadHF(dir string) (*Pretrained, error) {
	cfg, err := parseHFConfig(dir)
	if err != nil {
		return nil, err
	}
	srcs, err := hfSources(dir)
	if err != nil {
		return nil, err
	}
	for name := range srcs {
		if ignoredHFTensor(name) {
			delete(srcs, name)
		}
	}
	if cfg.TieEmbeddings {
		delete(srcs, "lm_head.weight") // some tied checkpoints store a copy; the embedding is the truth
	}
	if err := checkSources(dir, cfg, srcs, false); err != nil {
		return nil, err
	}
	dtypes, dtype := storageDTypes(srcs)
	return &Pretrained{Config: *cfg, Path: dir, Format: "hf", DType: dtype, DTypes: dtypes, sources: srcs}, nil
}

// hfSources lists the tensors of model.safetensors, or of every shard named by model.safetensors.index.json.
// shardIndex is model.safetensors.index.json: which shard holds each tensor.
type shardIndex struct {
	WeightMap map[string]string `json:"weight_map"`
}

func parseWeightMap(path string, data []byte) (shardIndex, error) {
	var index shardIndex
	if err := json.Unmarshal(data, &index); err != nil {
		return index, fmt.Errorf("%s: %w", path, err)
	}
	return index, nil
}

// plainFileName reports a file name without a folder part; shard names come from the file and must stay inside
// the model folder.
func plainFileName(name string) bool {
	return name != "" && name != "." && name != ".." && filepath.Base(name) == name
}

func hfSources(dir string) (map[string]*tensorSource, error) {
	indexPath := filepath.Join(dir, "model.safetensors.index.json")
	data, err := fileio.ReadFile(indexPath)
	if errors.Is(err, os.ErrNotExist) {
		single := filepath.Join(dir, "model.safetensors")
		if _, err := os.Stat(single); err != nil {
			return nil, fmt.Errorf("%s: no model.safetensors or model.safetensors.index.json (only safetensors weights are supported)", dir)
		}
		return safetensorsSources(single)
	} else if err != nil {
		return nil, err
	}
	index, err := parseWeightMap(indexPath, data)
	if err != nil {
		return nil, err
	}
	if len(index.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: empty weight_map", indexPath)
	}
	shards := map[string]map[string]*tensorSource{}
	srcs := map[string]*tensorSource{}
	names := make([]string, 0, len(index.WeightMap))
	for name := range index.WeightMap {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		shard := index.WeightMap[name]
		// Shard names come from the file: keep them inside dir.
		if !plainFileName(shard) {
			return nil, fmt.Errorf("%s: tensor %q: shard name %q is not a plain file name", indexPath, name, shard)
		}
		entries, ok := shards[shard]
		if !ok {
			if entries, err = safetensorsSources(filepath.Join(dir, shard)); errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%s: tensor %q: shard %s named by the index is missing: %w", indexPath, name, shard, err)
			} else if err != nil {
				return nil, err
			}
			shards[shard] = entries
		}
		src, ok := entries[name]
		if !ok {
			return nil, fmt.Errorf("%s: tensor %q: not found in shard %s named by the index", indexPath, name, shard)
		}
		srcs[name] = src
	}
	// Tensors in a shard but absent from the index would be silently dropped; they are a broken checkpoint.
	for shard, entries := range shards {
		for name := range entries {
			if got, ok := index.WeightMap[name]; !ok {
				return nil, fmt.Errorf("%s: tensor %q: in shard %s but not in the index", indexPath, name, shard)
			} else if got != shard {
				return nil, fmt.Errorf("%s: tensor %q: in shard %s but the index maps it to %s", indexPath, name, shard, got)
			}
		}
	}
	return srcs, nil
}
