package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// HFFilesFromGGUF builds a Hugging Face tokenizer.json and tokenizer_config.json that tokenize like
// FromGGUF(path). Only the token ids are promised; offsets and truncation are not part of the contract.
//
// "llama" (SentencePiece BPE) vocabularies become a BPE model with byte fallback whose merges are derived from
// the scores the way transformers' LlamaConverter (SentencePieceExtractor) does: every split of a piece into two
// vocabulary pieces is a merge, ranked by the piece's score (highest first), ties kept in id order. Applying the
// lowest-ranked merge first is then SentencePiece's "merge the highest-scoring pair"; pieces SentencePiece never
// produces by merging (control, unknown, byte tokens) get no merges. The two agree whenever scores of different
// pieces differ, which holds for real SentencePiece vocabularies (SentencePiece breaks ties by position, BPE by
// rank). "gpt2" (byte-level BPE) vocabularies carry their merges and map directly.
func HFFilesFromGGUF(path string) (tokenizerJSON, tokenizerConfig []byte, err error) {
	md, err := readGGUFMetadata(path)
	if err != nil {
		return nil, nil, err
	}
	modelName, err := md.str("tokenizer.ggml.model")
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	tokens, err := md.strs("tokenizer.ggml.tokens")
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	types, err := md.ints("tokenizer.ggml.token_type", len(tokens))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	first := make(map[string]int, len(tokens))
	for id, tok := range tokens {
		if prev, dup := first[tok]; dup {
			return nil, nil, fmt.Errorf("%s: tokenizer.ggml.tokens: %q appears at ids %d and %d; tokenizer.json cannot hold a token twice", path, tok, prev, id)
		}
		first[tok] = id
	}
	tid := func(key string) int {
		if id, ok := md.optInt(key); ok && id >= 0 && id < len(tokens) {
			return id
		}
		return -1
	}
	bos, eos, unk := tid("tokenizer.ggml.bos_token_id"), tid("tokenizer.ggml.eos_token_id"), tid("tokenizer.ggml.unknown_token_id")

	var tj jsonTokenizerOut
	tj.Version = "1.0"
	for _, a := range addedFromTypes(tokens, types) {
		tj.AddedTokens = append(tj.AddedTokens, a) // normalized=false: matched in the raw text, as FromGGUF does
	}
	var addBOS, addEOS bool
	switch modelName {
	case "llama":
		addBOS = md.optBool("tokenizer.ggml.add_bos_token", true)
		addEOS = md.optBool("tokenizer.ggml.add_eos_token", false)
		scores, err := md.floats("tokenizer.ggml.scores", len(tokens))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		replace := obj{"type": "Replace", "pattern": obj{"String": " "}, "content": "▁"}
		decoders := []any{
			obj{"type": "Replace", "pattern": obj{"String": "▁"}, "content": " "},
			obj{"type": "ByteFallback"},
			obj{"type": "Fuse"},
		}
		if md.optBool("tokenizer.ggml.add_space_prefix", true) {
			tj.Normalizer = obj{"type": "Sequence", "normalizers": []any{obj{"type": "Prepend", "prepend": "▁"}, replace}}
			decoders = append(decoders, obj{"type": "Strip", "content": " ", "start": 1, "stop": 0})
		} else {
			tj.Normalizer = replace
		}
		tj.Decoder = obj{"type": "Sequence", "decoders": decoders}
		var unkTok any
		if unk >= 0 {
			unkTok = tokens[unk]
		}
		tj.Model = bpeOut{Type: "BPE", UnkToken: unkTok, FuseUnk: true, ByteFallback: true,
			Vocab: orderedVocab(tokens), Merges: spmMerges(tokens, scores, types)}
	case "gpt2":
		addBOS = md.optBool("tokenizer.ggml.add_bos_token", false)
		addEOS = md.optBool("tokenizer.ggml.add_eos_token", false)
		pre := "default"
		if p, err := md.str("tokenizer.ggml.pre"); err == nil {
			pre = p
		}
		pattern, ok := ggufPrePatterns[pre]
		if !ok {
			return nil, nil, fmt.Errorf("%s: tokenizer.ggml.pre %q is not supported", path, pre)
		}
		lines, err := md.strs("tokenizer.ggml.merges")
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		merges := make([][2]string, len(lines))
		for i, line := range lines {
			a, b, ok := strings.Cut(line, " ")
			if !ok {
				return nil, nil, fmt.Errorf("%s: tokenizer.ggml.merges[%d]: %q is not two space-separated tokens", path, i, line)
			}
			merges[i] = [2]string{a, b}
		}
		if pre == "default" || pre == "gpt2" || pre == "gpt-2" {
			tj.PreTokenizer = obj{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
		} else {
			tj.PreTokenizer = obj{"type": "Sequence", "pretokenizers": []any{
				obj{"type": "Split", "pattern": obj{"Regex": pattern}, "behavior": "Isolated", "invert": false},
				obj{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
			}}
		}
		tj.Decoder = obj{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}
		tj.Model = bpeOut{Type: "BPE", IgnoreMerges: pre == "llama-bpe" || pre == "llama3",
			Vocab: orderedVocab(tokens), Merges: merges}
	default:
		return nil, nil, fmt.Errorf("%s: tokenizer.ggml.model %q is not supported (only \"llama\" and \"gpt2\")", path, modelName)
	}
	tj.PostProcessor = templateOut(tokens, bos, eos, addBOS, addEOS)

	cfg := map[string]any{
		"tokenizer_class":              "PreTrainedTokenizerFast",
		"add_bos_token":                addBOS,
		"add_eos_token":                addEOS,
		"clean_up_tokenization_spaces": false,
	}
	for key, id := range map[string]int{"bos_token": bos, "eos_token": eos, "unk_token": unk} {
		if id >= 0 {
			cfg[key] = tokens[id]
		}
	}
	if tmpl, err := md.str("tokenizer.chat_template"); err == nil {
		cfg["chat_template"] = tmpl
	}
	if tokenizerJSON, err = marshalNoEscape(tj); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if tokenizerConfig, err = marshalIndentNoEscape(cfg); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return tokenizerJSON, tokenizerConfig, nil
}

// WriteHFFromGGUF writes tokenizer.json and tokenizer_config.json for the GGUF's vocabulary into dir.
func WriteHFFromGGUF(ggufPath, dir string) error {
	tj, tc, err := HFFilesFromGGUF(ggufPath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := fileio.WriteFile(filepath.Join(dir, "tokenizer.json"), append(tj, '\n')); err != nil {
		return err
	}
	return fileio.WriteFile(filepath.Join(dir, "tokenizer_config.json"), append(tc, '\n'))
}

// spmMerges derives BPE merges from SentencePiece scores (see HFFilesFromGGUF).
func spmMerges(tokens []string, scores []float32, types []int) [][2]string {
	vocab := make(map[string]int, len(tokens))
	for id, tok := range tokens {
		vocab[tok] = id
	}
	type merge struct {
		left, right string
		score       float32
	}
	var all []merge
	for id, piece := range tokens {
		switch types[id] {
		case spmNormal, spmUserDefined, spmUnused, 0: // what SentencePiece may produce by merging
		default:
			continue
		}
		runes := []rune(piece)
		var local []merge
		for i := 1; i < len(runes); i++ {
			l, r := string(runes[:i]), string(runes[i:])
			if _, ok := vocab[l]; !ok {
				continue
			}
			if _, ok := vocab[r]; !ok {
				continue
			}
			local = append(local, merge{l, r, scores[id]})
		}
		slices.SortStableFunc(local, func(a, b merge) int {
			if c := vocab[a.left] - vocab[b.left]; c != 0 {
				return c
			}
			return vocab[a.right] - vocab[b.right]
		})
		all = append(all, local...)
	}
	slices.SortStableFunc(all, func(a, b merge) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0
	})
	out := make([][2]string, len(all))
	for i, m := range all {
		out[i] = [2]string{m.left, m.right}
	}
	return out
}

// templateOut is a TemplateProcessing post-processor adding BOS/EOS as FromGGUF does.
func templateOut(tokens []string, bos, eos int, addBOS, addEOS bool) obj {
	special := obj{}
	piece := func(id, typeID int) obj {
		special[tokens[id]] = obj{"id": tokens[id], "ids": []int{id}, "tokens": []string{tokens[id]}}
		return obj{"SpecialToken": obj{"id": tokens[id], "type_id": typeID}}
	}
	var single, pair []any
	for typeID, seq := range []string{"A", "B"} {
		var part []any
		if addBOS && bos >= 0 {
			part = append(part, piece(bos, typeID))
		}
		part = append(part, obj{"Sequence": obj{"id": seq, "type_id": typeID}})
		if addEOS && eos >= 0 {
			part = append(part, piece(eos, typeID))
		}
		if typeID == 0 {
			single = part
		}
		pair = append(pair, part...)
	}
	return obj{"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special}
}

// obj is a JSON object; encoding/json writes its keys sorted, which keeps the files stable.
type obj = map[string]any

// jsonTokenizerOut is the tokenizer.json layout, in HF's key order.
type jsonTokenizerOut struct {
	Version       string       `json:"version"`
	Truncation    any          `json:"truncation"`
	Padding       any          `json:"padding"`
	AddedTokens   []addedToken `json:"added_tokens"`
	Normalizer    any          `json:"normalizer"`
	PreTokenizer  any          `json:"pre_tokenizer"`
	PostProcessor any          `json:"post_processor"`
	Decoder       any          `json:"decoder"`
	Model         bpeOut       `json:"model"`
}

type bpeOut struct {
	Type                    string       `json:"type"`
	Dropout                 any          `json:"dropout"`
	UnkToken                any          `json:"unk_token"`
	ContinuingSubwordPrefix any          `json:"continuing_subword_prefix"`
	EndOfWordSuffix         any          `json:"end_of_word_suffix"`
	FuseUnk                 bool         `json:"fuse_unk"`
	ByteFallback            bool         `json:"byte_fallback"`
	IgnoreMerges            bool         `json:"ignore_merges"`
	Vocab                   orderedVocab `json:"vocab"`
	Merges                  [][2]string  `json:"merges"`
}

// orderedVocab marshals as a JSON object token → id in id order (tokens are unique).
type orderedVocab []string

func (v orderedVocab) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for id, tok := range v {
		if id > 0 {
			b.WriteByte(',')
		}
		k, err := marshalNoEscape(tok)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		fmt.Fprintf(&b, ":%d", id)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// marshalNoEscape is json.Marshal without HTML escaping, so "<s>" stays readable.
func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func marshalIndentNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
