package lora

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/internal/gguf"
	"github.com/saddle-ml/saddle/internal/safetensors"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/tokenizer"
)

// MergeOptions tune the merged exports.
type MergeOptions struct {
	// DType stores the weights: "" keeps each tensor's storage type from the base where it can (a quantized
	// tensor becomes F32 in safetensors; see WriteMergedGGUF for a merged GGUF); "F32", "F16" or "BF16" stores
	// every tensor of a merged HF folder, and the adapted tensors of a merged GGUF, that way. A merged GGUF's
	// adapted tensors can also be quantized: "Q8_0", "Q4_K" or "Q6_K" (MergedGGUFTypes).
	DType string
	// Notes, when not nil, receives one line saying how the adapted tensors of a merged GGUF were stored.
	Notes io.Writer
}

// MergedGGUFTypes are the quantizations a merged GGUF's adapted tensors can be written in.
var MergedGGUFTypes = []string{dtype.Q8_0, dtype.Q4_K, dtype.Q6_K}

func (o MergeOptions) check(ggufOut bool) error {
	switch {
	case o.DType == "" || o.DType == "F32" || o.DType == "F16" || o.DType == "BF16":
		return nil
	case ggufOut && slices.Contains(MergedGGUFTypes, o.DType):
		return nil
	case slices.Contains(MergedGGUFTypes, o.DType):
		return fmt.Errorf("merged weights dtype %s is for merged GGUF files only (safetensors holds F32, F16, BF16)", o.DType)
	}
	return fmt.Errorf("merged weights dtype %q is not supported (F32, F16, BF16, %s for a merged GGUF, or empty for the base's)",
		o.DType, strings.Join(MergedGGUFTypes, ", "))
}

