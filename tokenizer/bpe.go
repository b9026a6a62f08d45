package tokenizer

import (
	"sync"
	"unicode/utf8"
)

// bpeModel is HF's BPE model (without dropout, which is a training-time feature).
type bpeModel struct {
	vocab        map[string]int
	vocabR       []string // id → token; "" where unused
	hasID        []bool
	merges       map[uint64]mergeInfo // (left id, right id) → rank and result
	unkID        int                  // -1: no unk token
	prefix       string               // continuing_subword_prefix
	suffix       string               // end_of_word_suffix
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	byteIDs      [256]int // id of "<0xNN>", -1 if missing
	hasAllBytes  bool

	cache wordCache
}

type mergeInfo struct {
	rank  int32
	newID int32
}

func pairKey(a, b int) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func (m *bpeModel) tokenToID(tok string) (int, bool) {
	id, ok := m.vocab[tok]
	return id, ok
}

func (m *bpeModel) idToToken(id int) (string, bool) {
	if id < 0 || id >= len(m.vocabR) || !m.hasID[id] {
		return "", false
	}
	return m.vocabR[id], true
}

func (m *bpeModel) maxID() int { return len(m.vocabR) - 1 }

func (m *bpeModel) size() int { return len(m.vocab) }

func (m *bpeModel) initReverse() {
	maxID := -1
	for _, id := range m.vocab {
		if id > maxID {
			maxID = id
		}
	}
	m.vocabR = make([]string, maxID+1)
	m.hasID = make([]bool, maxID+1)
	for tok, id := range m.vocab {
		m.vocabR[id] = tok
		m.hasID[id] = true
	}
	m.hasAllBytes = true
	for b := 0; b < 256; b++ {
		id, ok := m.vocab[byteTokenName(byte(b))]
		if !ok {
			id = -1
			m.hasAllBytes = false
		}
		m.byteIDs[b] = id
	}
}

func byteTokenName(b byte) string {
	const hex = "0123456789ABCDEF"
	return string([]byte{'<', '0', 'x', hex[b>>4], hex[b&15], '>'})
}

func (m *bpeModel) tokenize(dst []int, word string) []int {
	if word == "" {
		return dst
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[word]; ok {
			return append(dst, id)
		}
	}
	if ids, ok := m.cache.get(word); ok {
		return append(dst, ids...)
	}
	ids := m.mergeWord(word)
	if len(word) < 256 {
		m.cache.put(word, ids)
	}
	return append(dst, ids...)
}

type bpeSymbol struct {
	c          int32
	prev, next int32
	len        int32 // bytes; 0 once merged away
}

// mergeWord is HF's BPE::merge_word followed by Word::merge_all.
func (m *bpeModel) mergeWord(w string) []int {
	syms := make([]bpeSymbol, 0, len(w))
	add := func(c, n int) {
		prev := int32(len(syms)) - 1
		if prev >= 0 {
			syms[prev].next = int32(len(syms))
		}
		syms = append(syms, bpeSymbol{c: int32(c), prev: prev, next: -1, len: int32(n)})
	}
	unkID, unkLen := -1, 0
	for i := 0; i < len(w); {
		_, size := utf8.DecodeRuneInString(w[i:])
		s := w[i : i+size]
		isFirst, isLast := i == 0, i+size == len(w)
		key := s
		if !isFirst && m.prefix != "" {
			key = m.prefix + key
		}
		if isLast && m.suffix != "" {
			key += m.suffix
		}
		i += size
		if id, ok := m.vocab[key]; ok {
			if unkID >= 0 {
				add(unkID, unkLen)
				unkID = -1
			}
			add(id, size)
			continue
		}
		if m.byteFallback {
			all := true
			for j := 0; j < len(key); j++ {
				if m.byteIDs[key[j]] < 0 {
					all = false
					break
				}
			}
			if all {
				for j := 0; j < len(key); j++ {
					add(m.byteIDs[key[j]], 1)
				}
				continue
			}
		}
		if m.unkID >= 0 {
			if unkID >= 0 && m.fuseUnk {
				unkLen += size
			} else {
				if unkID >= 0 {
					add(unkID, unkLen)
				}
				unkID, unkLen = m.unkID, size
			}
		}
	}
	if unkID >= 0 {
		add(unkID, unkLen)
	}
	m.mergeAll(syms)
	out := make([]int, 0, len(syms))
	for _, s := range syms {
		if s.len != 0 {
			out = append(out, int(s.c))
		}
	}
	return out
}

type mergeCand struct {
	pos   int32
	rank  int32
	newID int32
}

// mergeBefore orders merge candidates by (rank, pos), the order of HF's Word::merge_all queue.
func mergeBefore(a, b mergeCand) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.pos < b.pos
}

func (m *bpeModel) mergeAll(syms []bpeSymbol) {
	if len(syms) < 2 {
		return
	}
	h := &priorityQueue[mergeCand]{items: make([]mergeCand, 0, len(syms)), before: mergeBefore}
	for i := 0; i+1 < len(syms); i++ {
		if mi, ok := m.merges[pairKey(int(syms[i].c), int(syms[i+1].c))]; ok {
			h.push(mergeCand{pos: int32(i), rank: mi.rank, newID: mi.newID})
		}
	}
	for h.len() > 0 {
		top := h.pop()
		cur := &syms[top.pos]
		if cur.len == 0 || cur.next == -1 {
			continue
		}
		nextPos := cur.next
		right := syms[nextPos]
		mi, ok := m.merges[pairKey(int(cur.c), int(right.c))]
		if !ok || mi.newID != top.newID {
			continue
		}
		cur.c = top.newID
		cur.len += right.len
		cur.next = right.next
		syms[nextPos].len = 0
		if right.next > -1 && int(right.next) < len(syms) {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			prev := syms[cur.prev]
			if mi, ok := m.merges[pairKey(int(prev.c), int(cur.c))]; ok {
				h.push(mergeCand{pos: cur.prev, rank: mi.rank, newID: mi.newID})
			}
		}
		if cur.next >= 0 && int(cur.next) < len(syms) {
			next := syms[cur.next]
			if mi, ok := m.merges[pairKey(int(cur.c), int(next.c))]; ok {
				h.push(mergeCand{pos: top.pos, rank: mi.rank, newID: mi.newID})
			}
		}
	}
}

// wordCache remembers the ids of short words; like HF it stops growing when full.
type wordCache struct {
	mu sync.RWMutex
	m  map[string][]int
}

const wordCacheCapacity = 10000

func (c *wordCache) get(w string) ([]int, bool) {
	c.mu.RLock()
	ids, ok := c.m[w]
	c.mu.RUnlock()
	return ids, ok
}

func (c *wordCache) put(w string, ids []int) {
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string][]int)
	}
	if len(c.m) < wordCacheCapacity {
		c.m[w] = ids
	}
	c.mu.Unlock()
}
