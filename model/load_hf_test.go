package model

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/compute/dtypes/float16"
)

// stTensor is one tensor for writeSafetensors; offsets, when set, replace the computed data_offsets.
type stTensor struct {
	dtype   string
	shape   []int
	data    []byte
	offsets []int64
}

// safetensorsBytes encodes a safetensors file: 8-byte LE header length, JSON header, data (in name order).
func safetensorsBytes(tensors map[string]stTensor) []byte {
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data []byte
	for _, n := range slices.Sorted(maps.Keys(tensors)) {
		st := tensors[n]
		off := []int64{int64(len(data)), int64(len(data) + len(st.data))}
		if st.offsets != nil {
			off = st.offsets
		}
		header[n] = map[string]any{"dtype": st.dtype, "shape": st.shape, "data_offsets": off}
		data = append(data, st.data...)
	}
	h, _ := json.Marshal(header) // strings, numbers and slices of them: cannot fail
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	return append(append(out, h...), data...)
}

// writeSafetensors writes safetensorsBytes(tensors) to path.
func writeSafetensors(t *testing.T, path string, tensors map[string]stTensor) {
	t.Helper()
	if err := os.WriteFile(path, safetensorsBytes(tensors), 0o644); err != nil {
		t.Fatal(err)
	}
}

// encodeTensors stores weights as dtype (F32, F16, BF16) for safetensorsBytes.
func encodeTensors(weights map[string]*Tensor, dtype string) map[string]stTensor {
	st := map[string]stTensor{}
	for n, w := range weights {
		st[n] = stTensor{dtype: dtype, shape: w.Shape, data: encodeValues(dtype, w.Data)}
	}
	return st
}

// encodeValues stores float32 values as dtype (F32, F16, BF16), little-endian.
func encodeValues(dtype string, vals []float32) []byte {
	var out []byte
	for _, v := range vals {
		switch dtype {
		case "F32":
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		case "F16":
			out = binary.LittleEndian.AppendUint16(out, float16.FromFloat32(v).Bits())
		case "BF16":
			out = binary.LittleEndian.AppendUint16(out, bfloat16.FromFloat32(v).Bits())
		}
	}
	return out
}

// hfConfigJSON writes c as a transformers config.json would.
func hfConfigJSON(c Config) map[string]any {
	m := map[string]any{
		"model_type": c.Architecture, "hidden_size": c.HiddenSize, "intermediate_size": c.IntermediateSize,
		"num_hidden_layers": c.NumLayers, "num_attention_heads": c.NumHeads, "num_key_value_heads": c.NumKVHeads,
		"head_dim": c.HeadDim, "vocab_size": c.VocabSize, "max_position_embeddings": c.MaxPositions,
		"rms_norm_eps": c.RMSNormEps, "rope_theta": c.RopeTheta, "tie_word_embeddings": c.TieEmbeddings,
		"hidden_act": "silu", "eos_token_id": c.EOSTokenIDs,
	}
	if c.BOSTokenID >= 0 {
		m["bos_token_id"] = c.BOSTokenID
	}
	return m
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeHFModel writes config.json and the weights as dtype, in `shards` files (1: model.safetensors).
func writeHFModel(t *testing.T, dir string, cfgJSON map[string]any, weights map[string]*Tensor, dtype string, shards int) {
	t.Helper()
	writeJSON(t, filepath.Join(dir, "config.json"), cfgJSON)
	if shards == 1 {
		writeSafetensors(t, filepath.Join(dir, "model.safetensors"), encodeTensors(weights, dtype))
		return
	}
	weightMap := map[string]string{}
	files := make([]map[string]stTensor, shards)
	for i, n := range slices.Sorted(maps.Keys(weights)) {
		s := i % shards
		if files[s] == nil {
			files[s] = map[string]stTensor{}
		}
		files[s][n] = stTensor{dtype: dtype, shape: weights[n].Shape, data: encodeValues(dtype, weights[n].Data)}
		weightMap[n] = fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, shards)
	}
	for s, st := range files {
		writeSafetensors(t, filepath.Join(dir, fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, shards)), st)
	}
	writeJSON(t, filepath.Join(dir, "model.safetensors.index.json"), map[string]any{"metadata": map[string]any{}, "weight_map": weightMap})
}

