package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// preTokenizer splits the pieces that are not added tokens into words.
type preTokenizer interface {
	preTokenize(ps []piece) []piece
}

// splitBehavior is HF's SplitDelimiterBehavior.
type splitBehavior int

const (
	behRemoved splitBehavior = iota
	behIsolated
	behMergedWithPrevious
	behMergedWithNext
	behContiguous
)

// splitPieces applies f to every non-token piece and keeps the non-empty results.
func splitPieces(ps []piece, f func(p piece) []piece) []piece {
	out := make([]piece, 0, len(ps))
	for _, p := range ps {
		if p.id >= 0 {
			out = append(out, p)
			continue
		}
		for _, q := range f(p) {
			if q.s != "" {
				out = append(out, q)
			}
		}
	}
	return out
}

// splitByMatches is HF's NormalizedString::split given the match spans of a pattern.
func splitByMatches(p piece, matches []span, beh splitBehavior, invert bool) []piece {
	if invert {
		for i := range matches {
			matches[i].match = !matches[i].match
		}
	}
	type part struct {
		start, end int
		remove     bool
	}
	var parts []part
	switch beh {
	case behIsolated:
		for _, m := range matches {
			parts = append(parts, part{m.start, m.end, false})
		}
	case behRemoved:
		for _, m := range matches {
			parts = append(parts, part{m.start, m.end, m.match})
		}
	case behContiguous:
		prev := false
		for _, m := range matches {
			if m.match == prev && len(parts) > 0 {
				parts[len(parts)-1].end = m.end
			} else {
				parts = append(parts, part{m.start, m.end, false})
			}
			prev = m.match
		}
	case behMergedWithPrevious:
		prev := false
		for _, m := range matches {
			if m.match && !prev && len(parts) > 0 {
				parts[len(parts)-1].end = m.end
			} else {
				parts = append(parts, part{m.start, m.end, false})
			}
			prev = m.match
		}
	case behMergedWithNext:
		prev := false
		for i := len(matches) - 1; i >= 0; i-- {
			m := matches[i]
			if m.match && !prev && len(parts) > 0 {
				parts[len(parts)-1].start = m.start
			} else {
				parts = append(parts, part{m.start, m.end, false})
			}
			prev = m.match
		}
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	out := make([]piece, 0, len(parts))
	for _, pt := range parts {
		if pt.remove {
			continue
		}
		out = append(out, piece{s: p.s[pt.start:pt.end], atStart: p.atStart && pt.start == 0, id: -1})
	}
	return out
}

type seqPreTokenizer []preTokenizer

func (q seqPreTokenizer) preTokenize(ps []piece) []piece {
	for _, pt := range q {
		ps = pt.preTokenize(ps)
	}
	return ps
}

// splitPreTokenizer is HF's Split with a String or Regex pattern.
type splitPreTokenizer struct {
	literal  string // String pattern
	re       *regex // Regex pattern (or empty String pattern)
	behavior splitBehavior
	invert   bool
}

func (sp *splitPreTokenizer) preTokenize(ps []piece) []piece {
	return splitPieces(ps, func(p piece) []piece {
		var m []span
		if sp.literal != "" {
			m = findLiteral(p.s, sp.literal)
		} else {
			m = findMatches(sp.re, p.s)
		}
		return splitByMatches(p, m, sp.behavior, sp.invert)
	})
}

// gpt2Pattern is the split regex of HF's ByteLevel pre-tokenizer.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

var gpt2Regex = mustCompile(gpt2Pattern)

func mustCompile(p string) *regex {
	re, err := compileRegex(p)
	if err != nil {
		panic(err) // only for patterns fixed in this package
	}
	return re
}

type byteLevelPreTokenizer struct {
	addPrefixSpace bool
	useRegex       bool
}

func (b *byteLevelPreTokenizer) preTokenize(ps []piece) []piece {
	ps = splitPieces(ps, func(p piece) []piece {
		if b.addPrefixSpace && !strings.HasPrefix(p.s, " ") {
			p.s = " " + p.s
		}
		if !b.useRegex {
			return []piece{p}
		}
		return splitByMatches(p, findMatches(gpt2Regex, p.s), behIsolated, false)
	})
	for i := range ps {
		if ps[i].id < 0 {
			ps[i].s = byteLevelEncode(ps[i].s)
		}
	}
	return ps
}

type prependScheme int

const (
	prependAlways prependScheme = iota
	prependFirst
	prependNever
)

type metaspacePreTokenizer struct {
	replacement rune
	scheme      prependScheme
	split       bool
}

func (m *metaspacePreTokenizer) preTokenize(ps []piece) []piece {
	rep := string(m.replacement)
	return splitPieces(ps, func(p piece) []piece {
		p.s = strings.ReplaceAll(p.s, " ", rep)
		switch m.scheme {
		case prependAlways:
			if !strings.HasPrefix(p.s, rep) {
				p.s = rep + p.s
			}
		case prependFirst:
			if !strings.HasPrefix(p.s, rep) && p.atStart {
				p.s = rep + p.s
			}
		}
		if !m.split {
			return []piece{p}
		}
		return splitByMatches(p, findMatchesFunc(p.s, func(r rune) bool { return r == m.replacement }),
			behMergedWithNext, false)
	})
}

// funcPreTokenizer splits on a character predicate (Digits, Punctuation, WhitespaceSplit, ...).
type funcPreTokenizer struct {
	pred     func(rune) bool
	behavior splitBehavior
}

func (f *funcPreTokenizer) preTokenize(ps []piece) []piece {
	return splitPieces(ps, func(p piece) []piece {
		return splitByMatches(p, findMatchesFunc(p.s, f.pred), f.behavior, false)
	})
}

// Rust's char::is_numeric: general categories Nd, Nl, No.
func isRustNumeric(r rune) bool { return unicode.IsNumber(r) }

// HF's is_punc: ASCII punctuation (incl. symbols like $+<=>^`|~) or a Unicode P* category.
func isHFPunctuation(r rune) bool {
	if r < 128 {
		return (r >= '!' && r <= '/') || (r >= ':' && r <= '@') || (r >= '[' && r <= '`') || (r >= '{' && r <= '~')
	}
	return unicode.IsPunct(r)
}

// whitespacePreTokenizer is HF's Whitespace: keeps matches of `\w+|[^\w\s]+` (Rust regex).
type whitespacePreTokenizer struct{}

func (whitespacePreTokenizer) preTokenize(ps []piece) []piece {
	return splitPieces(ps, func(p piece) []piece {
		var m []span
		s := p.s
		prev := 0
		for i := 0; i < len(s); {
			r, w := utf8.DecodeRuneInString(s[i:])
			var class int // 1: word, 2: other non-space
			switch {
			case isRustWord(r):
				class = 1
			case !unicode.IsSpace(r):
				class = 2
			default:
				i += w
				continue
			}
			j := i + w
			for j < len(s) {
				r2, w2 := utf8.DecodeRuneInString(s[j:])
				c2 := 0
				if isRustWord(r2) {
					c2 = 1
				} else if !unicode.IsSpace(r2) {
					c2 = 2
				}
				if c2 != class {
					break
				}
				j += w2
			}
			if prev < i {
				m = append(m, span{prev, i, false})
			}
			m = append(m, span{i, j, true})
			prev = j
			i = j
		}
		if prev < len(s) {
			m = append(m, span{prev, len(s), false})
		}
		// Invert + Removed: keep the matches, drop the rest.
		return splitByMatches(p, m, behRemoved, true)
	})
}

type bertPreTokenizer struct{}

func (bertPreTokenizer) preTokenize(ps []piece) []piece {
	ps = splitPieces(ps, func(p piece) []piece {
		return splitByMatches(p, findMatchesFunc(p.s, unicode.IsSpace), behRemoved, false)
	})
	return splitPieces(ps, func(p piece) []piece {
		return splitByMatches(p, findMatchesFunc(p.s, isHFPunctuation), behIsolated, false)
	})
}

// fixedLengthPreTokenizer splits into chunks of n characters.
type fixedLengthPreTokenizer struct{ n int }

func (f fixedLengthPreTokenizer) preTokenize(ps []piece) []piece {
	return splitPieces(ps, func(p piece) []piece {
		var out []piece
		start, cnt := 0, 0
		for i := range p.s {
			if cnt == f.n {
				out = append(out, piece{s: p.s[start:i], atStart: p.atStart && start == 0, id: -1})
				start, cnt = i, 0
			}
			cnt++
		}
		out = append(out, piece{s: p.s[start:], atStart: p.atStart && start == 0, id: -1})
		return out
	})
}
