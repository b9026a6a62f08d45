package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// FromFile loads a tokenizer.json. A tokenizer_config.json (bos/eos tokens, chat template) and a
// generation_config.json (eos ids) in the same directory are read when present.
func FromFile(path string) (*Tokenizer, error) {
	data, err := fileio.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := FromJSON(data, path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	if cfg, err := fileio.ReadFile(cfgPath); err == nil {
		if err := t.applyConfig(cfg, cfgPath); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	genPath := filepath.Join(dir, "generation_config.json")
	if gen, err := fileio.ReadFile(genPath); err == nil {
		if err := t.applyGenerationConfig(gen, genPath); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return t, nil
}

type jsonTokenizerFile struct {
	AddedTokens   []addedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	Model         json.RawMessage `json:"model"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
}

// FromJSON parses the contents of a tokenizer.json; source names it in error messages.
// Truncation and padding settings are ignored (they are run-time options, not tokenization).
func FromJSON(data []byte, source string) (*Tokenizer, error) {
	var f jsonTokenizerFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	t := &Tokenizer{source: source, bos: -1}
	var err error
	if t.normalizer, err = parseNormalizer(f.Normalizer, "normalizer"); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if t.preTok, err = parsePreTokenizer(f.PreTokenizer, "pre_tokenizer"); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if t.model, err = parseModel(f.Model); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if t.decoder, err = parseDecoder(f.Decoder, "decoder"); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	t.added = newAddedVocab()
	t.added.add(f.AddedTokens, t.model, t.normalizer)
	// The post-processor refers to special tokens by id, so it is parsed last.
	if t.post, err = parsePostProcessor(f.PostProcessor, "post_processor"); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if t.post != nil {
		if err := checkSpecialIDs(t.post, t.VocabSize()); err != nil {
			return nil, fmt.Errorf("%s: post_processor: %w", source, err)
		}
		t.bos = leadingSpecial(t.post)
	}
	return t, nil
}

// checkSpecialIDs rejects post-processor token ids outside the vocabulary: they come from the file and would
// otherwise reach a model's embedding lookup.
func checkSpecialIDs(p postProcessor, vocab int) error {
	check := func(id int) error {
		if id < 0 || id >= vocab {
			return fmt.Errorf("special token id %d is outside the vocabulary (%d tokens)", id, vocab)
		}
		return nil
	}
	switch v := p.(type) {
	case *templateProcessor:
		for _, piece := range v.single {
			for _, id := range piece.special {
				if err := check(id); err != nil {
					return err
				}
			}
		}
	case wrapProcessor:
		if err := check(v.first); err != nil {
			return err
		}
		return check(v.last)
	case seqPostProcessor:
		for _, q := range v {
			if err := checkSpecialIDs(q, vocab); err != nil {
				return err
			}
		}
	}
	return nil
}

// isNull reports an absent or JSON-null component.
func isNull(raw json.RawMessage) bool {
	s := bytes.TrimSpace(raw)
	return len(s) == 0 || bytes.Equal(s, []byte("null"))
}

func componentType(raw json.RawMessage, where string) (string, map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", nil, fmt.Errorf("%s: %w", where, err)
	}
	var typ string
	if t, ok := obj["type"]; ok {
		if err := json.Unmarshal(t, &typ); err != nil {
			return "", nil, fmt.Errorf("%s.type: %w", where, err)
		}
	}
	return typ, obj, nil
}

// field decodes obj[key] into dst when present and not null.
func field(obj map[string]json.RawMessage, key string, dst any, where string) error {
	raw, ok := obj[key]
	if !ok || isNull(raw) {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s.%s: %w", where, key, err)
	}
	return nil
}

// parsePattern reads {"String": s} or {"Regex": r}.
// parseComponent parses a tokenizer.json component: null is none (nil), a "Sequence" lists components under
// seqKey (nulls among them left out) and becomes seq of them, and any other type is parsed by kind (from the raw
// JSON or its fields).
func parseComponent[T comparable](raw json.RawMessage, where, seqKey string, seq func([]T) T,
	kind func(typ string, raw json.RawMessage, obj map[string]json.RawMessage, where string) (T, error)) (T, error) {
	var none T
	if isNull(raw) {
		return none, nil
	}
	typ, obj, err := componentType(raw, where)
	if err != nil {
		return none, err
	}
	if typ != "Sequence" {
		return kind(typ, raw, obj, where)
	}
	var subs []json.RawMessage
	if err := field(obj, seqKey, &subs, where); err != nil {
		return none, err
	}
	var out []T
	for i, sub := range subs {
		c, err := parseComponent(sub, fmt.Sprintf("%s.%s[%d]", where, seqKey, i), seqKey, seq, kind)
		if err != nil {
			return none, err
		}
		if c != none {
			out = append(out, c)
		}
	}
	return seq(out), nil
}

// parseReplace reads a Replace component's pattern and content.
func parseReplace(obj map[string]json.RawMessage, where string) (replace, error) {
	lit, re, err := parsePattern(obj, where)
	if err != nil {
		return replace{}, err
	}
	r := replace{literal: lit, re: re}
	err = field(obj, "content", &r.content, where)
	return r, err
}

func parsePattern(obj map[string]json.RawMessage, where string) (literal string, re *regex, err error) {
	var pat struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	}
	if err := field(obj, "pattern", &pat, where); err != nil {
		return "", nil, err
	}
	switch {
	case pat.String != nil && *pat.String != "":
		return *pat.String, nil, nil
	case pat.String != nil:
		return "", literalRegex(""), nil
	case pat.Regex != nil:
		re, err := compileRegex(*pat.Regex)
		if err != nil {
			return "", nil, fmt.Errorf("%s.pattern: %w", where, err)
		}
		return "", re, nil
	}
	return "", nil, fmt.Errorf("%s: missing pattern", where)
}

func parseNormalizer(raw json.RawMessage, where string) (normalizer, error) {
	return parseComponent(raw, where, "normalizers", func(c []normalizer) normalizer { return seqNormalizer(c) }, normalizerKind)
}

func normalizerKind(typ string, raw json.RawMessage, obj map[string]json.RawMessage, where string) (normalizer, error) {
	switch typ {
	case "Prepend":
		var p string
		if err := field(obj, "prepend", &p, where); err != nil {
			return nil, err
		}
		return prependNormalizer{prefix: p}, nil
	case "Replace":
		r, err := parseReplace(obj, where)
		if err != nil {
			return nil, err
		}
		return replaceNormalizer{r}, nil
	case "NFC":
		return unicodeNormalizer{norm.NFC}, nil
	case "NFD":
		return unicodeNormalizer{norm.NFD}, nil
	case "NFKC":
		return unicodeNormalizer{norm.NFKC}, nil
	case "NFKD":
		return unicodeNormalizer{norm.NFKD}, nil
	case "Lowercase":
		return lowercaseNormalizer{}, nil
	case "Strip":
		var s struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		return stripNormalizer{left: s.Left, right: s.Right}, nil
	case "StripAccents":
		return stripAccentsNormalizer{}, nil
	case "Nmt":
		return nmtNormalizer{}, nil
	case "ByteLevel":
		return byteLevelNormalizer{}, nil
	}
	return nil, fmt.Errorf("%s: unsupported normalizer type %q", where, typ)
}

// splitBehaviors and prependSchemes name the values of a Split's "behavior" and a Metaspace's "prepend_scheme".
var (
	splitBehaviors = map[string]splitBehavior{"Removed": behRemoved, "Isolated": behIsolated,
		"MergedWithPrevious": behMergedWithPrevious, "MergedWithNext": behMergedWithNext, "Contiguous": behContiguous}
	prependSchemes = map[string]prependScheme{"always": prependAlways, "first": prependFirst, "never": prependNever}
)

func parseBehavior(obj map[string]json.RawMessage, def splitBehavior, where string) (splitBehavior, error) {
	var s string
	if err := field(obj, "behavior", &s, where); err != nil {
		return 0, err
	}
	if s == "" {
		return def, nil
	}
	if b, ok := splitBehaviors[s]; ok {
		return b, nil
	}
	return 0, fmt.Errorf("%s: unknown split behavior %q", where, s)
}

func parsePrependScheme(obj map[string]json.RawMessage, where string) (prependScheme, error) {
	var scheme string
	if err := field(obj, "prepend_scheme", &scheme, where); err != nil {
		return 0, err
	}
	addPrefix := true
	if err := field(obj, "add_prefix_space", &addPrefix, where); err != nil {
		return 0, err
	}
	if scheme == "" { // older files: add_prefix_space alone
		scheme = map[bool]string{true: "always", false: "never"}[addPrefix]
	}
	if p, ok := prependSchemes[scheme]; ok {
		return p, nil
	}
	return 0, fmt.Errorf("%s: unknown prepend_scheme %q", where, scheme)
}

func parseReplacement(obj map[string]json.RawMessage, where string) (rune, error) {
	rep := "▁"
	if err := field(obj, "replacement", &rep, where); err != nil {
		return 0, err
	}
	if utf8.RuneCountInString(rep) != 1 {
		return 0, fmt.Errorf("%s: replacement %q must be one character", where, rep)
	}
	r, _ := utf8.DecodeRuneInString(rep)
	return r, nil
}

func parsePreTokenizer(raw json.RawMessage, where string) (preTokenizer, error) {
	return parseComponent(raw, where, "pretokenizers", func(c []preTokenizer) preTokenizer { return seqPreTokenizer(c) }, preTokenizerKind)
}

func preTokenizerKind(typ string, raw json.RawMessage, obj map[string]json.RawMessage, where string) (preTokenizer, error) {
	switch typ {
	case "ByteLevel":
		b := &byteLevelPreTokenizer{addPrefixSpace: true, useRegex: true}
		if err := field(obj, "add_prefix_space", &b.addPrefixSpace, where); err != nil {
			return nil, err
		}
		if err := field(obj, "use_regex", &b.useRegex, where); err != nil {
			return nil, err
		}
		return b, nil
	case "Split":
		lit, re, err := parsePattern(obj, where)
		if err != nil {
			return nil, err
		}
		beh, err := parseBehavior(obj, behIsolated, where)
		if err != nil {
			return nil, err
		}
		sp := &splitPreTokenizer{literal: lit, re: re, behavior: beh}
		if err := field(obj, "invert", &sp.invert, where); err != nil {
			return nil, err
		}
		return sp, nil
	case "Metaspace":
		rep, err := parseReplacement(obj, where)
		if err != nil {
			return nil, err
		}
		scheme, err := parsePrependScheme(obj, where)
		if err != nil {
			return nil, err
		}
		m := &metaspacePreTokenizer{replacement: rep, scheme: scheme, split: true}
		if err := field(obj, "split", &m.split, where); err != nil {
			return nil, err
		}
		return m, nil
	case "Digits":
		var individual bool
		if err := field(obj, "individual_digits", &individual, where); err != nil {
			return nil, err
		}
		beh := behContiguous
		if individual {
			beh = behIsolated
		}
		return &funcPreTokenizer{pred: isRustNumeric, behavior: beh}, nil
	case "Punctuation":
		beh, err := parseBehavior(obj, behIsolated, where)
		if err != nil {
			return nil, err
		}
		return &funcPreTokenizer{pred: isHFPunctuation, behavior: beh}, nil
	case "Whitespace":
		return whitespacePreTokenizer{}, nil
	case "WhitespaceSplit":
		return &funcPreTokenizer{pred: isRustWhitespace, behavior: behRemoved}, nil
	case "BertPreTokenizer":
		return bertPreTokenizer{}, nil
	case "CharDelimiterSplit":
		var d string
		if err := field(obj, "delimiter", &d, where); err != nil {
			return nil, err
		}
		if utf8.RuneCountInString(d) != 1 {
			return nil, fmt.Errorf("%s: delimiter %q must be one character", where, d)
		}
		dr, _ := utf8.DecodeRuneInString(d)
		return &funcPreTokenizer{pred: func(r rune) bool { return r == dr }, behavior: behRemoved}, nil
	case "FixedLength":
		n := 5
		if err := field(obj, "length", &n, where); err != nil {
			return nil, err
		}
		if n <= 0 {
			return nil, fmt.Errorf("%s: length must be positive", where)
		}
		return fixedLengthPreTokenizer{n: n}, nil
	}
	return nil, fmt.Errorf("%s: unsupported pre_tokenizer type %q", where, typ)
}

func parseModel(raw json.RawMessage) (model, error) {
	if isNull(raw) {
		return nil, fmt.Errorf("model: missing")
	}
	typ, obj, err := componentType(raw, "model")
	if err != nil {
		return nil, err
	}
	if typ == "" {
		if _, ok := obj["merges"]; ok {
			typ = "BPE"
		}
	}
	if typ != "BPE" {
		return nil, fmt.Errorf("model: unsupported model type %q (only BPE is implemented)", typ)
	}
	m := &bpeModel{unkID: -1}
	if err := field(obj, "vocab", &m.vocab, "model"); err != nil {
		return nil, err
	}
	if m.vocab == nil {
		return nil, fmt.Errorf("model: missing vocab")
	}
	// Ids index a slice, so they must be dense-ish (this also bounds memory on corrupt files).
	limit := 2*len(m.vocab) + 1<<16
	for tok, id := range m.vocab {
		if id < 0 || id > limit {
			return nil, fmt.Errorf("model.vocab: token %q has id %d out of range for %d tokens", tok, id, len(m.vocab))
		}
	}
	var unk string
	if err := field(obj, "unk_token", &unk, "model"); err != nil {
		return nil, err
	}
	if err := field(obj, "continuing_subword_prefix", &m.prefix, "model"); err != nil {
		return nil, err
	}
	if err := field(obj, "end_of_word_suffix", &m.suffix, "model"); err != nil {
		return nil, err
	}
	if err := field(obj, "fuse_unk", &m.fuseUnk, "model"); err != nil {
		return nil, err
	}
	if err := field(obj, "byte_fallback", &m.byteFallback, "model"); err != nil {
		return nil, err
	}
	if err := field(obj, "ignore_merges", &m.ignoreMerges, "model"); err != nil {
		return nil, err
	}
	if unk != "" {
		if id, ok := m.vocab[unk]; ok {
			m.unkID = id
		}
	}
	merges, err := parseMerges(obj["merges"])
	if err != nil {
		return nil, err
	}
	m.initReverse()
	m.merges = make(map[uint64]mergeInfo, len(merges))
	for rank, mg := range merges {
		a, ok := m.vocab[mg[0]]
		if !ok {
			return nil, fmt.Errorf("model.merges[%d]: token %q not in vocab", rank, mg[0])
		}
		b, ok := m.vocab[mg[1]]
		if !ok {
			return nil, fmt.Errorf("model.merges[%d]: token %q not in vocab", rank, mg[1])
		}
		right := mg[1]
		if m.prefix != "" {
			right = strings.TrimPrefix(right, m.prefix)
		}
		n, ok := m.vocab[mg[0]+right]
		if !ok {
			return nil, fmt.Errorf("model.merges[%d]: merged token %q not in vocab", rank, mg[0]+right)
		}
		m.merges[pairKey(a, b)] = mergeInfo{rank: int32(rank), newID: int32(n)}
	}
	return m, nil
}

// parseMerges accepts [["a","b"], ...] and the legacy ["a b", ...].
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if isNull(raw) {
		return nil, fmt.Errorf("model: missing merges")
	}
	var pairs [][2]string
	if err := json.Unmarshal(raw, &pairs); err == nil {
		return pairs, nil
	}
	var lines []string
	if err := json.Unmarshal(raw, &lines); err != nil {
		return nil, fmt.Errorf("model.merges: %w", err)
	}
	pairs = make([][2]string, 0, len(lines))
	rank := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "#version") {
			continue
		}
		parts := strings.Split(l, " ")
		if len(parts) != 2 {
			return nil, fmt.Errorf("model.merges[%d]: %q is not two space-separated tokens", rank, l)
		}
		pairs = append(pairs, [2]string{parts[0], parts[1]})
		rank++
	}
	return pairs, nil
}

func parseDecoder(raw json.RawMessage, where string) (decoder, error) {
	return parseComponent(raw, where, "decoders", func(c []decoder) decoder { return seqDecoder(c) }, decoderKind)
}

func decoderKind(typ string, raw json.RawMessage, obj map[string]json.RawMessage, where string) (decoder, error) {
	switch typ {
	case "Replace":
		r, err := parseReplace(obj, where)
		if err != nil {
			return nil, err
		}
		return replaceDecoder{r}, nil
	case "ByteFallback":
		return byteFallbackDecoder{}, nil
	case "Fuse":
		return fuseDecoder{}, nil
	case "Strip":
		var s struct {
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if utf8.RuneCountInString(s.Content) != 1 {
			return nil, fmt.Errorf("%s: content %q must be one character", where, s.Content)
		}
		r, _ := utf8.DecodeRuneInString(s.Content)
		return stripDecoder{content: r, start: s.Start, stop: s.Stop}, nil
	case "Metaspace":
		rep, err := parseReplacement(obj, where)
		if err != nil {
			return nil, err
		}
		scheme, err := parsePrependScheme(obj, where)
		if err != nil {
			return nil, err
		}
		return metaspaceDecoder{replacement: rep, scheme: scheme}, nil
	case "ByteLevel":
		return byteLevelDecoder{}, nil
	case "BPEDecoder":
		suffix := "</w>"
		if err := field(obj, "suffix", &suffix, where); err != nil {
			return nil, err
		}
		return bpeDecoder{suffix: suffix}, nil
	}
	return nil, fmt.Errorf("%s: unsupported decoder type %q", where, typ)
}

func parsePostProcessor(raw json.RawMessage, where string) (postProcessor, error) {
	return parseComponent(raw, where, "processors", func(c []postProcessor) postProcessor { return seqPostProcessor(c) }, postProcessorKind)
}

func postProcessorKind(typ string, raw json.RawMessage, obj map[string]json.RawMessage, where string) (postProcessor, error) {
	switch typ {
	case "ByteLevel":
		return passProcessor{}, nil
	case "TemplateProcessing":
		return parseTemplate(obj, where)
	case "BertProcessing", "RobertaProcessing":
		var sep, cls [2]json.RawMessage
		if err := field(obj, "sep", &sep, where); err != nil {
			return nil, err
		}
		if err := field(obj, "cls", &cls, where); err != nil {
			return nil, err
		}
		var sepID, clsID int
		if err := json.Unmarshal(sep[1], &sepID); err != nil {
			return nil, fmt.Errorf("%s.sep: %w", where, err)
		}
		if err := json.Unmarshal(cls[1], &clsID); err != nil {
			return nil, fmt.Errorf("%s.cls: %w", where, err)
		}
		return wrapProcessor{first: clsID, last: sepID}, nil
	}
	return nil, fmt.Errorf("%s: unsupported post_processor type %q", where, typ)
}

func parseTemplate(obj map[string]json.RawMessage, where string) (postProcessor, error) {
	var specials map[string]struct {
		ID  string `json:"id"`
		IDs []int  `json:"ids"`
	}
	if err := field(obj, "special_tokens", &specials, where); err != nil {
		return nil, err
	}
	var structured []map[string]struct {
		ID string `json:"id"`
	}
	if err := field(obj, "single", &structured, where); err != nil {
		return nil, err
	}
	tp := &templateProcessor{}
	addSpecial := func(name string) error {
		sp, ok := specials[name]
		if !ok {
			return fmt.Errorf("%s.single: special token %q missing from special_tokens", where, name)
		}
		tp.single = append(tp.single, templatePiece{special: sp.IDs})
		return nil
	}
	for _, p := range structured {
		if _, ok := p["Sequence"]; ok {
			tp.single = append(tp.single, templatePiece{isSeq: true})
			continue
		}
		s, ok := p["SpecialToken"]
		if !ok {
			return nil, fmt.Errorf("%s.single: unknown template piece", where)
		}
		if err := addSpecial(s.ID); err != nil {
			return nil, err
		}
	}
	return tp, nil
}