// halfTolerance is the largest rounding error of a value stored as dtype: half an ulp, from the format's
// mantissa width (10 bits for F16, 7 for BF16), plus F16's smallest subnormal step.
func halfTolerance(dtype string) func(string, float32) float64 {
	return func(_ string, v float32) float64 {
		switch dtype {
		case "F16":
			return math.Abs(float64(v))*math.Exp2(-11) + math.Exp2(-25)
		case "BF16":
			return math.Abs(float64(v)) * math.Exp2(-8)
		}
		return 0
	}
}

func TestLoadHFRoundTrip(t *testing.T) {
	for _, arch := range []string{"llama", "mistral", "qwen2", "qwen3"} {
		for _, dtype := range []string{"F32", "F16", "BF16"} {
			t.Run(arch+"/"+dtype, func(t *testing.T) {
				c := synthConfig(arch)
				c.TieEmbeddings = arch == "qwen2"
				weights := synthWeights(c, 1)
				dir := t.TempDir()
				cj := hfConfigJSON(c)
				if arch == "mistral" {
					cj["sliding_window"] = nil // Mistral v0.2+: full attention
				}
				writeHFModel(t, dir, cj, weights, dtype, 1)
				p := loadAs(t, dir, "hf", dtype, c)
				compareWeights(t, p.Weights, weights, halfTolerance(dtype))
			})
		}
	}
}

func TestLoadHFSharded(t *testing.T) {
	c := synthConfig("llama")
	weights := synthWeights(c, 2)
	dir := t.TempDir()
	writeHFModel(t, dir, hfConfigJSON(c), weights, "BF16", 2)
	p, err := loadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "model-00002-of-00002.safetensors")); err != nil {
		t.Fatal(err)
	}
	compareWeights(t, p.Weights, weights, halfTolerance("BF16"))
}

func TestLoadHFTiedCopyDropped(t *testing.T) {
	c := synthConfig("qwen2")
	c.TieEmbeddings = true
	weights := synthWeights(c, 3)
	withCopy := map[string]*Tensor{"lm_head.weight": weights["model.embed_tokens.weight"]}
	for k, v := range weights {
		withCopy[k] = v
	}
	dir := t.TempDir()
	writeHFModel(t, dir, hfConfigJSON(c), withCopy, "F32", 1)
	p, err := loadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.Shape("lm_head.weight") != nil || !p.Config.TieEmbeddings {
		t.Error("tied model kept lm_head.weight")
	}
	compareWeights(t, p.Weights, weights, halfTolerance("F32"))
}

