package model

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/gguf"
)

// ggufGlobalNames and ggufLayerNames map llama.cpp tensor names to HF names (layer names after "blk.N.").
var (
	ggufGlobalNames = map[string]string{
		"token_embd.weight":  "model.embed_tokens.weight",
		"output_norm.weight": "model.norm.weight",
		"output.weight":      "lm_head.weight",
	}
	ggufLayerNames = map[string]string{
		"attn_norm.weight":   "input_layernorm.weight",
		"ffn_norm.weight":    "post_attention_layernorm.weight",
		"attn_q.weight":      "self_attn.q_proj.weight",
		"attn_k.weight":      "self_attn.k_proj.weight",
		"attn_v.weight":      "self_attn.v_proj.weight",
		"attn_output.weight": "self_attn.o_proj.weight",
		"attn_q.bias":        "self_attn.q_proj.bias",
		"attn_k.bias":        "self_attn.k_proj.bias",
		"attn_v.bias":        "self_attn.v_proj.bias",
		"attn_q_norm.weight": "self_attn.q_norm.weight",
		"attn_k_norm.weight": "self_attn.k_norm.weight",
		"ffn_gate.weight":    "mlp.gate_proj.weight",
		"ffn_up.weight":      "mlp.up_proj.weight",
		"ffn_down.weight":    "mlp.down_proj.weight",
	}
)

// ggufRopeFreqs is llama.cpp's tensor of per-frequency RoPE divisors (how it stores llama3 rope scaling).
const ggufRopeFreqs = "rope_freqs.weight"

// HFNameFromGGUF maps a llama.cpp tensor name ("blk.3.attn_q.weight") to its HF name
// ("model.layers.3.self_attn.q_proj.weight"). ok is false for names outside the Llama-family set.
func HFNameFromGGUF(name string) (hf string, ok bool) {
	return translateName(name, ggufGlobalNames, "blk.", ggufLayerNames, "model.layers.")
}

// GGUFNameFromHF is the inverse of HFNameFromGGUF.
func GGUFNameFromHF(name string) (string, bool) {
	return translateName(name, hfGlobalNames, "model.layers.", hfLayerNames, "blk.")
}

// hfGlobalNames and hfLayerNames are the inverse tables.
var hfGlobalNames, hfLayerNames = inverse(ggufGlobalNames), inverse(ggufLayerNames)

func inverse(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[v] = k
	}
	return out
}

// translateName maps a global name through globals, and a layer name "<from>N.<suffix>" to "<to>N.<layers[suffix]>".
func translateName(name string, globals map[string]string, from string, layers map[string]string, to string) (string, bool) {
	if t, ok := globals[name]; ok {
		return t, true
	}
	rest, found := strings.CutPrefix(name, from)
	if !found {
		return "", false
	}
	num, suffix, found := strings.Cut(rest, ".")
	layer, err := strconv.Atoi(num)
	if !found || err != nil || layer < 0 || strconv.Itoa(layer) != num {
		return "", false
	}
	if t, ok := layers[suffix]; ok {
		return to + num + "." + t, true
	}
	return "", false
}

// ggufMeta reads typed metadata with errors that name the file and key.
type ggufMeta struct {
	path string
	f    *gguf.File
}

// int reads an integer key; ok is false when absent.
func (m ggufMeta) int(key string) (v int, ok bool, err error) {
	raw, found := m.f.Get(key)
	if !found {
		return 0, false, nil
	}
	x, isInt := gguf.Int(raw)
	if !isInt {
		if n, ok := raw.(uint64); ok {
			return 0, true, fmt.Errorf("%s: metadata %s = %d is out of range", m.path, key, n)
		}
		return 0, true, fmt.Errorf("%s: metadata %s has type %s, want an integer", m.path, key, gguf.TypeName(raw))
	}
	if x < math.MinInt32 || x > math.MaxUint32 {
		return 0, true, fmt.Errorf("%s: metadata %s = %d is out of range", m.path, key, x)
	}
	return int(x), true, nil
}

// requiredInt reads an integer key that must be present.
func (m ggufMeta) requiredInt(key string) (int, error) {
	v, ok, err := m.int(key)
	if err == nil && !ok {
		err = fmt.Errorf("%s: metadata %s is missing", m.path, key)
	}
	return v, err
}

// float reads a float key (float32 kept at its shortest decimal form); ok is false when absent.
func (m ggufMeta) float(key string) (v float64, ok bool, err error) {
	raw, found := m.f.Get(key)
	if !found {
		return 0, false, nil
	}
	switch x := raw.(type) {
	case float32:
		return shortFloat(x), true, nil
	case float64:
		return x, true, nil
	}
	return 0, true, fmt.Errorf("%s: metadata %s has type %s, want a float", m.path, key, gguf.TypeName(raw))
}