// MergeWeights returns the base weights with every adapted W replaced by W + s·B⋯A, computed in float64 and
// rounded once to float32. Every weight is read into memory as float32 (small models and tests; the merged
// exports read and merge one tensor at a time).
func MergeWeights(p *model.Pretrained, set *Set) (map[string]*model.Tensor, error) {
	if err := set.CheckFits(p.Config); err != nil {
		return nil, fmt.Errorf("adapter on %s: %w", p.Path, err)
	}
	out := map[string]*model.Tensor{}
	for _, name := range p.Names() {
		t, err := p.Tensor(name)
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	for _, a := range set.Adapters {
		name := a.Module + ".weight"
		w := out[name]
		if w == nil || len(w.Data) != a.Out*a.In {
			return nil, fmt.Errorf("%s: tensor %q is missing or not [%d, %d]", p.Path, name, a.Out, a.In)
		}
		out[name] = &model.Tensor{Shape: slices.Clone(w.Shape), Data: addDelta(w.Data, set.DeltaW(a))}
	}
	return out, nil
}

func addDelta(w []float32, dw []float64) []float32 {
	out := make([]float32, len(w))
	for i, v := range w {
		out[i] = float32(float64(v) + dw[i])
	}
	return out
}

// hfTokenizerFiles are the files of an HF folder that describe its tokenizer and generation defaults.
var hfTokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
	"added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "generation_config.json"}

// WriteMergedHF writes the base model with the adapter folded in as a plain Hugging Face folder in dir:
// config.json, model.safetensors and the tokenizer. An HF base's config and tokenizer files are copied; a GGUF
// base gets a config.json built from its configuration and a tokenizer.json generated from its vocabulary
// (tokenizer.HFFilesFromGGUF). The files are written one by one (each atomically); for an all-or-nothing folder,
// write into fileio.WriteDir's temporary folder, as saddle export does.
func WriteMergedHF(dir string, p *model.Pretrained, set *Set, opts MergeOptions) error {
	if err := opts.check(false); err != nil {
		return err
	}
	if err := set.CheckFits(p.Config); err != nil {
		return fmt.Errorf("adapter on %s: %w", p.Path, err)
	}
	byName := map[string]*Adapter{}
	for _, a := range set.Adapters {
		name := a.Module + ".weight"
		if shape := p.Shape(name); len(shape) != 2 || shape[0] != a.Out || shape[1] != a.In {
			return fmt.Errorf("%s: tensor %q is missing or not [%d, %d]", p.Path, name, a.Out, a.In)
		}
		byName[name] = a
	}
	// Each tensor is read (and merged) as it is written: one tensor's floats at a time.
	named := make(map[string]safetensors.Tensor, len(p.Names()))
	perDType := map[string]int{}
	for _, name := range p.Names() {
		shape := p.Shape(name)
		dt := opts.DType
		if dt == "" {
			dt = p.DTypes[name]
			if !safetensors.CanWrite(dt) {
				dt = "F32" // quantized types and anything safetensors cannot hold: F32 keeps the values exactly
			}
		}
		a := byName[name]
		named[name] = safetensors.Tensor{Shape: shape, DType: dt, Load: func() ([]float32, error) {
			w, err := p.Tensor(name)
			switch {
			case err != nil:
				return nil, err
			case a == nil:
				return w.Data, nil
			}
			return addDelta(w.Data, set.DeltaW(a)), nil
		}}
		n := 1
		for _, d := range shape {
			n *= d
		}
		perDType[dt] += n
	}
	torchDType := map[string]string{"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dominant(perDType)]

	// Everything that can fail on the base's metadata comes before the first file is written.
	var files = map[string][]byte{}
	switch p.Format {
	case "gguf":
		cfg, err := HFConfigJSON(p.Config, torchDType)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Path, err)
		}
		files["config.json"] = cfg
		gen := map[string]any{"bos_token_id": nullableID(p.Config.BOSTokenID), "eos_token_id": eosValue(p.Config.EOSTokenIDs)}
		if files["generation_config.json"], err = json.MarshalIndent(gen, "", "  "); err != nil {
			return err
		}
		tj, tc, err := tokenizer.HFFilesFromGGUF(p.Path)
		if err != nil {
			return fmt.Errorf("merged model: generating the tokenizer: %w", err)
		}
		files["tokenizer.json"], files["tokenizer_config.json"] = tj, tc
	case "hf":
		cfg, err := os.ReadFile(filepath.Join(p.Path, "config.json"))
		if err != nil {
			return err
		}
		if opts.DType != "" { // say what the file now holds; transformers uses it for torch_dtype="auto"
			var m map[string]any
			dec := json.NewDecoder(bytes.NewReader(cfg))
			dec.UseNumber()
			if err := dec.Decode(&m); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(p.Path, "config.json"), err)
			}
			m["torch_dtype"] = torchDType
			if cfg, err = json.MarshalIndent(m, "", "  "); err != nil {
				return err
			}
		}
		files["config.json"] = cfg
		for _, name := range hfTokenizerFiles {
			data, err := os.ReadFile(filepath.Join(p.Path, name))
			if errors.Is(err, os.ErrNotExist) {
				continue
			} else if err != nil {
				return err
			}
			files[name] = data
		}
	default:
		return fmt.Errorf("%s: unknown base format %q", p.Path, p.Format)
	}
	if samePath(dir, p.Path) {
		return fmt.Errorf("%s: the merged model would overwrite its base; choose another output folder", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), named, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	names := slices.Sorted(maps.Keys(files))
	for _, name := range names {
		data := files[name]
		if !bytes.HasSuffix(data, []byte("\n")) && strings.HasSuffix(name, ".json") {
			data = append(data, '\n')
		}
		if err := fileio.WriteFile(filepath.Join(dir, name), data); err != nil {
			return err
		}
	}
	return nil
}

func dominant(count map[string]int) string {
	best := "F32"
	for _, dt := range []string{"F32", "BF16", "F16"} {
		if count[dt] > count[best] {
			best = dt
		}
	}
	return best
}

// samePath reports whether a and b name the same file or folder (both existing), or the same cleaned path.
func samePath(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(sa, sb)
	}
	absA, errA := filepath.Abs(a)
	absB, errB := filepath.Abs(b)
	return errA == nil && errB == nil && absA == absB
}

func nullableID(id int) any {
	if id < 0 {
		return nil
	}
	return id
}

func eosValue(ids []int) any {
	switch len(ids) {
	case 0:
		return nil
	case 1:
		return ids[0]
	}
	return ids
}

