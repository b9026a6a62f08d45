package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// generatedFromGGUF writes the tokenizer files for gguf into a temp dir and loads them back.
func generatedFromGGUF(t *testing.T, gguf string) (*Tokenizer, string) {
	t.Helper()
	dir := t.TempDir()
	if err := WriteHFFromGGUF(gguf, dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tokenizer.json")
	tk, err := FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return tk, path
}

func compareOnCorpus(t *testing.T, got, want *Tokenizer, corpus []string) {
	t.Helper()
	bad := 0
	for _, s := range corpus {
		for _, special := range []bool{false, true} {
			g, w := got.Encode(s, special), want.Encode(s, special)
			if !slices.Equal(g, w) {
				if bad++; bad < 10 {
					t.Errorf("Encode(%q, %v): tokenizer.json %v, GGUF %v", clip(s), special, g, w)
				}
				continue
			}
			if a, b := got.Decode(w, false), want.Decode(w, false); a != b {
				t.Errorf("Decode(%v): tokenizer.json %q, GGUF %q", w, a, b)
			}
		}
	}
	if got.BOS() != want.BOS() || !slices.Equal(got.EOS(), want.EOS()) || got.ChatTemplate() != want.ChatTemplate() {
		t.Errorf("BOS %d EOS %v template %q; GGUF has BOS %d EOS %v template %q",
			got.BOS(), got.EOS(), got.ChatTemplate(), want.BOS(), want.EOS(), want.ChatTemplate())
	}
}

// The tokenizer.json generated from a SentencePiece GGUF tokenizes the corpus like the GGUF, its merges are the
// ones transformers' LlamaConverter wrote for the same model (stories260K-hf), and the official HF tokenizers
// library reads it and produces the same ids.
func TestHFFromGGUFSentencePiece(t *testing.T) {
	gguf := testenv.Shared(t, "models", "stories260K", "stories260K.gguf")
	want, err := FromGGUF(gguf)
	if err != nil {
		t.Fatal(err)
	}
	got, path := generatedFromGGUF(t, gguf)
	corpus := loadCorpus(t)
	compareOnCorpus(t, got, want, corpus)

	// Merges against the converter's own output for this vocabulary.
	if ref := filepath.Join(testenv.SharedDir(), "models", "stories260K-hf", "tokenizer.json"); fileExists(ref) {
		mergesOf := func(p string) [][2]string {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var f struct {
				Model struct {
					Merges json.RawMessage `json:"merges"`
				} `json:"model"`
			}
			if err := json.Unmarshal(data, &f); err != nil {
				t.Fatal(err)
			}
			m, err := parseMerges(f.Model.Merges)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		if g, w := mergesOf(path), mergesOf(ref); !slices.Equal(g, w) {
			t.Errorf("derived %d merges differ from LlamaConverter's %d (first: %v vs %v)", len(g), len(w), g[:min(5, len(g))], w[:min(5, len(w))])
		}
	}

	// The HF tokenizers library itself (skipped without node and the npm package).
	node := hfOracle(t)
	corpusPath, err := filepath.Abs(filepath.Join("testdata", "corpus.json"))
	if err != nil {
		t.Fatal(err)
	}
	idsPath := filepath.Join(t.TempDir(), "ids.json")
	if err := os.WriteFile(idsPath, []byte("[]"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := startOracle(t, node, path, corpusPath, idsPath).wait(t)
	if len(res.Encode) != len(corpus) {
		t.Fatalf("oracle returned %d encodings for %d texts", len(res.Encode), len(corpus))
	}
	for i, s := range corpus {
		if w := want.Encode(s, false); !slices.Equal(res.Encode[i].IDs, w) {
			t.Errorf("HF(%q) = %v, GGUF %v", clip(s), res.Encode[i].IDs, w)
		}
		if w := want.Encode(s, true); !slices.Equal(res.Encode[i].IDsSpecial, w) {
			t.Errorf("HF(%q, special) = %v, GGUF %v", clip(s), res.Encode[i].IDsSpecial, w)
		}
	}
}

// A byte-level ("gpt2") GGUF vocabulary, made from llama3's tokenizer.json, converts back to a tokenizer.json
// that tokenizes like the GGUF.
func TestHFFromGGUFByteLevel(t *testing.T) {
	corpus := loadCorpus(t)
	ran := false
	// llama3's vocabulary exercises the Split + ByteLevel pre-tokenizer and ignore_merges; the other "pre"
	// names differ only in the regex, which is copied from the same table FromGGUF uses.
	for _, c := range []struct{ name, pre string }{{"llama3", "llama-bpe"}} {
		src := filepath.Join(testenv.TokenizerCache(), c.name, "tokenizer.json")
		if !fileExists(src) {
			continue
		}
		ran = true
		t.Run(c.name, func(t *testing.T) {
			gguf := filepath.Join(t.TempDir(), c.name+".gguf")
			ggufFromTokenizerJSON(t, src, c.pre, gguf)
			want, err := FromGGUF(gguf)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := generatedFromGGUF(t, gguf)
			compareOnCorpus(t, got, want, corpus)
		})
	}
	if !ran {
		testenv.Missing(t, "no byte-level tokenizer.json in %s"+fetchHint, testenv.TokenizerCache())
	}
}

func TestHFFromGGUFErrors(t *testing.T) {
	dir := t.TempDir()
	dup := filepath.Join(dir, "dup.gguf")
	writeGGUF(t, dup, []ggufKV{{"tokenizer.ggml.model", "llama"}, {"tokenizer.ggml.tokens", []string{"a", "b", "a"}},
		{"tokenizer.ggml.scores", []float32{0, 0, 0}}})
	if _, _, err := HFFilesFromGGUF(dup); err == nil || !containsAll(err.Error(), "dup.gguf", `"a"`, "ids 0 and 2") {
		t.Errorf("duplicate token: error %v should name the file, the token and both ids", err)
	}
	bert := filepath.Join(dir, "bert.gguf")
	writeGGUF(t, bert, []ggufKV{{"tokenizer.ggml.model", "bert"}, {"tokenizer.ggml.tokens", []string{"a"}}})
	if _, _, err := HFFilesFromGGUF(bert); err == nil || !containsAll(err.Error(), "bert.gguf", "bert") {
		t.Errorf("unsupported model: error %v", err)
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