// TestHFConfigDefaults checks the per-architecture defaults of transformers' config classes.
func TestHFConfigDefaults(t *testing.T) {
	base := `"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 200`
	cases := []struct {
		name, json, gen string
		check           func(c *Config) string
	}{
		{"llama defaults", `{"model_type": "llama", ` + base + `}`, "", func(c *Config) string {
			if c.NumKVHeads != 4 || c.HeadDim != 16 || c.MaxPositions != 2048 || c.RMSNormEps != 1e-6 ||
				c.RopeTheta != 10000 || c.TieEmbeddings || c.BOSTokenID != 1 || !slices.Equal(c.EOSTokenIDs, []int{2}) ||
				c.SlidingWindow != 0 || c.RopeScaling != nil || c.AttentionBias || c.QKNorm {
				return fmt.Sprintf("%+v", *c)
			}
			return ""
		}},
		{"mistral defaults", `{"model_type": "mistral", ` + base + `, "num_attention_heads": 8}`, "", func(c *Config) string {
			if c.NumKVHeads != 8 || c.HeadDim != 8 || c.SlidingWindow != 4096 || c.MaxPositions != 131072 {
				return fmt.Sprintf("%+v", *c)
			}
			return ""
		}},
		{"qwen2 defaults", `{"model_type": "qwen2", ` + base + `, "num_attention_heads": 32, "hidden_size": 256}`, "", func(c *Config) string {
			if !c.AttentionBias || c.NumKVHeads != 32 || c.HeadDim != 8 || c.BOSTokenID != -1 || len(c.EOSTokenIDs) != 0 || c.MaxPositions != 32768 {
				return fmt.Sprintf("%+v", *c)
			}
			return ""
		}},
		{"qwen3 defaults", `{"model_type": "qwen3", ` + base + `, "num_key_value_heads": 2}`, "", func(c *Config) string {
			if !c.QKNorm || c.AttentionBias || c.HeadDim != 128 || c.NumKVHeads != 2 {
				return fmt.Sprintf("%+v", *c)
			}
			return ""
		}},
		{"eos list + generation_config", `{"model_type": "qwen2", ` + base + `, "num_key_value_heads": 2, "eos_token_id": [7, 8], "bos_token_id": null}`,
			`{"bos_token_id": 5, "eos_token_id": [9, 7]}`, func(c *Config) string {
				if c.BOSTokenID != 5 || !slices.Equal(c.EOSTokenIDs, []int{7, 8, 9}) {
					return fmt.Sprintf("bos %d eos %v", c.BOSTokenID, c.EOSTokenIDs)
				}
				return ""
			}},
		{"llama3 rope_scaling", `{"model_type": "llama", ` + base + `, "rope_theta": 500000, "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}`,
			"", func(c *Config) string {
				want := RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 8192}
				if c.RopeScaling == nil || fmt.Sprint(*c.RopeScaling) != fmt.Sprint(want) || c.RopeTheta != 500000 {
					return fmt.Sprintf("%+v theta %g", c.RopeScaling, c.RopeTheta)
				}
				return ""
			}},
		{"transformers 5 rope_parameters", `{"model_type": "llama", ` + base + `, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}}`,
			"", func(c *Config) string {
				if c.RopeScaling == nil || c.RopeScaling.Type != "linear" || c.RopeScaling.Factor != 2 || c.RopeTheta != 1000 {
					return fmt.Sprintf("%+v theta %g", c.RopeScaling, c.RopeTheta)
				}
				return ""
			}},
		{"default rope_type", `{"model_type": "llama", ` + base + `, "rope_scaling": {"type": "default"}}`, "", func(c *Config) string {
			if c.RopeScaling != nil {
				return fmt.Sprintf("%+v", c.RopeScaling)
			}
			return ""
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "config.json"), []byte(tc.json), 0o644)
			if tc.gen != "" {
				os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(tc.gen), 0o644)
			}
			c, err := parseHFConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(c); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func TestHFConfigErrors(t *testing.T) {
	base := `"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 200`
	cases := []struct{ json, want string }{
		{`{"model_type": "gpt2", ` + base + `}`, `model_type "gpt2"`},
		{`{"model_type": "llama", ` + base + `, "rope_scaling": {"rope_type": "yarn", "factor": 4}}`, `"yarn"`},
		{`{"model_type": "llama", ` + base + `, "rope_scaling": {"rope_type": "dynamic", "factor": 4}}`, `"dynamic"`},
		{`{"model_type": "llama", ` + base + `, "rope_scaling": {"rope_type": "llama3", "factor": 4}}`, "low_freq_factor"},
		{`{"model_type": "llama", ` + base + `, "hidden_act": "gelu"}`, "hidden_act"},
		{`{"model_type": "llama", ` + base + `, "attention_bias": true}`, "attention_bias"},
		{`{"model_type": "llama", ` + base + `, "mlp_bias": true}`, "mlp_bias"},
		{`{"model_type": "qwen2", ` + base + `, "use_sliding_window": true}`, "use_sliding_window"},
		{`{"model_type": "llama", "hidden_size": 64}`, "intermediate_size is missing"},
		{`{"model_type": "llama", ` + base + `, "num_key_value_heads": 3}`, "multiple"},
		{`{"model_type": "llama", ` + base + `, "eos_token_id": 500}`, "eos token id 500"},
		{`{"model_type": "llama", ` + base + `, "eos_token_id": "x"}`, "eos_token_id"},
		{`{"model_type": "llama", ` + base + `, "hidden_size": -64}`, "hidden_size"},
		{`{"model_type": "llama", ` + base + `, "vocab_size": 1e12}`, "vocab_size"},
		{`{"model_type": "llama", ` + base + `, "num_hidden_layers": 100000000}`, "layer count"},
		{`not json`, "config.json"},
		{`{"model_type": "llama", ` + base + `, "architectures": ["LlamaForSequenceClassification"]}`, `architectures "LlamaForSequenceClassification"`},
		{`{"model_type": "llama", ` + base + `, "architectures": ["MistralForCausalLM"]}`, "LlamaForCausalLM"},
		{`{"model_type": "llama", ` + base + `, "torch_dtype": "int8"}`, `torch_dtype "int8"`},
		{`{"model_type": "llama", ` + base + `, "torch_dtype": "float8_e4m3fn"}`, "bfloat16"},
		{`{"model_type": "llama", ` + base + `, "dtype": "float64"}`, `dtype "float64"`},
	}
	for _, ok := range []string{ // the values of real checkpoints pass
		`{"model_type": "llama", ` + base + `, "architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}`,
		`{"model_type": "llama", ` + base + `, "architectures": ["LLaMAForCausalLM"], "torch_dtype": "float16"}`,
		`{"model_type": "qwen2", ` + base + `, "num_key_value_heads": 2, "architectures": ["Qwen2ForCausalLM"], "dtype": "float32"}`,
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "config.json"), []byte(ok), 0o644)
		if _, err := parseHFConfig(dir); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, tc := range cases {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "config.json"), []byte(tc.json), 0o644)
		_, err := parseHFConfig(dir)
		if err == nil {
			t.Errorf("%s: no error", tc.json)
			continue
		}
		wantErr(t, err, filepath.Join(dir, "config.json"), tc.want)
	}
}

