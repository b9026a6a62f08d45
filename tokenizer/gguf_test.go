package tokenizer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/gguf"
	"github.com/saddle-ml/saddle/internal/testenv"
)

// ggufKV is one metadata entry for writeGGUF: value is string, uint32, bool, []string or []int32.
type ggufKV struct {
	key   string
	value any
}

// writeGGUF writes a GGUF v3 file with the given metadata and no tensors.
func writeGGUF(t *testing.T, path string, kvs []ggufKV) {
	t.Helper()
	var b bytes.Buffer
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	b.WriteString("GGUF")
	w(uint32(3))
	w(uint64(0))
	w(uint64(len(kvs)))
	for _, kv := range kvs {
		str(kv.key)
		switch v := kv.value.(type) {
		case string:
			w(uint32(gguf.ValueString))
			str(v)
		case uint32:
			w(uint32(gguf.ValueUint32))
			w(v)
		case bool:
			w(uint32(gguf.ValueBool))
			if v {
				w(uint8(1))
			} else {
				w(uint8(0))
			}
		case []string:
			w(uint32(gguf.ValueArray))
			w(uint32(gguf.ValueString))
			w(uint64(len(v)))
			for _, s := range v {
				str(s)
			}
		case []int32:
			w(uint32(gguf.ValueArray))
			w(uint32(gguf.ValueInt32))
			w(uint64(len(v)))
			for _, x := range v {
				w(x)
			}
		case []float32:
			w(uint32(gguf.ValueArray))
			w(uint32(gguf.ValueFloat32))
			w(uint64(len(v)))
			for _, x := range v {
				w(math.Float32bits(x))
			}
		default:
			t.Fatalf("writeGGUF: unsupported %T", v)
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ggufFromTokenizerJSON converts a byte-level BPE tokenizer.json into GGUF "gpt2" metadata, the
// way llama.cpp's converter does: tokens by id, merges as "a b", added special tokens as control.
func ggufFromTokenizerJSON(t *testing.T, src, pre, dst string) {
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		AddedTokens []addedToken `json:"added_tokens"`
		Model       struct {
			Vocab  map[string]int  `json:"vocab"`
			Merges json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	n := len(f.Model.Vocab)
	for _, a := range f.AddedTokens {
		if a.ID+1 > n {
			n = a.ID + 1
		}
	}
	tokens := make([]string, n)
	types := make([]int32, n)
	for tok, id := range f.Model.Vocab {
		tokens[id], types[id] = tok, spmNormal
	}
	for _, a := range f.AddedTokens {
		tokens[a.ID], types[a.ID] = a.Content, spmUserDefined
		if a.Special {
			types[a.ID] = spmControl
		}
	}
	pairs, err := parseMerges(f.Model.Merges)
	if err != nil {
		t.Fatal(err)
	}
	merges := make([]string, len(pairs))
	for i, m := range pairs {
		merges[i] = m[0] + " " + m[1]
	}
	writeGGUF(t, dst, []ggufKV{
		{"general.architecture", "llama"},
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.pre", pre},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.merges", merges},
		{"tokenizer.ggml.bos_token_id", uint32(0)},
		{"tokenizer.ggml.add_bos_token", false},
		{"tokenizer.chat_template", "{{ messages }}"},
	})
}

// A GGUF "gpt2" vocabulary converted from llama3 / qwen3 tokenizer.json must tokenize like the
// tokenizer.json (which the conformance test checks against HF).
func TestGGUFByteLevelMatchesTokenizerJSON(t *testing.T) {
	corpus := loadCorpus(t)
	for _, c := range []struct{ name, pre string }{{"llama3", "llama-bpe"}, {"qwen3", "qwen2"}} {
		t.Run(c.name, func(t *testing.T) {
			src := testenv.Cached(t, c.name, "tokenizer.json")
			ref, err := FromFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if c.name == "qwen3" {
				// The GGUF path has no NFC normalizer (llama.cpp has none either): compare on NFC text.
				ref.normalizer = nil
			}
			dst := filepath.Join(t.TempDir(), c.name+".gguf")
			ggufFromTokenizerJSON(t, src, c.pre, dst)
			gg, err := FromGGUF(dst)
			if err != nil {
				t.Fatal(err)
			}
			if gg.ChatTemplate() != "{{ messages }}" || gg.BOS() != 0 {
				t.Errorf("chat template %q, BOS %d", gg.ChatTemplate(), gg.BOS())
			}
			for _, s := range corpus {
				want := ref.Encode(s, false)
				if got := gg.Encode(s, true); !slices.Equal(got, want) {
					t.Errorf("Encode(%q): gguf %v, tokenizer.json %v", clip(s), got, want)
					continue
				}
				if a, b := gg.Decode(want, true), ref.Decode(want, true); a != b {
					t.Errorf("Decode(%v): gguf %q, tokenizer.json %q", want, a, b)
				}
			}
		})
	}
}

func TestGGUFErrors(t *testing.T) {
	dir := t.TempDir()
	cases := map[string][]ggufKV{
		"no-model.gguf":  {{"tokenizer.ggml.tokens", []string{"a"}}},
		"bert.gguf":      {{"tokenizer.ggml.model", "bert"}, {"tokenizer.ggml.tokens", []string{"a"}}},
		"no-scores.gguf": {{"tokenizer.ggml.model", "llama"}, {"tokenizer.ggml.tokens", []string{"a"}}},
		"bad-pre.gguf": {{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", "mystery"},
			{"tokenizer.ggml.tokens", []string{"a"}}, {"tokenizer.ggml.merges", []string{}}},
		"bad-merge.gguf": {{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.tokens", []string{"a"}},
			{"tokenizer.ggml.merges", []string{"a b"}}},
	}
	want := map[string]string{"no-model.gguf": "tokenizer.ggml.model", "bert.gguf": "bert",
		"no-scores.gguf": "tokenizer.ggml.scores", "bad-pre.gguf": "mystery", "bad-merge.gguf": "merges[0]"}
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		writeGGUF(t, p, cases[n])
		_, err := FromGGUF(p)
		if err == nil || !strings.Contains(err.Error(), n) || !strings.Contains(err.Error(), want[n]) {
			t.Errorf("%s: error %v should name the file and %q", n, err, want[n])
		}
	}
	// Truncated files report the offset.
	good := filepath.Join(dir, "good.gguf")
	writeGGUF(t, good, cases["bert.gguf"])
	data, _ := os.ReadFile(good)
	trunc := filepath.Join(dir, "trunc.gguf")
	os.WriteFile(trunc, data[:len(data)-3], 0o644)
	if _, err := FromGGUF(trunc); err == nil || !strings.Contains(err.Error(), "offset") {
		t.Errorf("truncated: error %v should give the offset", err)
	}
}
