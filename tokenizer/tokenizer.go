// Package tokenizer is a pure-Go text tokenizer whose ids match Hugging Face `tokenizers`
// byte for byte. It reads tokenizer.json files (BPE models: byte-level like GPT-2/Llama-3/Qwen,
// and SentencePiece-style with byte fallback like Llama-2/Gemma) and the tokenizer.ggml.*
// metadata of GGUF files ("llama" SentencePiece vocabularies with scores, "gpt2" byte-level ones).
//
// The encode pipeline mirrors HF: added tokens are split out first (before normalization for
// normalized=false tokens, after it otherwise), then each remaining piece is normalized,
// pre-tokenized, run through the model, and finally the post-processor adds special tokens.
// Split patterns run on a small Oniguruma-compatible regex engine (regex.go), since Go's regexp
// has no lookahead and ASCII-only \s, \w.
//
// Not supported (loading fails with an error naming the file and the type): Unigram, WordPiece
// and WordLevel models, the Precompiled and Bert normalizers, the UnicodeScripts pre-tokenizer,
// WordPiece/CTC decoders, lookbehind in patterns. BPE dropout, truncation and padding settings are
// ignored. Conformance with HF is tested in conformance_test.go (see scripts/fetch-tokenizers.sh).
package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// Tokenizer encodes text to ids and back. It is safe for concurrent use.
type Tokenizer struct {
	source string
	native nativeTokenizer // set by FromFileNative: the Rust HF tokenizers library does Encode/Decode

	normalizer normalizer   // may be nil
	preTok     preTokenizer // may be nil
	model      model
	post       postProcessor // may be nil
	decoder    decoder       // may be nil

	added *addedVocab

	bos          int
	eos          []int
	chatTemplate string
}

// piece is a part of the input on its way through the pipeline.
type piece struct {
	s       string
	atStart bool // its first character sits at original offset 0 (Metaspace prepend_scheme "first")
	id      int  // >= 0: an added token, final
}

type model interface {
	// tokenize appends the ids of one pre-tokenized word to dst.
	tokenize(dst []int, word string) []int
	tokenToID(tok string) (int, bool)
	idToToken(id int) (string, bool)
	maxID() int
	size() int // number of vocabulary entries (HF's get_vocab_size)
}

// Encode returns the ids of text. addSpecial runs the post-processor's special tokens (e.g. BOS);
// special-token text inside text (e.g. "<s>") is always recognized, as in HF.
// Invalid UTF-8 bytes are replaced by U+FFFD first.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	if t.native != nil {
		return t.native.Encode(text, addSpecial)
	}
	if !utf8.ValidString(text) {
		text = sanitizeUTF8(text)
	}
	pieces := t.added.extract(text, t.normalizer)
	if t.preTok != nil {
		pieces = t.preTok.preTokenize(pieces)
	}
	ids := make([]int, 0, len(text)/3+4)
	for _, p := range pieces {
		if p.id >= 0 {
			ids = append(ids, p.id)
			continue
		}
		ids = t.model.tokenize(ids, p.s)
	}
	if t.post != nil {
		ids = t.post.process(ids, addSpecial)
	}
	return ids
}

// Decode turns ids back into text; skipSpecial drops special tokens (by their content, as HF does).
// Unknown ids are ignored.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	if t.native != nil {
		return t.native.Decode(ids, skipSpecial)
	}
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		tok, ok := t.idToTokenForDecode(id)
		if !ok {
			continue
		}
		if skipSpecial && t.added.isSpecial(tok) {
			continue
		}
		toks = append(toks, tok)
	}
	if t.decoder == nil {
		return strings.Join(toks, " ")
	}
	return strings.Join(t.decoder.decode(toks), "")
}

func (t *Tokenizer) idToTokenForDecode(id int) (string, bool) {
	if s, ok := t.added.idToToken(id); ok {
		return s, true
	}
	return t.model.idToToken(id)
}

// VocabSize is the number of ids: the highest id of the model or the added tokens, plus one.
func (t *Tokenizer) VocabSize() int {
	n := t.model.maxID() + 1
	if m := t.added.maxID() + 1; m > n {
		n = m
	}
	return n
}

// BOS is the beginning-of-sequence id, or -1 if the tokenizer has none.
func (t *Tokenizer) BOS() int { return t.bos }

// EOS lists the end-of-sequence ids (possibly empty).
func (t *Tokenizer) EOS() []int { return append([]int(nil), t.eos...) }

// TokenString is the vocabulary string of id ("" if id is unknown).
func (t *Tokenizer) TokenString(id int) string {
	s, _ := t.idToTokenForDecode(id)
	return s
}

// TokenID returns the id of a vocabulary or added token string.
func (t *Tokenizer) TokenID(tok string) (int, bool) {
	if id, ok := t.added.byContent[tok]; ok {
		return id, true
	}
	return t.model.tokenToID(tok)
}

// ChatTemplate is the Jinja chat template (from tokenizer_config.json or GGUF), or "".
func (t *Tokenizer) ChatTemplate() string { return t.chatTemplate }

// sanitizeUTF8 replaces each invalid byte by U+FFFD.
func sanitizeUTF8(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s {
		b.WriteRune(r) // invalid bytes decode as utf8.RuneError, one per byte
	}
	return b.String()
}
