package tokenizer

import (
	"fmt"
	"math"

	"github.com/saddle-ml/saddle/internal/gguf"
)

// FromGGUF builds a tokenizer from the tokenizer.ggml.* metadata of a GGUF file. Supported
// models: "llama" (SentencePiece BPE with scores and byte fallback) and "gpt2" (byte-level BPE
// with merges; the split regex is chosen by tokenizer.ggml.pre).
func FromGGUF(path string) (*Tokenizer, error) {
	md, err := readGGUFMetadata(path)
	if err != nil {
		return nil, err
	}
	modelName, err := md.str("tokenizer.ggml.model")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	tokens, err := md.strs("tokenizer.ggml.tokens")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	types, err := md.ints("tokenizer.ggml.token_type", len(tokens))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var t *Tokenizer
	switch modelName {
	case "llama":
		t, err = ggufSPM(md, tokens, types)
	case "gpt2":
		t, err = ggufByteLevel(md, tokens, types)
	default:
		err = fmt.Errorf("tokenizer.ggml.model %q is not supported (only \"llama\" and \"gpt2\")", modelName)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.source = path
	t.bos = -1
	if id, ok := md.optInt("tokenizer.ggml.bos_token_id"); ok && id >= 0 && id < len(tokens) {
		t.bos = id
	}
	for _, key := range []string{"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"} {
		if id, ok := md.optInt(key); ok && id >= 0 && id < len(tokens) {
			t.addEOS(id)
		}
	}
	if tmpl, err := md.str("tokenizer.chat_template"); err == nil {
		t.chatTemplate = tmpl
	}
	// Post-processor: BOS/EOS as the GGUF asks (llama.cpp's defaults: BOS yes, EOS no).
	addBOS := md.optBool("tokenizer.ggml.add_bos_token", modelName == "llama")
	addEOS := md.optBool("tokenizer.ggml.add_eos_token", false)
	tp := &templateProcessor{}
	if addBOS && t.bos >= 0 {
		tp.single = append(tp.single, templatePiece{special: []int{t.bos}})
	}
	tp.single = append(tp.single, templatePiece{isSeq: true})
	if eos, ok := md.optInt("tokenizer.ggml.eos_token_id"); addEOS && ok && eos >= 0 && eos < len(tokens) {
		tp.single = append(tp.single, templatePiece{special: []int{eos}})
	}
	t.post = tp
	return t, nil
}

// addedFromTypes turns control/unknown tokens into special added tokens and user-defined tokens
// into plain added tokens, as HF's converters do, so their text is matched before normalization.
func addedFromTypes(tokens []string, types []int) []addedToken {
	var out []addedToken
	for id, typ := range types {
		switch typ {
		case spmUnknown, spmControl:
			out = append(out, addedToken{ID: id, Content: tokens[id], Special: true})
		case spmUserDefined:
			out = append(out, addedToken{ID: id, Content: tokens[id]})
		}
	}
	return out
}

func ggufSPM(md ggufMetadata, tokens []string, types []int) (*Tokenizer, error) {
	scores, err := md.floats("tokenizer.ggml.scores", len(tokens))
	if err != nil {
		return nil, err
	}
	m := &spmModel{
		vocab:     make(map[string]int, len(tokens)),
		tokens:    tokens,
		scores:    scores,
		mergeable: make([]bool, len(tokens)),
		unkID:     -1,
	}
	for id, tok := range tokens {
		if _, dup := m.vocab[tok]; !dup {
			m.vocab[tok] = id
		}
		switch types[id] {
		case spmNormal, spmUserDefined, spmUnused, 0:
			m.mergeable[id] = true
		}
	}
	for b := 0; b < 256; b++ {
		m.byteIDs[b] = -1
		if id, ok := m.vocab[byteTokenName(byte(b))]; ok {
			m.byteIDs[b] = id
		}
	}
	if id, ok := md.optInt("tokenizer.ggml.unknown_token_id"); ok && id >= 0 && id < len(tokens) {
		m.unkID = id
	}
	t := &Tokenizer{model: m}
	addPrefix := md.optBool("tokenizer.ggml.add_space_prefix", true)
	replace := replaceNormalizer{literal: " ", content: "▁"}
	dec := seqDecoder{replaceDecoder{literal: "▁", content: " "}, byteFallbackDecoder{}, fuseDecoder{}}
	if addPrefix {
		t.normalizer = seqNormalizer{prependNormalizer{prefix: "▁"}, replace}
		dec = append(dec, stripDecoder{content: ' ', start: 1})
	} else {
		t.normalizer = replace
	}
	t.decoder = dec
	t.added = newAddedVocab()
	t.added.add(addedFromTypes(tokens, types), m, t.normalizer)
	return t, nil
}

// Split patterns of llama.cpp's tokenizer.ggml.pre names.
var ggufPrePatterns = map[string]string{
	"default":   gpt2Pattern,
	"gpt2":      gpt2Pattern,
	"gpt-2":     gpt2Pattern,
	"llama-bpe": `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
	"llama3":    `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
	"qwen2":     `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
}

func ggufByteLevel(md ggufMetadata, tokens []string, types []int) (*Tokenizer, error) {
	pre := "default"
	if p, err := md.str("tokenizer.ggml.pre"); err == nil {
		pre = p
	}
	pattern, ok := ggufPrePatterns[pre]
	if !ok {
		return nil, fmt.Errorf("tokenizer.ggml.pre %q is not supported", pre)
	}
	mergeLines, err := md.strs("tokenizer.ggml.merges")
	if err != nil {
		return nil, err
	}
	m := &bpeModel{vocab: make(map[string]int, len(tokens)), unkID: -1, ignoreMerges: pre == "llama-bpe" || pre == "llama3"}
	for id, tok := range tokens {
		if _, dup := m.vocab[tok]; !dup {
			m.vocab[tok] = id
		}
	}
	m.initReverse()
	m.merges = make(map[uint64]mergeInfo, len(mergeLines))
	for rank, line := range mergeLines {
		var a, b string
		for i := 0; i < len(line); i++ {
			if line[i] == ' ' {
				a, b = line[:i], line[i+1:]
				break
			}
		}
		ai, ok1 := m.vocab[a]
		bi, ok2 := m.vocab[b]
		ni, ok3 := m.vocab[a+b]
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("tokenizer.ggml.merges[%d]: %q does not merge vocabulary tokens", rank, line)
		}
		if _, dup := m.merges[pairKey(ai, bi)]; !dup {
			m.merges[pairKey(ai, bi)] = mergeInfo{rank: int32(rank), newID: int32(ni)}
		}
	}
	re, err := compileRegex(pattern)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{model: m}
	split := &splitPreTokenizer{re: re, behavior: behIsolated}
	if pre == "default" || pre == "gpt2" || pre == "gpt-2" {
		t.preTok = &byteLevelPreTokenizer{useRegex: true}
	} else {
		t.preTok = seqPreTokenizer{split, &byteLevelPreTokenizer{}}
	}
	t.decoder = byteLevelDecoder{}
	t.added = newAddedVocab()
	t.added.add(addedFromTypes(tokens, types), m, nil)
	return t, nil
}

// ggufMetadata is the key/value section of a GGUF file, read by the shared bounded GGUF reader.
type ggufMetadata struct{ f *gguf.File }

// readGGUFMetadata reads the header and key/value section (not the tensors) of a GGUF file.
func readGGUFMetadata(path string) (ggufMetadata, error) {
	f, err := gguf.ReadMetadata(path)
	if err != nil {
		return ggufMetadata{}, fmt.Errorf("tokenizer: %w", err)
	}
	return ggufMetadata{f}, nil
}

func (md ggufMetadata) str(key string) (string, error) {
	v, ok := md.f.Get(key)
	if !ok {
		return "", fmt.Errorf("metadata %q missing", key)
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("metadata %q is %s, want string", key, gguf.TypeName(v))
	}
	return s, nil
}

func (md ggufMetadata) strs(key string) ([]string, error) {
	v, ok := md.f.Get(key)
	if !ok {
		return nil, fmt.Errorf("metadata %q missing", key)
	}
	out, ok := v.([]string)
	if !ok {
		return nil, fmt.Errorf("metadata %q is %s, want array of string", key, gguf.TypeName(v))
	}
	return out, nil
}

// ints reads an integer array of length n; a missing key gives all-normal types (1).
func (md ggufMetadata) ints(key string, n int) ([]int, error) {
	v, ok := md.f.Get(key)
	if !ok {
		out := make([]int, n)
		for i := range out {
			out[i] = spmNormal
		}
		return out, nil
	}
	arr, ok := gguf.Ints(v)
	if !ok || len(arr) != n {
		return nil, fmt.Errorf("metadata %q: want an array of %d integers, got %s of length %d", key, n,
			gguf.TypeName(v), len(arr))
	}
	out := make([]int, n)
	for i, x := range arr {
		if x < math.MinInt32 || x > math.MaxInt32 {
			return nil, fmt.Errorf("metadata %q[%d] = %d is out of range", key, i, x)
		}
		out[i] = int(x)
	}
	return out, nil
}

func (md ggufMetadata) floats(key string, n int) ([]float32, error) {
	v, ok := md.f.Get(key)
	if !ok {
		return nil, fmt.Errorf("metadata %q missing", key)
	}
	arr, ok := gguf.Floats(v)
	if !ok {
		if ints, isInt := gguf.Ints(v); isInt {
			arr = make([]float64, len(ints))
			for i, x := range ints {
				arr[i] = float64(x)
			}
			ok = true
		}
	}
	if !ok || len(arr) != n {
		return nil, fmt.Errorf("metadata %q: want an array of %d numbers, got %s of length %d", key, n,
			gguf.TypeName(v), len(arr))
	}
	out := make([]float32, n)
	for i, x := range arr {
		out[i] = float32(x)
	}
	return out, nil
}

// optInt reads an integer scalar; ok is false when absent, of another type or out of the int32 range.
func (md ggufMetadata) optInt(key string) (int, bool) {
	v, _ := md.f.Get(key)
	x, ok := gguf.Int(v)
	if !ok || x < math.MinInt32 || x > math.MaxUint32 {
		return 0, false
	}
	return int(x), true
}

func (md ggufMetadata) optBool(key string, def bool) bool {
	v, _ := md.f.Get(key)
	if b, ok := v.(bool); ok {
		return b
	}
	return def
}
