package model

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/saddle-ml/saddle/internal/gguf"
)

// ggufMetadataFor describes c the way llama.cpp's converter does.
func ggufMetadataFor(c Config) []gguf.KV {
	a := c.Architecture
	tokens := make([]string, c.VocabSize)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("tok%d", i)
	}
	md := []gguf.KV{
		{Key: "general.architecture", Value: a},
		{Key: a + ".context_length", Value: uint32(c.MaxPositions)},
		{Key: a + ".embedding_length", Value: uint32(c.HiddenSize)},
		{Key: a + ".block_count", Value: uint32(c.NumLayers)},
		{Key: a + ".feed_forward_length", Value: uint32(c.IntermediateSize)},
		{Key: a + ".attention.head_count", Value: uint32(c.NumHeads)},
		{Key: a + ".attention.head_count_kv", Value: uint32(c.NumKVHeads)},
		{Key: a + ".attention.layer_norm_rms_epsilon", Value: float32(c.RMSNormEps)},
		{Key: a + ".rope.freq_base", Value: float32(c.RopeTheta)},
		{Key: "tokenizer.ggml.model", Value: "gpt2"},
		{Key: "tokenizer.ggml.tokens", Value: tokens},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(c.BOSTokenID)},
	}
	if c.HeadDim != c.HiddenSize/c.NumHeads {
		md = append(md, gguf.KV{Key: a + ".attention.key_length", Value: uint32(c.HeadDim)},
			gguf.KV{Key: a + ".attention.value_length", Value: uint32(c.HeadDim)})
	}
	if len(c.EOSTokenIDs) > 0 {
		md = append(md, gguf.KV{Key: "tokenizer.ggml.eos_token_id", Value: uint32(c.EOSTokenIDs[0])})
	}
	if len(c.EOSTokenIDs) > 1 {
		md = append(md, gguf.KV{Key: "tokenizer.ggml.eot_token_id", Value: uint32(c.EOSTokenIDs[1])})
	}
	return md
}