// str reads a string key; "" when absent.
func (m ggufMeta) str(key string) (string, error) {
	v, found := m.f.Get(key)
	if !found {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: metadata %s has type %s, want a string", m.path, key, gguf.TypeName(v))
	}
	return s, nil
}

// tokenID reads a token id key: -1 when absent or set to llama.cpp's "none" (0xFFFFFFFF or -1).
func (m ggufMeta) tokenID(key string) (int, error) {
	v, ok, err := m.int(key)
	if err != nil || !ok || v == math.MaxUint32 || v == -1 {
		return -1, err
	}
	return v, nil
}

// ggufConfig builds a Config from GGUF metadata (tie, vocab fallback and rope_freqs are settled by the caller).
func ggufConfig(path string, f *gguf.File) (*Config, error) {
	m := ggufMeta{path: path, f: f}
	arch, err := m.str("general.architecture")
	if err != nil {
		return nil, err
	}
	switch arch {
	case "llama", "qwen2", "qwen3":
	default:
		return nil, fmt.Errorf("%s: general.architecture %q is not supported (supported: llama, qwen2, qwen3)", path, arch)
	}
	c := &Config{Architecture: arch, AttentionBias: arch == "qwen2", QKNorm: arch == "qwen3"}
	for _, k := range []struct {
		key string
		dst *int
	}{
		{".embedding_length", &c.HiddenSize}, {".block_count", &c.NumLayers}, {".feed_forward_length", &c.IntermediateSize},
		{".attention.head_count", &c.NumHeads}, {".context_length", &c.MaxPositions},
	} {
		if *k.dst, err = m.requiredInt(arch + k.key); err != nil {
			return nil, err
		}
	}
	if c.NumHeads <= 0 || c.HiddenSize <= 0 {
		return nil, fmt.Errorf("%s: embedding_length %d and head_count %d must be positive", path, c.HiddenSize, c.NumHeads)
	}
	var ok bool
	if c.NumKVHeads, ok, err = m.int(arch + ".attention.head_count_kv"); err != nil {
		return nil, err
	} else if !ok {
		c.NumKVHeads = c.NumHeads
	}
	if c.HeadDim, ok, err = m.int(arch + ".attention.key_length"); err != nil {
		return nil, err
	} else if !ok {
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	if v, ok, err := m.int(arch + ".attention.value_length"); err != nil {
		return nil, err
	} else if ok && v != c.HeadDim {
		return nil, fmt.Errorf("%s: attention.value_length %d differs from key_length %d (not supported)", path, v, c.HeadDim)
	}
	if v, ok, err := m.int(arch + ".rope.dimension_count"); err != nil {
		return nil, err
	} else if ok && v != c.HeadDim {
		return nil, fmt.Errorf("%s: rope.dimension_count %d differs from head dim %d (partial rotary is not supported)", path, v, c.HeadDim)
	}
	if c.RMSNormEps, ok, err = m.float(arch + ".attention.layer_norm_rms_epsilon"); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("%s: metadata %s.attention.layer_norm_rms_epsilon is missing", path, arch)
	}
	if c.RopeTheta, ok, err = m.float(arch + ".rope.freq_base"); err != nil {
		return nil, err
	} else if !ok {
		c.RopeTheta = 10000 // llama.cpp's default
	}
	if c.RopeScaling, err = ggufRopeScaling(m, arch); err != nil {
		return nil, err
	}
	if v, found := f.Get("tokenizer.ggml.tokens"); found {
		tokens, ok := v.([]string)
		if !ok {
			return nil, fmt.Errorf("%s: metadata tokenizer.ggml.tokens has type %s, want an array of string", path, gguf.TypeName(v))
		}
		c.VocabSize = len(tokens)
	} else if c.VocabSize, _, err = m.int(arch + ".vocab_size"); err != nil {
		return nil, err
	}
	if c.BOSTokenID, err = m.tokenID("tokenizer.ggml.bos_token_id"); err != nil {
		return nil, err
	}
	// llama.cpp stops generation at eos and at eot (e.g. Qwen's <|im_end|>).
	for _, key := range []string{"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"} {
		id, err := m.tokenID(key)
		if err != nil {
			return nil, err
		}
		if id >= 0 {
			c.EOSTokenIDs = appendUnique(c.EOSTokenIDs, id)
		}
	}
	return c, nil
}