// HFConfigJSON writes a transformers config.json for cfg (llama, mistral, qwen2 or qwen3) that saddle and
// transformers read back as the same model. torchDType is "float32", "float16" or "bfloat16".
func HFConfigJSON(cfg model.Config, torchDType string) ([]byte, error) {
	class := map[string]string{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
		"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[cfg.Architecture]
	if class == "" {
		return nil, fmt.Errorf("architecture %q has no config.json form here (llama, mistral, qwen2, qwen3)", cfg.Architecture)
	}
	var kv orderedJSON
	kv.add("architectures", []string{class})
	kv.add("model_type", cfg.Architecture)
	kv.add("hidden_size", cfg.HiddenSize)
	kv.add("intermediate_size", cfg.IntermediateSize)
	kv.add("num_hidden_layers", cfg.NumLayers)
	kv.add("num_attention_heads", cfg.NumHeads)
	kv.add("num_key_value_heads", cfg.NumKVHeads)
	kv.add("head_dim", cfg.HeadDim)
	kv.add("vocab_size", cfg.VocabSize)
	kv.add("max_position_embeddings", cfg.MaxPositions)
	kv.add("rms_norm_eps", cfg.RMSNormEps)
	kv.add("rope_theta", cfg.RopeTheta)
	if s := cfg.RopeScaling; s != nil {
		switch s.Type {
		case "linear":
			kv.add("rope_scaling", map[string]any{"rope_type": "linear", "factor": s.Factor})
		case "llama3":
			kv.add("rope_scaling", map[string]any{"rope_type": "llama3", "factor": s.Factor, "low_freq_factor": s.LowFreqFactor,
				"high_freq_factor": s.HighFreqFactor, "original_max_position_embeddings": s.OriginalMaxPositions})
		default:
			return nil, fmt.Errorf("rope scaling %q (GGUF rope_freqs) has no exact config.json form; export merged-gguf instead", s.Type)
		}
	}
	kv.add("hidden_act", "silu")
	kv.add("tie_word_embeddings", cfg.TieEmbeddings)
	switch cfg.Architecture {
	case "llama":
		kv.add("attention_bias", false)
		kv.add("mlp_bias", false)
	case "mistral":
		if cfg.SlidingWindow > 0 {
			kv.add("sliding_window", cfg.SlidingWindow)
		} else {
			kv.add("sliding_window", nil) // null disables it; absent would mean Mistral's default 4096
		}
	case "qwen2", "qwen3":
		kv.add("use_sliding_window", false)
		if cfg.Architecture == "qwen3" {
			kv.add("attention_bias", false)
		}
	}
	kv.add("bos_token_id", nullableID(cfg.BOSTokenID))
	kv.add("eos_token_id", eosValue(cfg.EOSTokenIDs))
	kv.add("torch_dtype", torchDType)
	return kv.marshal()
}

// orderedJSON is a JSON object that keeps insertion order (config.json reads better in the usual order).
type orderedJSON struct {
	keys []string
	vals []any
}

func (o *orderedJSON) add(k string, v any) { o.keys, o.vals = append(o.keys, k), append(o.vals, v) }

func (o *orderedJSON) marshal() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("{\n")
	for i, k := range o.keys {
		v, err := json.Marshal(o.vals[i])
		if err != nil {
			return nil, fmt.Errorf("config.json %s: %w", k, err)
		}
		fmt.Fprintf(&b, "  %q: %s", k, v)
		if i < len(o.keys)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// WriteMergedGGUF writes a GGUF base with the adapter folded in to path: every metadata key and tensor of the
// base in its order, with each adapted W replaced by W + s·B⋯A (llama.cpp's Q/K row order restored for the
// llama architecture). Tensors the adapter does not touch are copied byte for byte from the base file. Adapted
// tensors are decoded, merged and encoded one at a time, in opts.DType when set (a quantization only for tensors
// whose rows are whole blocks of it); otherwise a float tensor (F32, F16, BF16) keeps its type and a quantized
// one is written as F16: quantizing it again would drop every part of ΔW smaller than half a quantization step,
// while F16 keeps ΔW to about 2⁻¹¹ of the weight. opts.Notes gets one line saying how many tensors were written
// in which type.
func WriteMergedGGUF(path string, p *model.Pretrained, set *Set, opts MergeOptions) error {
	if err := opts.check(true); err != nil {
		return err
	}
	if p.Format != "gguf" {
		return fmt.Errorf("%s: merged-gguf needs a GGUF base model (this one is %s); use the merged format", p.Path, p.Format)
	}
	if err := set.CheckFits(p.Config); err != nil {
		return fmt.Errorf("adapter on %s: %w", p.Path, err)
	}
	if samePath(path, p.Path) {
		return fmt.Errorf("%s: the merged model would overwrite its base; choose another output file", path)
	}
	f, err := gguf.Open(p.Path)
	if err != nil {
		return err
	}
	byModule := map[string]*Adapter{}
	for _, a := range set.Adapters {
		byModule[a.Module+".weight"] = a
	}
	fh, err := os.Open(p.Path)
	if err != nil {
		return err
	}
	defer fh.Close()
	out := make([]gguf.Tensor, 0, len(f.Tensors))
	stored := map[string]int{} // adapted tensors per stored type
	requantized := 0           // adapted tensors whose base is quantized, written in a float type
	unblocked := 0             // adapted tensors whose rows are not whole blocks of opts.DType
	for i := range f.Tensors {
		info := &f.Tensors[i]
		shape := info.Shape()
		t := gguf.Tensor{Name: info.Name, Shape: shape, DType: info.Type.String()}
		hf, _ := model.HFNameFromGGUF(info.Name)
		a := byModule[hf]
		if a == nil {
			if info.Size < 0 {
				return fmt.Errorf("%s: tensor %q: type %s cannot be copied (its size is not known here)", p.Path, info.Name, info.Type)
			}
			t.Raw = io.NewSectionReader(fh, f.DataOffset+int64(info.Offset), info.Size)
			out = append(out, t)
			continue
		}
		// A float tensor keeps its type and a quantized one becomes F16, unless opts.DType asks otherwise and
		// the tensor's rows are whole blocks of it (llama.cpp's quantize tool falls back the same way).
		if dtype.Quantized(t.DType) {
			t.DType = dtype.F16
		}
		switch {
		case opts.DType == "":
		case dtype.Quantized(opts.DType) && shape[len(shape)-1]%dtype.BlockSize(opts.DType) != 0:
			unblocked++
		default:
			t.DType = opts.DType
		}
		if dtype.Quantized(info.Type.String()) && !dtype.Quantized(t.DType) {
			requantized++
		}
		stored[t.DType]++
		dt := t.DType
		t.Load = func() ([]float32, error) {
			data, err := f.ReadTensor(fh, info)
			if err != nil {
				return nil, err
			}
			merged, err := mergeGGUFWeight(p, set, a, hf, shape, data)
			if err != nil {
				return nil, fmt.Errorf("%s: tensor %q: %w", p.Path, info.Name, err)
			}
			if dt == dtype.F16 {
				for i, v := range merged {
					if math.Abs(float64(v)) > 65504 {
						return nil, fmt.Errorf("%s: tensor %q: merged value %g (index %d) overflows F16; use --dtype f32 or bf16",
							p.Path, info.Name, v, i)
					}
				}
			}
			return merged, nil
		}
		out = append(out, t)
	}
	if sum(stored) != len(set.Adapters) {
		return fmt.Errorf("%s: only %d of the adapter's %d modules have a tensor in the file", p.Path, sum(stored), len(set.Adapters))
	}
	if err := gguf.Write(path, f.KVs, out); err != nil {
		return err
	}
	if opts.Notes != nil {
		var parts []string
		for _, dt := range slices.Sorted(maps.Keys(stored)) {
			parts = append(parts, fmt.Sprintf("%d %s", stored[dt], dt))
		}
		line := fmt.Sprintf("merged-gguf: adapted tensors written as %s; %d other tensors copied byte for byte",
			strings.Join(parts, ", "), len(out)-sum(stored))
		if unblocked > 0 {
			line += fmt.Sprintf(" (%d have rows that are not whole %s blocks of %d and keep a float type)", unblocked,
				opts.DType, dtype.BlockSize(opts.DType))
		}
		if requantized > 0 && opts.DType == "" {
			line += fmt.Sprintf(" (%d are quantized in the base: written in a float type so that ΔW smaller than a "+
				"quantization step survives; --dtype q8_0, q4_k or q6_k quantizes them)", requantized)
		}
		fmt.Fprintln(opts.Notes, line)
	}
	return nil
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// mergeGGUFWeight adds ΔW (HF row order) to a GGUF weight, going through HF order for llama's permuted Q/K.
func mergeGGUFWeight(p *model.Pretrained, set *Set, a *Adapter, hf string, shape []int, data []float32) ([]float32, error) {
	if len(shape) != 2 || shape[0] != a.Out || shape[1] != a.In {
		return nil, fmt.Errorf("shape %v, adapter made for [%d, %d]", shape, a.Out, a.In)
	}
	heads := permutedHeads(p.Config, a.Module)
	w := &model.Tensor{Shape: shape, Data: data}
	var err error
	if heads > 0 {
		if w, err = model.LlamaCppUnpermute(w, heads); err != nil {
			return nil, err
		}
	}
	merged := &model.Tensor{Shape: shape, Data: addDelta(w.Data, set.DeltaW(a))}
	if heads > 0 {
		if merged, err = model.LlamaCppPermute(merged, heads); err != nil {
			return nil, err
		}
	}
	return merged.Data, nil
}

// permutedHeads is the head count llama.cpp's converter permuted module's rows with, 0 when it did not.
func permutedHeads(cfg model.Config, module string) int {
	if cfg.Architecture != "llama" && cfg.Architecture != "mistral" {
		return 0
	}
	switch {
	case strings.HasSuffix(module, ".self_attn.q_proj"):
		return cfg.NumHeads
	case strings.HasSuffix(module, ".self_attn.k_proj"):
		return cfg.NumKVHeads
	}
	return 0
}