// TestLoadHFErrors breaks a valid checkpoint in one way at a time.
func TestLoadHFErrors(t *testing.T) {
	c := synthConfig("llama")
	weights := synthWeights(c, 4)
	good := func() map[string]stTensor {
		st := map[string]stTensor{}
		for n, w := range weights {
			st[n] = stTensor{dtype: "F32", shape: w.Shape, data: encodeValues("F32", w.Data)}
		}
		return st
	}
	const q = "model.layers.1.self_attn.q_proj.weight"
	cases := []struct {
		name   string
		break_ func(st map[string]stTensor)
		want   []string
	}{
		{"missing tensor", func(st map[string]stTensor) { delete(st, q) }, []string{q, "missing"}},
		{"wrong shape", func(st map[string]stTensor) {
			e := st[q]
			e.shape = []int{e.shape[1], e.shape[0] * 2}
			e.data = append(e.data, e.data...)
			st[q] = e
		}, []string{"model.safetensors", q, "shape"}},
		{"unsupported dtype", func(st map[string]stTensor) {
			e := st[q]
			e.dtype = "I64"
			e.shape = []int{e.shape[0], e.shape[1] / 2}
			st[q] = e
		}, []string{"model.safetensors", q, "I64"}},
		{"bytes do not match shape", func(st map[string]stTensor) {
			e := st[q]
			e.data = e.data[:len(e.data)-4]
			st[q] = e
		}, []string{"model.safetensors", q, "bytes"}},
		{"data out of range", func(st map[string]stTensor) {
			e := st[q]
			e.offsets = []int64{1 << 40, 1<<40 + int64(len(e.data))}
			st[q] = e
		}, []string{"model.safetensors", q, "outside"}},
		{"huge shape", func(st map[string]stTensor) {
			e := st[q]
			e.shape = []int{1 << 30, 1 << 30, 1 << 30}
			st[q] = e
		}, []string{"model.safetensors", q, "too many"}},
		{"unexpected tensor", func(st map[string]stTensor) {
			st["model.layers.0.self_attn.o_proj.bias"] = stTensor{dtype: "F32", shape: []int{64}, data: make([]byte, 256)}
		}, []string{"o_proj.bias", "not part"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeJSON(t, filepath.Join(dir, "config.json"), hfConfigJSON(c))
			st := good()
			tc.break_(st)
			writeSafetensors(t, filepath.Join(dir, "model.safetensors"), st)
			_, err := loadAll(dir)
			wantErr(t, err, tc.want...)
		})
	}

	t.Run("truncated file", func(t *testing.T) {
		dir := t.TempDir()
		writeJSON(t, filepath.Join(dir, "config.json"), hfConfigJSON(c))
		p := filepath.Join(dir, "model.safetensors")
		writeSafetensors(t, p, good())
		st, _ := os.Stat(p)
		os.Truncate(p, st.Size()-100)
		_, err := loadAll(dir)
		wantErr(t, err, p, "outside")
	})
	t.Run("header length beyond file", func(t *testing.T) {
		dir := t.TempDir()
		writeJSON(t, filepath.Join(dir, "config.json"), hfConfigJSON(c))
		p := filepath.Join(dir, "model.safetensors")
		os.WriteFile(p, binary.LittleEndian.AppendUint64(nil, 1<<50), 0o644)
		_, err := loadAll(dir)
		wantErr(t, err, p, "header length")
	})
	t.Run("no weights", func(t *testing.T) {
		dir := t.TempDir()
		writeJSON(t, filepath.Join(dir, "config.json"), hfConfigJSON(c))
		_, err := loadAll(dir)
		wantErr(t, err, dir, "model.safetensors")
	})
}

