package tokenizer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/saddle-ml/saddle/internal/testenv"
)

func storiesTokenizers(t *testing.T) (hf, gg *Tokenizer) {
	t.Helper()
	hf, err := FromFile(testenv.Shared(t, "models", "stories260K-hf", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	gg, err = FromGGUF(testenv.Shared(t, "models", "stories260K", "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	return hf, gg
}

// HF tokenizers encodes "Once upon a time" with stories260K-hf/tokenizer.json as [1 403 407 261 378].
func TestStoriesKnownIDs(t *testing.T) {
	hf, gg := storiesTokenizers(t)
	for name, tk := range map[string]*Tokenizer{"tokenizer.json": hf, "gguf": gg} {
		if got, want := tk.Encode("Once upon a time", true), []int{1, 403, 407, 261, 378}; !slices.Equal(got, want) {
			t.Errorf("%s: Encode with BOS = %v, want %v", name, got, want)
		}
		if got, want := tk.Encode("Once upon a time", false), []int{403, 407, 261, 378}; !slices.Equal(got, want) {
			t.Errorf("%s: Encode = %v, want %v", name, got, want)
		}
		if got := tk.Decode([]int{1, 403, 407, 261, 378}, true); got != "Once upon a time" {
			t.Errorf("%s: Decode = %q", name, got)
		}
		if tk.BOS() != 1 || !slices.Equal(tk.EOS(), []int{2}) || tk.VocabSize() != 512 {
			t.Errorf("%s: BOS %d EOS %v VocabSize %d, want 1 [2] 512", name, tk.BOS(), tk.EOS(), tk.VocabSize())
		}
	}
}

// The GGUF vocabulary (SentencePiece scores) must tokenize like HF does with the converted
// tokenizer.json (merges).
func TestStoriesGGUFMatchesTokenizerJSON(t *testing.T) {
	hf, gg := storiesTokenizers(t)
	corpus := loadCorpus(t)
	corpus = append(corpus, strings.Repeat("Once upon a time there was a dog. ", 50))
	for _, s := range corpus {
		for _, special := range []bool{false, true} {
			want := hf.Encode(s, special)
			if got := gg.Encode(s, special); !slices.Equal(got, want) {
				t.Errorf("Encode(%q, %v): gguf %v, tokenizer.json %v", clip(s), special, got, want)
				continue
			}
			for _, skip := range []bool{false, true} {
				if a, b := gg.Decode(want, skip), hf.Decode(want, skip); a != b {
					t.Errorf("Decode(%v, %v): gguf %q, tokenizer.json %q", want, skip, a, b)
				}
			}
		}
	}
	for id := 0; id < hf.VocabSize(); id++ {
		if a, b := gg.TokenString(id), hf.TokenString(id); a != b {
			t.Errorf("TokenString(%d): gguf %q, tokenizer.json %q", id, a, b)
		}
	}
}

// SentencePiece-style vocabularies with byte fallback reproduce any text that contains no
// special-token text and no "▁" (which decodes to a space, in HF too).
func TestStoriesRoundTrip(t *testing.T) {
	hf, gg := storiesTokenizers(t)
	checked := 0
	for _, s := range loadCorpus(t) {
		if strings.Contains(s, "<s>") || strings.Contains(s, "</s>") || strings.Contains(s, "<unk>") || strings.Contains(s, "▁") {
			continue
		}
		checked++
		for name, tk := range map[string]*Tokenizer{"tokenizer.json": hf, "gguf": gg} {
			if got := tk.Decode(tk.Encode(s, true), true); got != s {
				t.Errorf("%s: Decode(Encode(%q)) = %q", name, clip(s), clip(got))
			}
		}
	}
	if checked < 200 {
		t.Fatalf("only %d corpus strings checked", checked)
	}
}

func TestLongInputIsNotQuadratic(t *testing.T) {
	hf, gg := storiesTokenizers(t)
	// One 300 KB "word" (SentencePiece-style vocabularies have no pre-tokenizer) and text.
	word := strings.Repeat("abcdefghij", 30000)
	text := strings.Repeat("Once upon a time, there was a little girl named Lily. ", 5000)
	start := time.Now()
	for _, tk := range []*Tokenizer{hf, gg} {
		for _, s := range []string{word, text} {
			ids := tk.Encode(s, false)
			if got := tk.Decode(ids, false); got != s {
				t.Fatalf("round trip of a %d-byte input failed", len(s))
			}
		}
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("encoding 4 long inputs took %v", el)
	}
}

// The split regex must stay linear on long runs of whitespace, letters and punctuation.
func TestLongInputRegexIsNotQuadratic(t *testing.T) {
	src := strings.Replace(tinyByteLevel, `{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}`,
		`{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "`+strings.ReplaceAll(llama3Pattern, `\`, `\\`)+
			`"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}`, 1)
	tk, err := FromJSON([]byte(src), "tiny.json")
	if err != nil {
		t.Fatal(err)
	}
	inputs := []string{
		strings.Repeat(" ", 200000) + "x",
		strings.Repeat("\n \t", 60000),
		strings.Repeat("ab ", 70000),
		strings.Repeat("a", 200000),
		strings.Repeat("!?", 100000),
		strings.Repeat("1", 200000),
	}
	start := time.Now()
	for _, s := range inputs {
		if ids := tk.Encode(s, false); len(s) > 0 && len(ids) == 0 && strings.Contains(s, "ab") {
			t.Fatalf("no ids for %q", clip(s))
		}
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("encoding 1.2 MB of long runs took %v", el)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const tinyByteLevel = `{
  "added_tokens": [{"id": 5, "content": "<|end|>", "special": true, "normalized": false,
                    "lstrip": false, "rstrip": false, "single_word": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|end|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                     "special_tokens": {"<|end|>": {"id": "<|end|>", "ids": [5], "tokens": ["<|end|>"]}}},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4},
            "merges": ["a b", "Ġ ab"]}
}`

func TestConfigFiles(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "tokenizer.json", tinyByteLevel)
	writeFile(t, dir, "tokenizer_config.json", `{"bos_token": {"content": "a"}, "eos_token": "<|end|>",
		"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}`)
	writeFile(t, dir, "generation_config.json", `{"eos_token_id": [5, 1]}`)
	tk, err := FromFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if tk.BOS() != 0 || !slices.Equal(tk.EOS(), []int{5, 1}) || tk.ChatTemplate() != "D" || tk.VocabSize() != 6 {
		t.Errorf("BOS %d EOS %v template %q VocabSize %d", tk.BOS(), tk.EOS(), tk.ChatTemplate(), tk.VocabSize())
	}
	// "ab ab" → "ab", "Ġab"; the template adds <|end|> first.
	if got, want := tk.Encode("ab ab", true), []int{5, 2, 4}; !slices.Equal(got, want) {
		t.Errorf("Encode = %v, want %v", got, want)
	}
	if got := tk.Decode([]int{5, 2, 4}, true); got != "ab ab" {
		t.Errorf("Decode = %q", got)
	}
}

func TestUnsupportedComponentsNameFileAndType(t *testing.T) {
	cases := []struct{ from, to, want string }{
		{`"model": {"type": "BPE"`, `"model": {"type": "Unigram"`, "Unigram"},
		{`"normalizer": null`, `"normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}`, "Precompiled"},
		{`"decoder": {"type": "ByteLevel"}`, `"decoder": {"type": "CTC"}`, "CTC"},
		{`"type": "ByteLevel", "add_prefix_space": false`, `"type": "UnicodeScripts", "add_prefix_space": false`, "UnicodeScripts"},
		{`"use_regex": true}`, `"use_regex": true}, "x": {"type": "Split", "pattern": {"Regex": "(?<=a)b"}}`, ""},
	}
	for _, c := range cases {
		src := strings.Replace(tinyByteLevel, c.from, c.to, 1)
		if src == tinyByteLevel {
			t.Fatalf("test case %q does not apply", c.from)
		}
		_, err := FromJSON([]byte(src), "some/dir/tokenizer.json")
		if c.want == "" { // unknown top-level keys are ignored, as in HF
			if err != nil {
				t.Errorf("%s: %v", c.to, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "some/dir/tokenizer.json") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v should name the file and %q", c.to, err, c.want)
		}
	}
	lookbehind := strings.Replace(tinyByteLevel, `"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}`,
		`"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(?<=a)b"}, "behavior": "Isolated", "invert": false}`, 1)
	if _, err := FromJSON([]byte(lookbehind), "lb.json"); err == nil || !strings.Contains(err.Error(), "lookbehind") ||
		!strings.Contains(err.Error(), "lb.json") {
		t.Errorf("lookbehind pattern: error %v", err)
	}
	if _, err := FromJSON([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}`), "x.json"); err == nil ||
		!strings.Contains(err.Error(), "x.json") {
		t.Errorf("merge with unknown token: error %v", err)
	}
	if _, err := FromGGUF(writeFile(t, t.TempDir(), "bad.gguf", "GGUF\x03\x00\x00\x00")); err == nil ||
		!strings.Contains(err.Error(), "bad.gguf") {
		t.Errorf("truncated GGUF: error %v", err)
	}
}

// Rust's String::from_utf8_lossy replaces each maximal invalid subpart by one U+FFFD
// (Unicode §3.9, "U+FFFD substitution of maximal subparts"; examples from Table 3-8).
func TestUTF8Lossy(t *testing.T) {
	cases := []struct {
		in   []byte
		want string
	}{
		{[]byte("abc"), "abc"},
		{[]byte{0xE2, 0x82, 0x41}, "\uFFFDA"},
		{[]byte{0xF0, 0x9F, 0x98}, "\uFFFD"},
		{[]byte{0xC0, 0x80}, "\uFFFD\uFFFD"},
		{[]byte{0xED, 0xA0, 0x80}, "\uFFFD\uFFFD\uFFFD"},
		{[]byte{0x61, 0xF1, 0x80, 0x80, 0xE1, 0x80, 0xC2, 0x62, 0x80, 0x63, 0x80, 0xBF, 0x64}, "a\uFFFD\uFFFD\uFFFDb\uFFFDc\uFFFD\uFFFDd"},
		{[]byte{0xF4, 0x90, 0x80, 0x80}, "\uFFFD\uFFFD\uFFFD\uFFFD"},
	}
	for _, c := range cases {
		if got := utf8Lossy(c.in); got != c.want {
			t.Errorf("utf8Lossy(% x) = %q, want %q", c.in, got, c.want)
		}
	}
}

// benchEncode measures encoding text with the tokenizer.json at path.
func benchEncode(b *testing.B, path, text string) {
	tk, err := FromFile(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tk.Encode(text, true)
	}
}

func BenchmarkEncodeStories(b *testing.B) {
	benchEncode(b, testenv.Shared(b, "models", "stories260K-hf", "tokenizer.json"),
		strings.Repeat("Once upon a time, there was a little girl named Lily. ", 200))
}

func BenchmarkEncodeLlama3(b *testing.B) {
	benchEncode(b, testenv.Cached(b, "llama3", "tokenizer.json"),
		strings.Repeat("Once upon a time, there was a little girl named Lily.\n  She said: \"it's 12345 dollars\". ", 100))
}

func TestConcurrentUse(t *testing.T) {
	hf, _ := storiesTokenizers(t)
	corpus := loadCorpus(t)
	want := make([][]int, len(corpus))
	for i, s := range corpus {
		want[i] = hf.Encode(s, true)
	}
	hf2, err := FromFile(testenv.Shared(t, "models", "stories260K-hf", "tokenizer.json")) // cold cache
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan string, 4*len(corpus))
	done := make(chan bool)
	for g := 0; g < 4; g++ {
		go func() {
			for i, s := range corpus {
				if got := hf2.Encode(s, true); !slices.Equal(got, want[i]) {
					errs <- s
				}
				hf2.Decode(want[i], true)
			}
			done <- true
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
	close(errs)
	for s := range errs {
		t.Errorf("concurrent Encode(%q) differs", clip(s))
	}
}

// Any valid text without "▁" or special-token text survives an SPM round trip, and nothing panics.
func FuzzStoriesRoundTrip(f *testing.F) {
	for _, s := range []string{"Once upon a time", "héllo 😀 \n\t x", "<0x41>", "  "} {
		f.Add(s)
	}
	hf, err := FromFile(testenv.Shared(f, "models", "stories260K-hf", "tokenizer.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids := hf.Encode(s, true)
		got := hf.Decode(ids, true)
		if !utf8.ValidString(s) || strings.Contains(s, "▁") || strings.Contains(s, "<s>") ||
			strings.Contains(s, "</s>") || strings.Contains(s, "<unk>") {
			return
		}
		if got != s {
			t.Errorf("Decode(Encode(%q)) = %q", s, got)
		}
	})
}

func TestParseConfig(t *testing.T) {
	for _, c := range []struct {
		json string
		want Config
	}{
		{`{"bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": false}, "chat_template": "{{ x }}"}`,
			Config{BOSToken: "<s>", EOSToken: "</s>", HasBOS: true, ChatTemplate: "{{ x }}"}},
		{`{"bos_token": null, "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}`,
			Config{HasBOS: true, ChatTemplate: "D"}},
		{`{"eos_token": "<|im_end|>", "chat_template": null}`, Config{EOSToken: "<|im_end|>"}},
	} {
		got, err := ParseConfig([]byte(c.json), "cfg.json")
		if err != nil || got != c.want {
			t.Errorf("ParseConfig(%s) = %+v, %v; want %+v", c.json, got, err, c.want)
		}
	}
	if _, err := ParseConfig([]byte(`{"bos_token": 3}`), "cfg.json"); err == nil || !strings.Contains(err.Error(), "cfg.json: bos_token") {
		t.Errorf("a numeric bos_token: error %v, want one naming cfg.json and bos_token", err)
	}
}
