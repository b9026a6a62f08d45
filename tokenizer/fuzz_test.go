package tokenizer

// Fuzz targets for the tokenizer.json loader and the regex engine that runs its patterns. The seed corpora
// run as ordinary tests; `go test -fuzz FuzzFromJSON ./tokenizer` explores further.

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/saddle-ml/saddle/internal/gguf"
	"github.com/saddle-ml/saddle/internal/testenv"
)

// Small but complete tokenizer.json files in the two families this package implements.
const (
	fuzzByteLevelJSON = `{"version":"1.0","added_tokens":[{"id":7,"content":"<|end|>","special":true,"normalized":false}],
"normalizer":{"type":"NFC"},
"pre_tokenizer":{"type":"Sequence","pretokenizers":[
 {"type":"Split","pattern":{"Regex":"(?i:'s|'t)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},
 {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]},
"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|end|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
 "special_tokens":{"<|end|>":{"id":"<|end|>","ids":[7],"tokens":["<|end|>"]}}},
"decoder":{"type":"ByteLevel"},
"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2,"Ġ":3,"Ġab":4,"c":5,"abc":6},"merges":["a b","Ġ ab","ab c"]}}`

	fuzzSPMJSON = `{"added_tokens":[{"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true}],
"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
"pre_tokenizer":null,
"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}},{"Sequence":{"id":"A"}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1]}}},
"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
"model":{"type":"BPE","unk_token":"<unk>","fuse_unk":true,"byte_fallback":true,"vocab":{"<unk>":0,"<s>":1,"<0x41>":2,"▁":3,"h":4,"i":5,"hi":6,"▁hi":7},"merges":["h i","▁ hi"]}}`
)