func TestLoadHFShardErrors(t *testing.T) {
	c := synthConfig("llama")
	weights := synthWeights(c, 5)
	setup := func(t *testing.T) (string, map[string]any) {
		dir := t.TempDir()
		writeHFModel(t, dir, hfConfigJSON(c), weights, "F32", 2)
		var index map[string]any
		b, _ := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json"))
		json.Unmarshal(b, &index)
		return dir, index
	}
	const name = "model.norm.weight"
	cases := []struct {
		name  string
		shard string
		want  []string
	}{
		{"path traversal", "../model-00001-of-00002.safetensors", []string{"not a plain file name", name}},
		{"absent shard", "model-00009-of-00002.safetensors", []string{"model-00009-of-00002.safetensors"}},
		{"wrong shard", "", []string{name, "not found in shard"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, index := setup(t)
			wm := index["weight_map"].(map[string]any)
			shard := tc.shard
			if shard == "" { // point at the other shard
				if wm[name] == "model-00001-of-00002.safetensors" {
					shard = "model-00002-of-00002.safetensors"
				} else {
					shard = "model-00001-of-00002.safetensors"
				}
			}
			wm[name] = shard
			writeJSON(t, filepath.Join(dir, "model.safetensors.index.json"), index)
			_, err := loadAll(dir)
			wantErr(t, err, tc.want...)
		})
	}
	t.Run("tensor missing from index", func(t *testing.T) {
		dir, index := setup(t)
		delete(index["weight_map"].(map[string]any), name)
		writeJSON(t, filepath.Join(dir, "model.safetensors.index.json"), index)
		_, err := loadAll(dir)
		wantErr(t, err, "model.safetensors.index.json", name)
	})
}

// TestLoadReadsHeadersOnly: Load reads the config and the safetensors headers, not the weights: a NaN written into
// a weight after the header is noticed only when the weights are read (ReadAll, or building a Model).
func TestLoadReadsHeadersOnly(t *testing.T) {
	c := synthConfig("llama")
	weights := synthWeights(c, 4)
	name := "model.layers.1.mlp.up_proj.weight"
	weights[name].Data[3] = float32(math.NaN())
	dir := t.TempDir()
	writeHFModel(t, dir, hfConfigJSON(c), weights, "F32", 1)
	p, err := Load(dir)
	if err != nil {
		t.Fatalf("Load read the weights: %v", err)
	}
	if p.Weights != nil || !slices.Equal(p.Shape(name), weights[name].Shape) || p.DTypes[name] != "F32" {
		t.Fatalf("Load: weights in memory %v, shape %v, dtype %q", p.Weights != nil, p.Shape(name), p.DTypes[name])
	}
	err = p.ReadAll()
	if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "index 3") {
		t.Fatalf("ReadAll: %v, want the NaN in %s at index 3", err, name)
	}
}