// ggufRopeScaling reads <arch>.rope.scaling.* (and the older rope.scale_linear).
func ggufRopeScaling(m ggufMeta, arch string) (*RopeScaling, error) {
	kind, err := m.str(arch + ".rope.scaling.type")
	if err != nil {
		return nil, err
	}
	factor, hasFactor, err := m.float(arch + ".rope.scaling.factor")
	if err != nil {
		return nil, err
	}
	if kind == "" {
		if old, ok, err := m.float(arch + ".rope.scale_linear"); err != nil {
			return nil, err
		} else if ok && old != 1 {
			kind, factor, hasFactor = "linear", old, true
		}
	}
	switch kind {
	case "", "none":
		return nil, nil
	case "linear":
		if !hasFactor {
			return nil, fmt.Errorf("%s: linear rope scaling without %s.rope.scaling.factor", m.path, arch)
		}
		if factor == 1 || factor == 0 { // converters write 0/1 for "no scaling"
			return nil, nil
		}
		return &RopeScaling{Type: "linear", Factor: factor}, nil
	}
	return nil, fmt.Errorf("%s: rope scaling type %q is not supported (supported: none, linear)", m.path, kind)
}

// ggufSource describes one GGUF tensor as a tensorSource. The parser has checked its alignment, that its bytes
// lie inside the file and that they overlap no other tensor's.
func ggufSource(path string, f *gguf.File, info *gguf.TensorInfo) (*tensorSource, error) {
	dt := info.Type.String()
	if !dtype.Known(dt) {
		return nil, fmt.Errorf("%s: tensor %q: dtype %s is not supported (supported: %s)", path, info.Name, dt, dtype.Supported)
	}
	if len(info.Dims) == 0 {
		return nil, fmt.Errorf("%s: tensor %q has no dimensions", path, info.Name)
	}
	for _, d := range info.Dims {
		if d == 0 || d > dtype.MaxElements {
			return nil, fmt.Errorf("%s: tensor %q: invalid dimension %d", path, info.Name, d)
		}
	}
	shape := info.Shape() // GGUF lists ne[0] (innermost) first; HF order is outermost first
	if block := dtype.BlockSize(dt); shape[len(shape)-1]%block != 0 {
		return nil, fmt.Errorf("%s: tensor %q: %s rows of %d elements are not whole blocks of %d", path, info.Name, dt, shape[len(shape)-1], block)
	}
	return &tensorSource{file: path, name: info.Name, dtype: dt, shape: shape, offset: f.DataOffset + int64(info.Offset)}, nil
}

// loadGGUF loads a GGUF file, undoing llama.cpp's Q/K row permutation for the llama architecture.
func loadGGUF(path string) (*Pretrained, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	cfg, err := ggufConfig(path, f)
	if err != nil {
		return nil, err
	}
	srcs := map[string]*tensorSource{}
	var ropeFreqs *tensorSource
	for i := range f.Tensors {
		info := &f.Tensors[i]
		src, err := ggufSource(path, f, info)
		if err != nil {
			return nil, err
		}
		if info.Name == ggufRopeFreqs {
			ropeFreqs = src
			continue
		}
		hf, ok := HFNameFromGGUF(info.Name)
		if !ok {
			return nil, fmt.Errorf("%s: tensor %q is not a known %s tensor", path, info.Name, cfg.Architecture)
		}
		if srcs[hf] != nil {
			return nil, fmt.Errorf("%s: tensor %q appears twice", path, info.Name)
		}
		srcs[hf] = src
	}
	if cfg.VocabSize == 0 { // no tokenizer.ggml.tokens nor vocab_size: trust the embedding
		if e := srcs["model.embed_tokens.weight"]; e != nil && len(e.shape) == 2 {
			cfg.VocabSize = e.shape[0]
		}
	}
	cfg.TieEmbeddings = srcs["lm_head.weight"] == nil
	if ropeFreqs != nil {
		if err := ggufApplyRopeFreqs(cfg, ropeFreqs); err != nil {
			return nil, err
		}
	}
	if err := checkConfig(path, cfg); err != nil {
		return nil, err
	}
	if err := checkSources(path, cfg, srcs, true); err != nil {
		return nil, err
	}
	// Converters often write the embedding again as output.weight; identical means tied.
	if lm := srcs["lm_head.weight"]; lm != nil {
		same, err := sameBytes(lm, srcs["model.embed_tokens.weight"])
		if err != nil {
			return nil, err
		}
		if same {
			delete(srcs, "lm_head.weight")
			cfg.TieEmbeddings = true
		}
	}
	p := &Pretrained{Config: *cfg, Path: path, Format: "gguf", sources: srcs}
	p.DTypes, p.DType = storageDTypes(srcs)
	if cfg.Architecture == "llama" {
		p.permute = map[string]int{}
		for l := range cfg.NumLayers {
			for proj, heads := range map[string]int{"q_proj": cfg.NumHeads, "k_proj": cfg.NumKVHeads} {
				name := fmt.Sprintf("model.layers.%d.self_attn.%s.weight", l, proj)
				if rows := srcs[name].shape[0]; rows%(2*heads) != 0 {
					return nil, fmt.Errorf("%s: tensor %q: %d rows do not split into %d heads of an even size",
						path, srcs[name].name, rows, heads)
				}
				p.permute[name] = heads
			}
		}
	}
	return p, nil
}