func FuzzFromJSON(f *testing.F) {
	for _, seed := range []string{fuzzByteLevelJSON, fuzzSPMJSON} {
		f.Add([]byte(seed), "ab abc Hi hi\n\t'S 123 <|end|> é\xff")
	}
	f.Add([]byte(`{"model":{"type":"WordPiece","vocab":{}}}`), "x")
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0}}}`), "a")
	f.Add([]byte(`{"normalizer":{"type":"Precompiled"},"model":{"type":"BPE","vocab":{},"merges":[]}}`), "")
	if data, err := os.ReadFile(filepath.Join(testenv.SharedDir(), "models", "stories260K-hf", "tokenizer.json")); err == nil {
		f.Add(data, "Once upon a time, there was a robot.")
	}
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		var tok *Tokenizer
		var err error
		load := func() { tok, err = FromJSON(data, "fuzz.json") }
		// Ids index slices sized up to 2·len(vocab)+2^16, maps hold what the JSON holds. The count covers every
		// goroutine (the fuzzing engine's too), so an excess is measured again before it counts.
		budget := 64*uint64(len(data)) + 8<<20
		if alloc, over := testenv.OverBudget(budget, load); over {
			t.Fatalf("loading %d bytes allocated %d", len(data), alloc)
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.json: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		n := tok.VocabSize()
		for _, special := range []bool{true, false} {
			ids := tok.Encode(text, special)
			for _, id := range ids {
				if id < 0 || id >= n {
					t.Fatalf("Encode(%q) gave id %d outside the vocabulary of %d", text, id, n)
				}
			}
			tok.Decode(ids, special)
		}
		tok.Decode([]int{-1, n, n + 1000, 0, 1 << 40}, false)
		tok.TokenString(-5)
		tok.TokenString(n)
		if b := tok.BOS(); b < -1 || b >= n {
			t.Fatalf("BOS %d outside the vocabulary of %d", b, n)
		}
	})
}

// FuzzRegex compiles a pattern and runs it over a text: it must neither panic nor hang, and every match must
// be a valid, ordered, non-overlapping byte range of the text.
func FuzzRegex(f *testing.F) {
	for _, p := range []string{gpt2Pattern, ggufPrePatterns["llama3"], ggufPrePatterns["qwen2"], `\s+(?!\S)|\s+`,
		`(?>a+)b|(?=x)\w\b`, `(a|b)*?c{2,3}+[^\p{L}\d]`, `^$|\A\z|\Z`} {
		f.Add(p, "Hello world!  It's 2024\n\n  ok? a1b22ccc ñ 中文")
	}
	f.Fuzz(func(t *testing.T, pattern, text string) {
		re, err := compileRegex(pattern)
		if err != nil {
			return
		}
		prev := 0
		for _, m := range re.findAll(text) {
			if m[0] < prev || m[1] < m[0] || m[1] > len(text) {
				t.Fatalf("match %v after %d in a text of %d bytes", m, prev, len(text))
			}
			prev = m[1]
		}
	})
}

// TestFuzzSeedsLoad makes sure the hand-written seeds are valid, so the fuzzer starts from tokenizers that load.
func TestFuzzSeedsLoad(t *testing.T) {
	for name, seed := range map[string]string{"byte-level": fuzzByteLevelJSON, "spm": fuzzSPMJSON} {
		tok, err := FromJSON([]byte(seed), name)
		if err != nil {
			t.Fatal(err)
		}
		if ids := tok.Encode("ab abc hi", true); len(ids) < 2 {
			t.Errorf("%s: %v", name, ids)
		} else {
			t.Logf("%s: %v", name, ids)
		}
	}
}

// TestRegexLimits: catastrophic backtracking and deep general repetitions stop at the matcher's budget and
// depth limit instead of hanging or overflowing the stack; ordinary patterns are unaffected.
func TestRegexLimits(t *testing.T) {
	for _, tc := range []struct{ pattern, text string }{
		{`(a*)*b`, strings.Repeat("a", 40)},
		{`(a|a)*c`, strings.Repeat("a", 60)},
		{`(?:ab)+`, strings.Repeat("ab", 1<<19)},
		{`(?:(?!x).)+`, strings.Repeat("z", 1<<19)},
	} {
		re, err := compileRegex(tc.pattern)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		matches := re.findAll(tc.text)
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("%s on %d bytes took %v", tc.pattern, len(tc.text), d)
		}
		t.Logf("%s on %d bytes: %d matches in %v", tc.pattern, len(tc.text), len(matches), time.Since(start))
	}
	// A long run of a set repetition is not a general repetition: it matches whole.
	re, _ := compileRegex(`\p{L}+`)
	if m := re.findAll(strings.Repeat("é", 1<<18)); len(m) != 1 || m[0][1] != 2<<18 {
		t.Errorf(`\p{L}+ on 2^18 letters: %v`, m)
	}
}

// fuzzGGUFBytes encodes GGUF v3 metadata (no tensors); values are string, uint32, bool, []string, []int32 or
// []float32.
func fuzzGGUFBytes(kvs ...any) []byte {
	le := binary.LittleEndian
	b := append([]byte("GGUF"), le.AppendUint32(nil, 3)...)
	b = le.AppendUint64(le.AppendUint64(b, 0), uint64(len(kvs)/2))
	str := func(s string) { b = append(le.AppendUint64(b, uint64(len(s))), s...) }
	for i := 0; i < len(kvs); i += 2 {
		str(kvs[i].(string))
		switch v := kvs[i+1].(type) {
		case string:
			b = le.AppendUint32(b, uint32(gguf.ValueString))
			str(v)
		case uint32:
			b = le.AppendUint32(le.AppendUint32(b, uint32(gguf.ValueUint32)), v)
		case bool:
			b = append(le.AppendUint32(b, uint32(gguf.ValueBool)), map[bool]byte{false: 0, true: 1}[v])
		case []string:
			b = le.AppendUint64(le.AppendUint32(le.AppendUint32(b, uint32(gguf.ValueArray)), uint32(gguf.ValueString)), uint64(len(v)))
			for _, s := range v {
				str(s)
			}
		case []int32:
			b = le.AppendUint64(le.AppendUint32(le.AppendUint32(b, uint32(gguf.ValueArray)), uint32(gguf.ValueInt32)), uint64(len(v)))
			for _, x := range v {
				b = le.AppendUint32(b, uint32(x))
			}
		case []float32:
			b = le.AppendUint64(le.AppendUint32(le.AppendUint32(b, uint32(gguf.ValueArray)), uint32(gguf.ValueFloat32)), uint64(len(v)))
			for _, x := range v {
				b = le.AppendUint32(b, math.Float32bits(x))
			}
		}
	}
	return b
}

// FuzzFromGGUF builds tokenizers from fuzzed GGUF metadata: no panic, errors name the file, and encoding yields
// ids inside the vocabulary.
func FuzzFromGGUF(f *testing.F) {
	f.Add(fuzzGGUFBytes("tokenizer.ggml.model", "llama",
		"tokenizer.ggml.tokens", []string{"<unk>", "<s>", "</s>", "<0x41>", "▁", "h", "i", "hi", "▁hi"},
		"tokenizer.ggml.scores", []float32{0, 0, 0, 0, -1, -2, -2, -1, -0.5},
		"tokenizer.ggml.token_type", []int32{2, 3, 3, 6, 1, 1, 1, 1, 1},
		"tokenizer.ggml.bos_token_id", uint32(1), "tokenizer.ggml.eos_token_id", uint32(2),
		"tokenizer.ggml.add_space_prefix", true), "hi hi A é")
	f.Add(fuzzGGUFBytes("tokenizer.ggml.model", "gpt2", "tokenizer.ggml.pre", "llama-bpe",
		"tokenizer.ggml.tokens", []string{"a", "b", "ab", "Ġ", "Ġab", "<|end|>"},
		"tokenizer.ggml.token_type", []int32{1, 1, 1, 1, 1, 3},
		"tokenizer.ggml.merges", []string{"a b", "Ġ ab"}, "tokenizer.ggml.eos_token_id", uint32(5),
		"tokenizer.chat_template", "{{ messages }}"), "ab ab<|end|>")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		path := filepath.Join(dir, "fuzz.gguf")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		tok, err := FromGGUF(path)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		n := tok.VocabSize()
		for _, id := range tok.Encode(text, true) {
			if id < 0 || id >= n {
				t.Fatalf("Encode(%q) gave id %d outside the vocabulary of %d", text, id, n)
			}
		}
		for _, id := range append(tok.EOS(), tok.BOS()) {
			if id < -1 || id >= n {
				t.Fatalf("special id %d outside the vocabulary of %d", id, n)
			}
		}
		tok.Decode([]int{-1, 0, n, 1 << 40}, true)
	})
}
