package tokenizer

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a piece of text. dropped reports that characters were removed from the
// very start, so the piece no longer begins at its original offset.
type normalizer interface {
	normalize(s string) (out string, dropped bool)
}

type seqNormalizer []normalizer

func (q seqNormalizer) normalize(s string) (string, bool) {
	dropped := false
	for _, n := range q {
		var d bool
		s, d = n.normalize(s)
		dropped = dropped || d
	}
	return s, dropped
}

type prependNormalizer struct{ prefix string }

func (n prependNormalizer) normalize(s string) (string, bool) {
	if s == "" {
		return s, false
	}
	return n.prefix + s, false
}

// replace is HF's Replace (a normalizer and a decoder): every match of a String or Regex pattern becomes content.
type replace struct {
	literal string // non-empty: a plain string pattern
	re      *regex // otherwise
	content string
}

type replaceNormalizer struct{ replace }

func (n replaceNormalizer) normalize(s string) (string, bool) {
	out := replaceAll(s, n.literal, n.re, n.content)
	dropped := false
	if n.content == "" && len(out) < len(s) && s != "" {
		// A removal at the very start shifts the piece's original start.
		for _, sp := range n.spans(s) {
			dropped = sp.match && sp.start == 0 && sp.end > 0
			break
		}
	}
	return out, dropped
}

func (n replace) spans(s string) []span {
	if n.literal != "" {
		return findLiteral(s, n.literal)
	}
	return findMatches(n.re, s)
}

// replaceAll replaces each match (leftmost, non-overlapping) by content.
func replaceAll(s, literal string, re *regex, content string) string {
	if literal != "" {
		return strings.ReplaceAll(s, literal, content)
	}
	var b strings.Builder
	for _, sp := range findMatches(re, s) {
		if sp.match {
			b.WriteString(content)
		} else {
			b.WriteString(s[sp.start:sp.end])
		}
	}
	return b.String()
}

// findLiteral is HF's find_matches for a non-empty literal pattern.
func findLiteral(s, lit string) []span {
	if s == "" {
		return []span{{0, 0, false}}
	}
	var out []span
	prev := 0
	for {
		i := strings.Index(s[prev:], lit)
		if i < 0 {
			break
		}
		i += prev
		if i > prev {
			out = append(out, span{prev, i, false})
		}
		out = append(out, span{i, i + len(lit), true})
		prev = i + len(lit)
	}
	if prev < len(s) {
		out = append(out, span{prev, len(s), false})
	}
	return out
}

type unicodeNormalizer struct{ form norm.Form }

func (n unicodeNormalizer) normalize(s string) (string, bool) { return n.form.String(s), false }

type lowercaseNormalizer struct{}

func (lowercaseNormalizer) normalize(s string) (string, bool) {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r == 0x130 { // Rust's char::to_lowercase: 'İ' → "i̇" (the only multi-char mapping)
			b.WriteString("i\u0307")
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String(), false
}

type stripNormalizer struct{ left, right bool }

func (n stripNormalizer) normalize(s string) (string, bool) {
	out := s
	dropped := false
	if n.left {
		out = strings.TrimLeftFunc(out, unicode.IsSpace)
		dropped = len(out) < len(s)
	}
	if n.right {
		out = strings.TrimRightFunc(out, unicode.IsSpace)
	}
	return out, dropped
}

type stripAccentsNormalizer struct{}

func (stripAccentsNormalizer) normalize(s string) (string, bool) {
	return filterRunes(s, func(r rune) bool { return !unicode.IsMark(r) })
}

// filterRunes keeps the runes for which keep is true.
func filterRunes(s string, keep func(rune) bool) (string, bool) {
	var b strings.Builder
	dropped := false
	first := true
	for _, r := range s {
		if keep(r) {
			b.WriteRune(r)
		} else if first || b.Len() == 0 {
			dropped = true
		}
		first = false
	}
	return b.String(), dropped
}

type nmtNormalizer struct{}

func (nmtNormalizer) normalize(s string) (string, bool) {
	out, dropped := filterRunes(s, func(r rune) bool {
		switch {
		case r >= 0x1 && r <= 0x8, r == 0xB, r >= 0xE && r <= 0x1F, r == 0x7F, r == 0x8F, r == 0x9F:
			return false
		}
		return true
	})
	out = strings.Map(func(r rune) rune {
		switch {
		case r == 0x9, r == 0xA, r == 0xC, r == 0xD, r == 0x1680, r >= 0x200B && r <= 0x200F,
			r == 0x2028, r == 0x2029, r == 0x2581, r == 0xFEFF, r == 0xFFFD:
			return ' '
		}
		return r
	}, out)
	return out, dropped
}

type byteLevelNormalizer struct{}

func (byteLevelNormalizer) normalize(s string) (string, bool) { return byteLevelEncode(s), false }

// GPT-2's reversible byte → printable-rune table.
var bytesToRunes, runesToBytes = func() ([256]rune, map[rune]byte) {
	var tbl [256]rune
	rev := map[rune]byte{}
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			tbl[b] = rune(b)
		} else {
			tbl[b] = rune(256 + n)
			n++
		}
		rev[tbl[b]] = byte(b)
	}
	return tbl, rev
}()

func byteLevelEncode(s string) string {
	var b strings.Builder
	b.Grow(len(s) * 2)
	for i := 0; i < len(s); i++ {
		b.WriteRune(bytesToRunes[s[i]])
	}
	return b.String()
}

// isRustWhitespace is Rust's char::is_whitespace (the White_Space property).
func isRustWhitespace(r rune) bool { return unicode.IsSpace(r) }
