package tokenizer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
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

// ggufMetadata holds the key/value section of a GGUF file.
type ggufMetadata map[string]any

const (
	ggufUint8 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

type ggufReader struct {
	r    *bufio.Reader
	off  int64
	path string
	v1   bool // GGUF v1 uses 32-bit lengths and counts
}

func (g *ggufReader) read(buf []byte) error {
	n, err := io.ReadFull(g.r, buf)
	g.off += int64(n)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: offset %d: unexpected end of file", g.path, g.off)
		}
		return fmt.Errorf("%s: offset %d: %w", g.path, g.off, err)
	}
	return nil
}

func (g *ggufReader) u32() (uint32, error) {
	var b [4]byte
	err := g.read(b[:])
	return binary.LittleEndian.Uint32(b[:]), err
}

func (g *ggufReader) u64() (uint64, error) {
	var b [8]byte
	err := g.read(b[:])
	return binary.LittleEndian.Uint64(b[:]), err
}

func (g *ggufReader) count() (uint64, error) {
	if g.v1 {
		v, err := g.u32()
		return uint64(v), err
	}
	return g.u64()
}

func (g *ggufReader) str() (string, error) {
	n, err := g.count()
	if err != nil {
		return "", err
	}
	if n > 1<<28 {
		return "", fmt.Errorf("%s: offset %d: string length %d is implausible", g.path, g.off, n)
	}
	buf := make([]byte, n)
	if err := g.read(buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

func (g *ggufReader) value(typ uint32, key string) (any, error) {
	var b [8]byte
	switch typ {
	case ggufUint8, ggufInt8, ggufBool:
		if err := g.read(b[:1]); err != nil {
			return nil, err
		}
		switch typ {
		case ggufUint8:
			return int64(b[0]), nil
		case ggufInt8:
			return int64(int8(b[0])), nil
		}
		return b[0] != 0, nil
	case ggufUint16, ggufInt16:
		if err := g.read(b[:2]); err != nil {
			return nil, err
		}
		v := binary.LittleEndian.Uint16(b[:])
		if typ == ggufInt16 {
			return int64(int16(v)), nil
		}
		return int64(v), nil
	case ggufUint32, ggufInt32, ggufFloat32:
		v, err := g.u32()
		if err != nil {
			return nil, err
		}
		switch typ {
		case ggufUint32:
			return int64(v), nil
		case ggufInt32:
			return int64(int32(v)), nil
		}
		return float64(math.Float32frombits(v)), nil
	case ggufUint64, ggufInt64, ggufFloat64:
		v, err := g.u64()
		if err != nil {
			return nil, err
		}
		switch typ {
		case ggufUint64, ggufInt64:
			return int64(v), nil
		}
		return math.Float64frombits(v), nil
	case ggufString:
		return g.str()
	case ggufArray:
		et, err := g.u32()
		if err != nil {
			return nil, err
		}
		n, err := g.count()
		if err != nil {
			return nil, err
		}
		if n > 1<<26 {
			return nil, fmt.Errorf("%s: key %q: array length %d is implausible", g.path, key, n)
		}
		if et == ggufArray {
			return nil, fmt.Errorf("%s: key %q: nested arrays are not supported", g.path, key)
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = g.value(et, key); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: offset %d: key %q: unknown value type %d", g.path, g.off, key, typ)
}

// readGGUFMetadata reads the header and key/value section (not the tensors) of a GGUF file.
func readGGUFMetadata(path string) (ggufMetadata, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	defer f.Close()
	g := &ggufReader{r: bufio.NewReaderSize(f, 1<<20), path: path}
	var magic [4]byte
	if err := g.read(magic[:]); err != nil {
		return nil, err
	}
	if string(magic[:]) != "GGUF" {
		return nil, fmt.Errorf("%s: not a GGUF file (magic %q)", path, magic[:])
	}
	version, err := g.u32()
	if err != nil {
		return nil, err
	}
	if version < 1 || version > 3 {
		return nil, fmt.Errorf("%s: unsupported GGUF version %d", path, version)
	}
	g.v1 = version == 1
	if _, err := g.count(); err != nil { // tensor count
		return nil, err
	}
	nkv, err := g.count()
	if err != nil {
		return nil, err
	}
	if nkv > 1<<20 {
		return nil, fmt.Errorf("%s: %d metadata entries is implausible", path, nkv)
	}
	md := ggufMetadata{}
	for i := uint64(0); i < nkv; i++ {
		key, err := g.str()
		if err != nil {
			return nil, err
		}
		typ, err := g.u32()
		if err != nil {
			return nil, err
		}
		v, err := g.value(typ, key)
		if err != nil {
			return nil, err
		}
		md[key] = v
	}
	return md, nil
}

func (md ggufMetadata) str(key string) (string, error) {
	v, ok := md[key]
	if !ok {
		return "", fmt.Errorf("metadata %q missing", key)
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("metadata %q is %T, want string", key, v)
	}
	return s, nil
}

func (md ggufMetadata) strs(key string) ([]string, error) {
	v, ok := md[key]
	if !ok {
		return nil, fmt.Errorf("metadata %q missing", key)
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("metadata %q is %T, want array", key, v)
	}
	out := make([]string, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("metadata %q[%d] is %T, want string", key, i, e)
		}
		out[i] = s
	}
	return out, nil
}

// ints reads an integer array of length n; a missing key gives all-normal types (1).
func (md ggufMetadata) ints(key string, n int) ([]int, error) {
	v, ok := md[key]
	if !ok {
		out := make([]int, n)
		for i := range out {
			out[i] = spmNormal
		}
		return out, nil
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != n {
		return nil, fmt.Errorf("metadata %q: want an array of %d integers", key, n)
	}
	out := make([]int, n)
	for i, e := range arr {
		x, ok := e.(int64)
		if !ok {
			return nil, fmt.Errorf("metadata %q[%d] is %T, want integer", key, i, e)
		}
		out[i] = int(x)
	}
	return out, nil
}

func (md ggufMetadata) floats(key string, n int) ([]float32, error) {
	v, ok := md[key]
	if !ok {
		return nil, fmt.Errorf("metadata %q missing", key)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != n {
		return nil, fmt.Errorf("metadata %q: want an array of %d numbers", key, n)
	}
	out := make([]float32, n)
	for i, e := range arr {
		switch x := e.(type) {
		case float64:
			out[i] = float32(x)
		case int64:
			out[i] = float32(x)
		default:
			return nil, fmt.Errorf("metadata %q[%d] is %T, want number", key, i, e)
		}
	}
	return out, nil
}

func (md ggufMetadata) optInt(key string) (int, bool) {
	x, ok := md[key].(int64)
	return int(x), ok
}

func (md ggufMetadata) optBool(key string, def bool) bool {
	if b, ok := md[key].(bool); ok {
		return b
	}
	return def
}
