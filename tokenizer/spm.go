package tokenizer

import "unicode/utf8"

// spmModel is SentencePiece's BPE (as llama.cpp runs it for GGUF "llama" vocabularies):
// repeatedly merge the adjacent pair whose concatenation is a vocabulary piece with the highest
// score (leftmost on ties); pieces left outside the vocabulary fall back to <0xNN> byte tokens.
type spmModel struct {
	vocab     map[string]int
	tokens    []string
	scores    []float32
	mergeable []bool // piece may be produced by a merge (normal, user-defined, unused)
	unkID     int
	byteIDs   [256]int
	cache     wordCache
}

// SentencePiece token types, as stored in tokenizer.ggml.token_type.
const (
	spmNormal      = 1
	spmUnknown     = 2
	spmControl     = 3
	spmUserDefined = 4
	spmUnused      = 5
	spmByte        = 6
)

func (m *spmModel) tokenToID(tok string) (int, bool) {
	id, ok := m.vocab[tok]
	return id, ok
}

func (m *spmModel) idToToken(id int) (string, bool) {
	if id < 0 || id >= len(m.tokens) {
		return "", false
	}
	return m.tokens[id], true
}

func (m *spmModel) maxID() int { return len(m.tokens) - 1 }

func (m *spmModel) size() int { return len(m.tokens) }

func (m *spmModel) tokenize(dst []int, word string) []int {
	if word == "" {
		return dst
	}
	if ids, ok := m.cache.get(word); ok {
		return append(dst, ids...)
	}
	ids := m.encode(word)
	if len(word) < 256 {
		m.cache.put(word, ids)
	}
	return append(dst, ids...)
}

type spmSymbol struct {
	start, end int // byte range in the word
	prev, next int
}

type spmCand struct {
	left, right int
	score       float32
	size        int // byte length of the merged text, to detect stale entries
}

// spmBefore orders candidates by highest score first, then smallest left index.
func spmBefore(a, b spmCand) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.left < b.left
}

func (m *spmModel) encode(w string) []int {
	syms := make([]spmSymbol, 0, len(w))
	for i := 0; i < len(w); {
		_, size := utf8.DecodeRuneInString(w[i:])
		syms = append(syms, spmSymbol{start: i, end: i + size, prev: len(syms) - 1, next: len(syms) + 1})
		i += size
	}
	syms[len(syms)-1].next = -1
	h := &priorityQueue[spmCand]{items: make([]spmCand, 0, len(syms)), before: spmBefore}
	tryAdd := func(left, right int) {
		if left < 0 || right < 0 {
			return
		}
		text := w[syms[left].start:syms[right].end]
		id, ok := m.vocab[text]
		if !ok || !m.mergeable[id] {
			return
		}
		h.push(spmCand{left: left, right: right, score: m.scores[id], size: len(text)})
	}
	for i := 1; i < len(syms); i++ {
		tryAdd(i-1, i)
	}
	for h.len() > 0 {
		c := h.pop()
		l, r := &syms[c.left], &syms[c.right]
		// Skip pairs whose symbols were merged since the pair was queued.
		if l.end == l.start || r.end == r.start || l.next != c.right || (r.end-l.start) != c.size {
			continue
		}
		l.end = r.end
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = c.left
		}
		r.start, r.end = 0, 0
		tryAdd(l.prev, c.left)
		tryAdd(c.left, l.next)
	}
	var out []int
	for i := 0; i >= 0 && i < len(syms); i = syms[i].next {
		s := syms[i]
		text := w[s.start:s.end]
		if id, ok := m.vocab[text]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(text); j++ {
			if id := m.byteIDs[text[j]]; id >= 0 {
				out = append(out, id)
			} else if m.unkID >= 0 {
				out = append(out, m.unkID)
			}
		}
	}
	return out
}
