package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// addedToken is one entry of tokenizer.json's "added_tokens".
type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// addedVocab mirrors HF's AddedVocabulary: tokens matched in the raw text (normalized=false)
// or in the normalized text (normalized=true), leftmost-longest.
type addedVocab struct {
	byContent  map[string]int
	byID       map[int]*addedToken
	normCache  map[int]string // normalized form of normalized=true tokens, when it differs
	special    map[string]bool
	rawTrie    *trie
	normTrie   *trie
	maxAddedID int
}

func newAddedVocab() *addedVocab {
	return &addedVocab{
		byContent:  map[string]int{},
		byID:       map[int]*addedToken{},
		normCache:  map[int]string{},
		special:    map[string]bool{},
		maxAddedID: -1,
	}
}

// add registers tokens the way HF's Tokenizer deserialization does: the id comes from the
// existing vocabulary when the content is known, else from the next free id.
func (av *addedVocab) add(tokens []addedToken, m model, norm normalizer) {
	// HF: the next free id is the model's vocabulary size, or one past the highest added id
	// when that is already beyond it.
	nextID := m.size()
	if av.maxAddedID >= 0 && (av.maxAddedID >= m.size() || m.size() == 0) {
		nextID = av.maxAddedID + 1
	}
	for i := range tokens {
		tok := tokens[i]
		if tok.Content == "" {
			continue
		}
		id, ok := av.byContent[tok.Content]
		if !ok {
			id, ok = m.tokenToID(tok.Content)
		}
		if !ok {
			id = nextID
			nextID++
		}
		if tok.Normalized && norm != nil {
			if n, _ := norm.normalize(tok.Content); n != tok.Content {
				av.normCache[id] = n
			}
		}
		av.byContent[tok.Content] = id
		if tok.Special {
			av.special[tok.Content] = true
		}
		tt := tok
		tt.ID = id
		av.byID[id] = &tt
		if id > av.maxAddedID {
			av.maxAddedID = id
		}
	}
	av.rawTrie, av.normTrie = &trie{}, &trie{}
	for id, tok := range av.byID {
		if tok.Normalized {
			pat := tok.Content
			if n, ok := av.normCache[id]; ok {
				pat = n
			}
			av.normTrie.insert(pat, id)
		} else {
			av.rawTrie.insert(tok.Content, id)
		}
	}
}

func (av *addedVocab) maxID() int { return av.maxAddedID }

func (av *addedVocab) idToToken(id int) (string, bool) {
	tok, ok := av.byID[id]
	if !ok {
		return "", false
	}
	if n, ok := av.normCache[id]; ok {
		return n, true
	}
	return tok.Content, true
}

func (av *addedVocab) isSpecial(content string) bool { return av.special[content] }

// extract splits text into added tokens and normalized pieces (HF's extract_and_normalize).
func (av *addedVocab) extract(text string, norm normalizer) []piece {
	var out []piece
	for _, p := range av.split(text, true, av.rawTrie) {
		if p.id >= 0 {
			out = append(out, p)
			continue
		}
		s, atStart := p.s, p.atStart
		if norm != nil {
			var dropped bool
			s, dropped = norm.normalize(s)
			atStart = atStart && !dropped
		}
		out = append(out, av.split(s, atStart, av.normTrie)...)
	}
	return out
}

// split finds the added tokens of t in s (HF's find_matches) and returns the non-empty pieces.
func (av *addedVocab) split(s string, atStart bool, t *trie) []piece {
	if s == "" {
		return nil
	}
	if t == nil || t.empty() {
		return []piece{{s: s, atStart: atStart, id: -1}}
	}
	var out []piece
	emit := func(start, end, id int) {
		if start < end {
			out = append(out, piece{s: s[start:end], atStart: atStart && start == 0, id: id})
		}
	}
	startOffset := 0
	pos := 0
	for pos < len(s) {
		mStart, mEnd, id := t.leftmostLongest(s, pos)
		if mStart < 0 {
			break
		}
		pos = mEnd
		tok := av.byID[id]
		start, stop := mStart, mEnd
		if tok.SingleWord {
			startSpace := start == 0 || !endsWithWord(s[:start])
			stopSpace := stop == len(s) || !startsWithWord(s[stop:])
			if !startSpace || !stopSpace {
				continue
			}
		}
		if tok.LStrip {
			ns := spaceLeftmostAtEnd(s[:start])
			if ns < startOffset {
				ns = startOffset
			}
			start = ns
		}
		if tok.RStrip {
			stop += spaceRightmostAtStart(s[stop:])
		}
		emit(startOffset, start, -1)
		emit(start, stop, id)
		startOffset = stop
	}
	emit(startOffset, len(s), -1)
	return out
}

// Word and space tests of HF's added_vocabulary.rs (Rust regex: Unicode \w and \s).
func isRustWord(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.Is(unicode.Nd, r) ||
		unicode.Is(unicode.Pc, r) || unicode.Is(unicode.Nl, r) || unicode.Is(unicode.Other_Alphabetic, r) ||
		r == 0x200C || r == 0x200D
}

func endsWithWord(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return s != "" && isRustWord(r)
}

func startsWithWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return s != "" && isRustWord(r)
}

// spaceLeftmostAtEnd is the start of the trailing whitespace run of s.
func spaceLeftmostAtEnd(s string) int {
	i := len(s)
	for i > 0 {
		r, w := utf8.DecodeLastRuneInString(s[:i])
		if !unicode.IsSpace(r) {
			break
		}
		i -= w
	}
	return i
}

// spaceRightmostAtStart is the length of the leading whitespace run of s.
func spaceRightmostAtStart(s string) int {
	i := 0
	for i < len(s) {
		r, w := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			break
		}
		i += w
	}
	return i
}

// trie is a byte trie for leftmost-longest matching of added tokens.
type trie struct {
	nodes []trieNode
	first [256]bool
}

type trieNode struct {
	next map[byte]int32
	id   int // -1: not a token end
}

func (t *trie) empty() bool { return len(t.nodes) <= 1 }

func (t *trie) insert(s string, id int) {
	if s == "" {
		return
	}
	if len(t.nodes) == 0 {
		t.nodes = append(t.nodes, trieNode{id: -1})
	}
	t.first[s[0]] = true
	cur := int32(0)
	for i := 0; i < len(s); i++ {
		n := &t.nodes[cur]
		if n.next == nil {
			n.next = map[byte]int32{}
		}
		nx, ok := n.next[s[i]]
		if !ok {
			nx = int32(len(t.nodes))
			t.nodes[cur].next[s[i]] = nx
			t.nodes = append(t.nodes, trieNode{id: -1})
		}
		cur = nx
	}
	t.nodes[cur].id = id
}

// leftmostLongest returns the earliest match at or after from, the longest one among those
// starting there; start = -1 if none.
func (t *trie) leftmostLongest(s string, from int) (start, end, id int) {
	for i := from; i < len(s); i++ {
		if !t.first[s[i]] {
			continue
		}
		cur := int32(0)
		bestEnd, bestID := -1, -1
		for j := i; j < len(s); j++ {
			nx, ok := t.nodes[cur].next[s[j]]
			if !ok {
				break
			}
			cur = nx
			if t.nodes[cur].id >= 0 {
				bestEnd, bestID = j+1, t.nodes[cur].id
			}
		}
		if bestEnd >= 0 {
			return i, bestEnd, bestID
		}
	}
	return -1, -1, -1
}