// ggufApplyRopeFreqs reads rope_freqs.weight into cfg.RopeScaling.
func ggufApplyRopeFreqs(cfg *Config, src *tensorSource) error {
	if cfg.RopeScaling != nil {
		return fmt.Errorf("%s: tensor %q: rope frequency factors together with %s rope scaling", src.file, src.name, cfg.RopeScaling.Type)
	}
	if len(src.shape) != 1 || src.shape[0] != cfg.HeadDim/2 {
		return fmt.Errorf("%s: tensor %q: shape %v, want [%d]", src.file, src.name, src.shape, cfg.HeadDim/2)
	}
	fh, err := os.Open(src.file)
	if err != nil {
		return err
	}
	defer fh.Close()
	t, err := readTensor(fh, src)
	if err != nil {
		return err
	}
	s := &RopeScaling{Type: "freq_factors", FreqFactors: make([]float64, len(t.Data))}
	for i, v := range t.Data {
		s.FreqFactors[i] = float64(v)
	}
	cfg.RopeScaling = s
	return nil
}

// sameBytes reports whether two tensors have the same dtype, shape and bytes. It reads both a bounded chunk at a
// time and stops at the first difference (different weights differ within the first few bytes).
func sameBytes(a, b *tensorSource) (bool, error) {
	if a == nil || b == nil || a.dtype != b.dtype || !slices.Equal(a.shape, b.shape) {
		return false, nil
	}
	n, err := dtype.Elements(a.shape)
	if err != nil {
		return false, err
	}
	size, err := dtype.Size(a.dtype, n)
	if err != nil {
		return false, err
	}
	fa, err := os.Open(a.file)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b.file)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	bufA, bufB := make([]byte, 1<<16), make([]byte, 1<<16)
	for off := int64(0); off < size; off += int64(len(bufA)) {
		k := int(min(int64(len(bufA)), size-off))
		if _, err := fa.ReadAt(bufA[:k], a.offset+off); err != nil {
			return false, fmt.Errorf("%s: tensor %q: %w", a.file, a.name, err)
		}
		if _, err := fb.ReadAt(bufB[:k], b.offset+off); err != nil {
			return false, fmt.Errorf("%s: tensor %q: %w", b.file, b.name, err)
		}
		if string(bufA[:k]) != string(bufB[:k]) {
			return false, nil
		}
	}
	return true, nil
}

// LlamaCppPermute reorders the rows of a Q or K projection (weight [heads·headDim, in] or bias [heads·headDim])
// from HF's rotate-half layout to llama.cpp's interleaved-pair layout, as llama.cpp's converter does:
// w.reshape(heads, 2, headDim/2, in).swapaxes(1, 2). Use nHeads = NumHeads for Q and NumKVHeads for K.
func LlamaCppPermute(t *Tensor, nHeads int) (*Tensor, error) {
	return permuteRows(t, nHeads, false)
}

// LlamaCppUnpermute inverts LlamaCppPermute.
func LlamaCppUnpermute(t *Tensor, nHeads int) (*Tensor, error) {
	return permuteRows(t, nHeads, true)
}

// forEachPermutedRow calls move(dst, src) for every row of a [rows, ...] Q/K projection of nHeads heads: llama.cpp's
// interleaved-pair order from HF's rotate-half order (or back with inverse).
func forEachPermutedRow(rows, nHeads int, inverse bool, move func(dst, src int)) {
	headDim := rows / nHeads
	half := headDim / 2
	for h := range nHeads {
		for j := range half {
			for k := range 2 {
				hfRow := h*headDim + k*half + j // rotate-half: pair (j, j+half)
				cppRow := h*headDim + 2*j + k   // interleaved: pair (2j, 2j+1)
				if inverse {
					move(hfRow, cppRow)
				} else {
					move(cppRow, hfRow)
				}
			}
		}
	}
}

func permuteRows(t *Tensor, nHeads int, inverse bool) (*Tensor, error) {
	if t == nil || len(t.Shape) == 0 || nHeads <= 0 {
		return nil, fmt.Errorf("cannot permute rows of %v for %d heads", t, nHeads)
	}
	rows := t.Shape[0]
	if rows%(2*nHeads) != 0 || len(t.Data)%rows != 0 {
		return nil, fmt.Errorf("%d rows do not split into %d heads of an even size", rows, nHeads)
	}
	cols := len(t.Data) / rows
	out := &Tensor{Shape: slices.Clone(t.Shape), Data: make([]float32, len(t.Data))}
	forEachPermutedRow(rows, nHeads, inverse, func(dst, src int) {
		copy(out.Data[dst*cols:(dst+1)*cols], t.Data[src*cols:(src+1)*cols])
	})
	return out, nil
}