// ggufTensorsFor lays out HF weights as llama.cpp would: GGUF names, Q/K rows permuted for llama, 1-D tensors
// in F32 and matrices in dtype.
func ggufTensorsFor(t testing.TB, c Config, weights map[string]*Tensor, dtype string) []gguf.Tensor {
	t.Helper()
	var out []gguf.Tensor
	for _, n := range slices.Sorted(maps.Keys(weights)) {
		w := weights[n]
		g, ok := GGUFNameFromHF(n)
		if !ok {
			t.Fatalf("no GGUF name for %s", n)
		}
		if c.Architecture == "llama" {
			for suffix, heads := range map[string]int{"q_proj.weight": c.NumHeads, "k_proj.weight": c.NumKVHeads} {
				if filepath.Ext(n) == ".weight" && len(n) > len(suffix) && n[len(n)-len(suffix):] == suffix {
					var err error
					if w, err = LlamaCppPermute(w, heads); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		dt := dtype
		if len(w.Shape) == 1 {
			dt = "F32"
		}
		out = append(out, gguf.Tensor{Name: g, Shape: w.Shape, Data: w.Data, DType: dt})
	}
	return out
}

// q8Tolerance bounds Q8_0 round-trip error per tensor: |x - d16·round(x/d)| ≤ d/2 + 127·|d - d16| < 0.6·d,
// with d = block max / 127 ≤ tensor max / 127.
func q8Tolerance(weights map[string]*Tensor) func(string, float32) float64 {
	tol := map[string]float64{}
	for name, w := range weights {
		if len(w.Shape) == 1 {
			continue // written as F32
		}
		var amax float64
		for _, v := range w.Data {
			amax = max(amax, math.Abs(float64(v)))
		}
		tol[name] = 0.6 * amax / 127
	}
	return func(name string, _ float32) float64 { return tol[name] }
}

func TestLoadGGUFRoundTrip(t *testing.T) {
	for _, arch := range []string{"llama", "qwen2", "qwen3"} {
		for _, dtype := range []string{"F32", "F16", "BF16", "Q8_0"} {
			t.Run(arch+"/"+dtype, func(t *testing.T) {
				c := synthConfig(arch)
				c.TieEmbeddings = arch == "qwen3"
				c.EOSTokenIDs = []int{2, 3} // eos and eot
				weights := synthWeights(c, 10)
				path := filepath.Join(t.TempDir(), "m.gguf")
				if err := gguf.Write(path, ggufMetadataFor(c), ggufTensorsFor(t, c, weights, dtype)); err != nil {
					t.Fatal(err)
				}
				p := loadAs(t, path, "gguf", dtype, c)
				tol := halfTolerance(dtype)
				if dtype == "Q8_0" {
					tol = q8Tolerance(weights)
				}
				compareWeights(t, p.Weights, weights, tol)
			})
		}
	}
}

func TestLoadGGUFTieByEquality(t *testing.T) {
	for _, same := range []bool{true, false} {
		c := synthConfig("llama")
		weights := synthWeights(c, 11)
		if same {
			weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
		}
		path := filepath.Join(t.TempDir(), "m.gguf")
		if err := gguf.Write(path, ggufMetadataFor(c), ggufTensorsFor(t, c, weights, "F32")); err != nil {
			t.Fatal(err)
		}
		p, err := loadAll(path)
		if err != nil {
			t.Fatal(err)
		}
		hasHead := p.Shape("lm_head.weight") != nil
		if p.Config.TieEmbeddings != same || hasHead == same {
			t.Errorf("output.weight equal to token_embd: %v; got tied %v, lm_head kept %v", same, p.Config.TieEmbeddings, hasHead)
		}
	}
}

func TestLoadGGUFRopeScaling(t *testing.T) {
	c := synthConfig("llama")
	weights := synthWeights(c, 12)
	write := func(t *testing.T, extra []gguf.KV, extraTensors ...gguf.Tensor) (*Pretrained, error) {
		path := filepath.Join(t.TempDir(), "m.gguf")
		if err := gguf.Write(path, append(ggufMetadataFor(c), extra...), append(ggufTensorsFor(t, c, weights, "F32"), extraTensors...)); err != nil {
			t.Fatal(err)
		}
		return loadAll(path)
	}
	t.Run("freq factors", func(t *testing.T) {
		factors := []float32{1, 1, 1.5, 2, 4, 8, 8, 8}
		p, err := write(t, nil, gguf.Tensor{Name: "rope_freqs.weight", Shape: []int{8}, Data: factors})
		if err != nil {
			t.Fatal(err)
		}
		s := p.Config.RopeScaling
		if s == nil || s.Type != "freq_factors" || fmt.Sprint(s.FreqFactors) != fmt.Sprint(factors) {
			t.Errorf("rope scaling %+v", s)
		}
		if p.Shape("rope_freqs.weight") != nil {
			t.Error("rope_freqs.weight kept as a weight")
		}
	})
	t.Run("linear", func(t *testing.T) {
		p, err := write(t, []gguf.KV{{Key: "llama.rope.scaling.type", Value: "linear"}, {Key: "llama.rope.scaling.factor", Value: float32(4)}})
		if err != nil {
			t.Fatal(err)
		}
		if s := p.Config.RopeScaling; s == nil || s.Type != "linear" || s.Factor != 4 {
			t.Errorf("rope scaling %+v", s)
		}
	})
	t.Run("yarn", func(t *testing.T) {
		_, err := write(t, []gguf.KV{{Key: "llama.rope.scaling.type", Value: "yarn"}, {Key: "llama.rope.scaling.factor", Value: float32(4)}})
		wantErr(t, err, "m.gguf", `"yarn"`)
	})
	t.Run("bad freq factors", func(t *testing.T) {
		_, err := write(t, nil, gguf.Tensor{Name: "rope_freqs.weight", Shape: []int{5}, Data: make([]float32, 5)})
		wantErr(t, err, "m.gguf", "rope_freqs.weight", "shape")
	})
}

// patchTensorInfo overwrites the type or offset field of a tensor's info record in a GGUF file.
func patchTensorInfo(t *testing.T, path, name string, typ *uint32, offset *uint64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pos := tensorInfoOffset(t, b, name)
	if typ != nil {
		binary.LittleEndian.PutUint32(b[pos-4:], *typ) // the type precedes the offset
	}
	if offset != nil {
		binary.LittleEndian.PutUint64(b[pos:], *offset)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// tensorInfoOffset finds the byte position of a tensor description's offset field.
func tensorInfoOffset(t *testing.T, b []byte, name string) int {
	t.Helper()
	key := append(binary.LittleEndian.AppendUint64(nil, uint64(len(name))), name...)
	pos := bytes.Index(b, key)
	if pos < 0 {
		t.Fatalf("tensor info %q not found", name)
	}
	pos += len(key)
	nDims := int(binary.LittleEndian.Uint32(b[pos:]))
	return pos + 4 + 8*nDims + 4
}

func TestLoadGGUFErrors(t *testing.T) {
	c := synthConfig("llama")
	weights := synthWeights(c, 13)
	const q = "blk.1.attn_q.weight"
	setMeta := func(md []gguf.KV, key string, v any) []gguf.KV {
		for i := range md {
			if md[i].Key == key {
				if v == nil {
					return slices.Delete(md, i, i+1)
				}
				md[i].Value = v
				return md
			}
		}
		return append(md, gguf.KV{Key: key, Value: v})
	}
	u32 := func(v uint32) *uint32 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	cases := []struct {
		name  string
		meta  func([]gguf.KV) []gguf.KV
		tens  func([]gguf.Tensor) []gguf.Tensor
		patch func(t *testing.T, path string)
		want  []string
	}{
		{name: "missing tensor", tens: func(ts []gguf.Tensor) []gguf.Tensor {
			return slices.DeleteFunc(ts, func(g gguf.Tensor) bool { return g.Name == q })
		}, want: []string{"model.layers.1.self_attn.q_proj.weight", "missing"}},
		{name: "wrong shape", tens: func(ts []gguf.Tensor) []gguf.Tensor {
			for i := range ts {
				if ts[i].Name == q {
					ts[i].Shape = []int{ts[i].Shape[0] / 2, ts[i].Shape[1] * 2}
				}
			}
			return ts
		}, want: []string{q, "shape"}},
		{name: "unknown tensor", tens: func(ts []gguf.Tensor) []gguf.Tensor {
			return append(ts, gguf.Tensor{Name: "blk.0.attn_qkv.weight", Shape: []int{4}, Data: make([]float32, 4)})
		}, want: []string{"blk.0.attn_qkv.weight", "not a known"}},
		{name: "unsupported dtype", patch: func(t *testing.T, path string) { patchTensorInfo(t, path, q, u32(16), nil) }, // IQ2_XXS
			want: []string{q, "IQ2_XXS", "not supported"}},
		{name: "offset out of range", patch: func(t *testing.T, path string) { patchTensorInfo(t, path, q, nil, u64(1<<40)) },
			want: []string{q, "outside"}},
		{name: "offset near end", patch: func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			patchTensorInfo(t, path, q, nil, u64(uint64(st.Size())/32*32-32))
		}, want: []string{q, "outside"}},
		{name: "misaligned offset", patch: func(t *testing.T, path string) { patchTensorInfo(t, path, q, nil, u64(4)) },
			want: []string{q, "alignment"}},
		{name: "truncated", patch: func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			os.Truncate(path, st.Size()-4096)
		}, want: []string{"outside"}},
		{name: "unknown architecture", meta: func(md []gguf.KV) []gguf.KV { return setMeta(md, "general.architecture", "gpt2") },
			want: []string{`"gpt2"`, "not supported"}},
		{name: "missing metadata", meta: func(md []gguf.KV) []gguf.KV { return setMeta(md, "llama.block_count", nil) },
			want: []string{"llama.block_count", "missing"}},
		{name: "metadata type", meta: func(md []gguf.KV) []gguf.KV { return setMeta(md, "llama.block_count", "two") },
			want: []string{"llama.block_count", "integer"}},
		{name: "huge layer count", meta: func(md []gguf.KV) []gguf.KV {
			return setMeta(md, "llama.block_count", uint64(1<<62))
		}, want: []string{"llama.block_count", "out of range"}},
		{name: "partial rotary", meta: func(md []gguf.KV) []gguf.KV {
			return setMeta(md, "llama.rope.dimension_count", uint32(8))
		}, want: []string{"partial rotary"}},
		{name: "bos outside vocab", meta: func(md []gguf.KV) []gguf.KV {
			return setMeta(md, "tokenizer.ggml.bos_token_id", uint32(4000))
		}, want: []string{"bos token id 4000"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			md := ggufMetadataFor(c)
			if tc.meta != nil {
				md = tc.meta(md)
			}
			ts := ggufTensorsFor(t, c, weights, "F32")
			if tc.tens != nil {
				ts = tc.tens(ts)
			}
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := gguf.Write(path, md, ts); err != nil {
				t.Fatal(err)
			}
			if tc.patch != nil {
				tc.patch(t, path)
			}
			_, err := loadAll(path)
			wantErr(t, err, append([]string{path}, tc.want...)...)
		})
	}
}

func TestLoadGGUFCorruptHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	// Magic, version 3, then a tensor count past the reader's limit.
	b := append([]byte("GGUF"), binary.LittleEndian.AppendUint32(nil, 3)...)
	b = binary.LittleEndian.AppendUint64(b, 1<<40)
	b = binary.LittleEndian.AppendUint64(b, 0)
	os.WriteFile(path, b, 0o644)
	_, err := loadAll(path)
	wantErr(t, err, path, "tensor count")

	// One metadata array claiming 2^25 uint64 elements in a tiny file.
	b = append([]byte("GGUF"), binary.LittleEndian.AppendUint32(nil, 3)...)
	b = binary.LittleEndian.AppendUint64(b, 0)
	b = binary.LittleEndian.AppendUint64(b, 1)
	b = append(binary.LittleEndian.AppendUint64(b, 1), 'k')
	b = binary.LittleEndian.AppendUint32(b, 9)  // array
	b = binary.LittleEndian.AppendUint32(b, 10) // of uint64
	b = binary.LittleEndian.AppendUint64(b, 1<<25)
	os.WriteFile(path, b, 0o644)
	_, err = loadAll(path)
	wantErr(t, err, path, "array count")
}
