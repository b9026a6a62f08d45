package tokenizer

// A small backtracking regular-expression engine for pre-tokenizer patterns.
//
// Hugging Face tokenizers compiles Split/Replace patterns with Oniguruma. Go's regexp has no
// lookahead (needed for `\s+(?!\S)`), and its \s, \w, \d are ASCII-only, so the GPT-2 /
// Llama-3 / Qwen split patterns need their own matcher. This one follows Oniguruma's
// leftmost-first (Perl) semantics with Unicode classes. It supports: literals and escapes,
// `.`, classes [...] with ranges and \p{..}, \s \S \d \D \w \W \h \H, alternation, groups
// (capturing groups act as plain groups), (?:..), (?i:..), inline flags, lookahead (?=..) and
// (?!..), atomic groups (?>..), greedy/lazy/possessive quantifiers, and the anchors ^ $ \A \z \Z \b \B.
// Anything else is rejected at compile time, so unsupported patterns fail loudly.

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

type reOp uint8

const (
	opSet       reOp = iota // one character from a set
	opConcat                // subs in order
	opAlt                   // first matching sub wins
	opRepeat                // sub repeated min..max times
	opLook                  // lookahead (neg: negative)
	opAtomic                // atomic group: first match of sub, no backtracking into it
	opEmpty                 // matches the empty string
	opLineStart             // ^
	opLineEnd               // $
	opTextStart             // \A
	opTextEnd               // \z
	opTextEndNL             // \Z
	opWordB                 // \b
	opNotWordB              // \B
)

type reNode struct {
	op         reOp
	set        *charSet
	subs       []*reNode
	min, max   int // max < 0: unbounded
	lazy       bool
	possessive bool
	neg        bool
	greedy     *reNode    // for a possessive repeat: the same repeat, greedy
	firsts     []*charSet // for opAlt: the runes each alternative can start with (nil: unknown)
}

// charSet is a predicate on runes with a bitmap fast path for ASCII.
type charSet struct {
	ascii [2]uint64
	items []setItem // for non-ASCII runes
	neg   bool
}

type setItem struct {
	lo, hi rune                // range (when table == nil && fn == nil)
	table  *unicode.RangeTable // or a Unicode table
	fn     func(rune) bool     // or a predicate
	negate bool                // item is negated (\P{..}, \S inside brackets)
}

func (it *setItem) has(r rune) bool {
	var in bool
	switch {
	case it.fn != nil:
		in = it.fn(r)
	case it.table != nil:
		in = unicode.Is(it.table, r)
	default:
		in = r >= it.lo && r <= it.hi
	}
	return in != it.negate
}

func (cs *charSet) finish() {
	for r := rune(0); r < 128; r++ {
		if cs.slowHas(r) {
			cs.ascii[r>>6] |= 1 << (uint(r) & 63)
		}
	}
}

func (cs *charSet) slowHas(r rune) bool {
	in := false
	for i := range cs.items {
		if cs.items[i].has(r) {
			in = true
			break
		}
	}
	return in != cs.neg
}

func (cs *charSet) has(r rune) bool {
	if r < 128 && r >= 0 {
		return cs.ascii[r>>6]&(1<<(uint(r)&63)) != 0
	}
	return cs.slowHas(r)
}

// Unicode class predicates as Oniguruma defines them for UTF-8.
func isSpaceRune(r rune) bool { return unicode.IsSpace(r) } // White_Space property
func isDigitRune(r rune) bool { return unicode.Is(unicode.Nd, r) }
func isWordRune(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.Is(unicode.Nd, r) || unicode.IsMark(r) ||
		unicode.Is(unicode.Pc, r)
}
func isHexRune(r rune) bool {
	return (r >= '0' && r <= '9') || (r >= 'a' && r <= 'f') || (r >= 'A' && r <= 'F')
}

type regex struct {
	pattern string
	root    *reNode
}

type reParser struct {
	src   []rune
	pos   int
	fold  bool // (?i) in effect
	multi bool // (?m): '.' matches newlines (Ruby/Oniguruma meaning)
}

func compileRegex(pattern string) (*regex, error) {
	p := &reParser{src: []rune(pattern)}
	n, err := p.parseAlt()
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", pattern, err)
	}
	if p.pos != len(p.src) {
		return nil, fmt.Errorf("regex %q: unexpected %q at %d", pattern, p.src[p.pos], p.pos)
	}
	computeFirsts(n)
	return &regex{pattern: pattern, root: n}, nil
}

// firstSet returns a superset of the runes n can start with (nil: unknown) and whether n can
// match the empty string. Zero-width nodes give an empty set. Used to skip alternatives cheaply.
func firstSet(n *reNode) (*charSet, bool) {
	switch n.op {
	case opSet:
		return n.set, false
	case opConcat:
		union := &charSet{}
		for _, s := range n.subs {
			f, nullable := firstSet(s)
			if f == nil {
				return nil, false
			}
			union = unionSet(union, f)
			if !nullable {
				return union, false
			}
		}
		return union, true
	case opAlt:
		union, anyNullable := &charSet{}, false
		for _, s := range n.subs {
			f, nullable := firstSet(s)
			if f == nil {
				return nil, false
			}
			union = unionSet(union, f)
			anyNullable = anyNullable || nullable
		}
		return union, anyNullable
	case opRepeat:
		f, nullable := firstSet(n.subs[0])
		if f == nil {
			return nil, false
		}
		return f, nullable || n.min == 0
	case opAtomic:
		return firstSet(n.subs[0])
	}
	return &charSet{}, true // lookaround, anchors, empty: zero width
}

func unionSet(a, b *charSet) *charSet {
	u := &charSet{ascii: [2]uint64{a.ascii[0] | b.ascii[0], a.ascii[1] | b.ascii[1]}}
	for _, x := range []*charSet{a, b} {
		if len(x.items) > 0 || x.neg {
			xx := x
			u.items = append(u.items, setItem{fn: xx.slowHas})
		}
	}
	return u
}

func computeFirsts(n *reNode) {
	for _, s := range n.subs {
		computeFirsts(s)
	}
	if n.greedy != nil {
		computeFirsts(n.greedy)
	}
	if n.op != opAlt {
		return
	}
	n.firsts = make([]*charSet, len(n.subs))
	for k, s := range n.subs {
		if f, nullable := firstSet(s); f != nil && !nullable {
			n.firsts[k] = f
		}
	}
}

// literalRegex matches s literally (used for String patterns).
func literalRegex(s string) *regex {
	var subs []*reNode
	for _, r := range s {
		subs = append(subs, runeNode(r, false))
	}
	return &regex{pattern: s, root: &reNode{op: opConcat, subs: subs}}
}

func runeNode(r rune, fold bool) *reNode {
	cs := &charSet{}
	if fold {
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			cs.items = append(cs.items, setItem{lo: f, hi: f})
		}
	}
	cs.items = append(cs.items, setItem{lo: r, hi: r})
	cs.finish()
	return &reNode{op: opSet, set: cs}
}

func (p *reParser) eof() bool  { return p.pos >= len(p.src) }
func (p *reParser) peek() rune { return p.src[p.pos] }

func (p *reParser) parseAlt() (*reNode, error) {
	var alts []*reNode
	saveFold, saveMulti := p.fold, p.multi
	for {
		c, err := p.parseConcat()
		if err != nil {
			return nil, err
		}
		alts = append(alts, c)
		if p.eof() || p.peek() != '|' {
			break
		}
		p.pos++
	}
	p.fold, p.multi = saveFold, saveMulti
	if len(alts) == 1 {
		return alts[0], nil
	}
	return &reNode{op: opAlt, subs: alts}, nil
}

func (p *reParser) parseConcat() (*reNode, error) {
	var items []*reNode
	for !p.eof() && p.peek() != '|' && p.peek() != ')' {
		atom, err := p.parseAtom()
		if err != nil {
			return nil, err
		}
		if atom == nil { // inline flag group like (?i)
			continue
		}
		atom, err = p.parseQuantifier(atom)
		if err != nil {
			return nil, err
		}
		items = append(items, atom)
	}
	switch len(items) {
	case 0:
		return &reNode{op: opEmpty}, nil
	case 1:
		return items[0], nil
	}
	return &reNode{op: opConcat, subs: items}, nil
}

func (p *reParser) parseQuantifier(atom *reNode) (*reNode, error) {
	for !p.eof() {
		min, max := -1, -1
		switch p.peek() {
		case '*':
			min, max = 0, -1
			p.pos++
		case '+':
			min, max = 1, -1
			p.pos++
		case '?':
			min, max = 0, 1
			p.pos++
		case '{':
			lo, hi, ok := p.parseInterval()
			if !ok {
				return atom, nil // a literal '{' follows; handled as an atom
			}
			min, max = lo, hi
		default:
			return atom, nil
		}
		if atom.op == opLineStart || atom.op == opLineEnd || atom.op == opTextStart ||
			atom.op == opTextEnd || atom.op == opTextEndNL || atom.op == opWordB || atom.op == opNotWordB {
			return nil, fmt.Errorf("quantifier after anchor at %d", p.pos)
		}
		n := &reNode{op: opRepeat, subs: []*reNode{atom}, min: min, max: max}
		if !p.eof() && p.peek() == '?' {
			n.lazy = true
			p.pos++
		} else if !p.eof() && p.peek() == '+' {
			n.possessive = true
			n.greedy = &reNode{op: opRepeat, subs: n.subs, min: min, max: max}
			p.pos++
		}
		atom = n
	}
	return atom, nil
}

// parseInterval parses {n}, {n,}, {n,m}, {,m} at p.pos; ok=false leaves pos unchanged.
func (p *reParser) parseInterval() (int, int, bool) {
	start := p.pos
	end := start + 1
	for end < len(p.src) && p.src[end] != '}' {
		end++
	}
	if end >= len(p.src) {
		return 0, 0, false
	}
	body := string(p.src[start+1 : end])
	parts := strings.Split(body, ",")
	var lo, hi int
	var err error
	switch len(parts) {
	case 1:
		if lo, err = strconv.Atoi(parts[0]); err != nil {
			return 0, 0, false
		}
		hi = lo
	case 2:
		if parts[0] == "" {
			lo = 0
		} else if lo, err = strconv.Atoi(parts[0]); err != nil {
			return 0, 0, false
		}
		if parts[1] == "" {
			hi = -1
		} else if hi, err = strconv.Atoi(parts[1]); err != nil {
			return 0, 0, false
		}
		if parts[0] == "" && parts[1] == "" {
			return 0, 0, false
		}
	default:
		return 0, 0, false
	}
	if lo < 0 || (hi >= 0 && hi < lo) || lo > 100000 || hi > 100000 {
		return 0, 0, false
	}
	p.pos = end + 1
	return lo, hi, true
}

func (p *reParser) parseAtom() (*reNode, error) {
	c := p.peek()
	switch c {
	case '(':
		return p.parseGroup()
	case '[':
		cs, err := p.parseBracket()
		if err != nil {
			return nil, err
		}
		return &reNode{op: opSet, set: cs}, nil
	case '.':
		p.pos++
		cs := &charSet{}
		if p.multi {
			cs.items = []setItem{{lo: 0, hi: unicode.MaxRune}}
		} else {
			cs.items = []setItem{{lo: '\n', hi: '\n', negate: true}}
		}
		cs.finish()
		return &reNode{op: opSet, set: cs}, nil
	case '^':
		p.pos++
		return &reNode{op: opLineStart}, nil
	case '$':
		p.pos++
		return &reNode{op: opLineEnd}, nil
	case '\\':
		return p.parseEscapeAtom()
	case '*', '+', '?':
		return nil, fmt.Errorf("nothing to repeat at %d", p.pos)
	}
	p.pos++
	return runeNode(c, p.fold), nil
}

func (p *reParser) parseGroup() (*reNode, error) {
	p.pos++ // '('
	kind := byte(0)
	saveFold, saveMulti := p.fold, p.multi
	if !p.eof() && p.peek() == '?' {
		p.pos++
		if p.eof() {
			return nil, fmt.Errorf("unterminated group")
		}
		switch p.peek() {
		case ':':
			p.pos++
		case '=', '!', '>':
			kind = byte(p.peek())
			p.pos++
		case '<':
			if p.pos+1 < len(p.src) && (p.src[p.pos+1] == '=' || p.src[p.pos+1] == '!') {
				return nil, fmt.Errorf("lookbehind is not supported (at %d)", p.pos)
			}
			// named group (?<name>...)
			end := p.pos + 1
			for end < len(p.src) && p.src[end] != '>' {
				end++
			}
			if end >= len(p.src) {
				return nil, fmt.Errorf("unterminated group name at %d", p.pos)
			}
			p.pos = end + 1
		default:
			// inline flags: (?i) (?i-m) (?i:...)
			on := true
			for !p.eof() && p.peek() != ')' && p.peek() != ':' {
				switch p.peek() {
				case '-':
					on = false
				case 'i':
					p.fold = on
				case 'm', 's':
					p.multi = on
				default:
					return nil, fmt.Errorf("unsupported group flag %q at %d", p.peek(), p.pos)
				}
				p.pos++
			}
			if p.eof() {
				return nil, fmt.Errorf("unterminated group")
			}
			if p.peek() == ')' {
				// flags apply to the rest of the enclosing group
				p.pos++
				return nil, nil
			}
			p.pos++ // ':'
		}
	}
	sub, err := p.parseAlt()
	if err != nil {
		return nil, err
	}
	if p.eof() || p.peek() != ')' {
		return nil, fmt.Errorf("missing ')'")
	}
	p.pos++
	p.fold, p.multi = saveFold, saveMulti
	switch kind {
	case '=':
		return &reNode{op: opLook, subs: []*reNode{sub}}, nil
	case '!':
		return &reNode{op: opLook, subs: []*reNode{sub}, neg: true}, nil
	case '>':
		return &reNode{op: opAtomic, subs: []*reNode{sub}}, nil
	}
	return sub, nil
}

func (p *reParser) parseEscapeAtom() (*reNode, error) {
	start := p.pos
	p.pos++ // '\\'
	if p.eof() {
		return nil, fmt.Errorf("trailing backslash")
	}
	c := p.peek()
	switch c {
	case 'A':
		p.pos++
		return &reNode{op: opTextStart}, nil
	case 'z':
		p.pos++
		return &reNode{op: opTextEnd}, nil
	case 'Z':
		p.pos++
		return &reNode{op: opTextEndNL}, nil
	case 'b':
		p.pos++
		return &reNode{op: opWordB}, nil
	case 'B':
		p.pos++
		return &reNode{op: opNotWordB}, nil
	}
	p.pos = start
	item, r, isRune, err := p.parseEscape()
	if err != nil {
		return nil, err
	}
	if isRune {
		return runeNode(r, p.fold), nil
	}
	cs := &charSet{items: []setItem{item}}
	cs.finish()
	return &reNode{op: opSet, set: cs}, nil
}

// parseEscape parses an escape at p.pos ('\\' included) that denotes a rune or a class.
func (p *reParser) parseEscape() (item setItem, r rune, isRune bool, err error) {
	p.pos++ // '\\'
	if p.eof() {
		return item, 0, false, fmt.Errorf("trailing backslash")
	}
	c := p.peek()
	p.pos++
	switch c {
	case 's', 'S':
		return setItem{fn: isSpaceRune, negate: c == 'S'}, 0, false, nil
	case 'd', 'D':
		return setItem{fn: isDigitRune, negate: c == 'D'}, 0, false, nil
	case 'w', 'W':
		return setItem{fn: isWordRune, negate: c == 'W'}, 0, false, nil
	case 'h', 'H':
		return setItem{fn: isHexRune, negate: c == 'H'}, 0, false, nil
	case 'p', 'P':
		it, err := p.parseProperty(c == 'P')
		return it, 0, false, err
	case 't':
		return item, '\t', true, nil
	case 'n':
		return item, '\n', true, nil
	case 'r':
		return item, '\r', true, nil
	case 'f':
		return item, '\f', true, nil
	case 'v':
		return item, '\v', true, nil
	case 'a':
		return item, '\a', true, nil
	case 'e':
		return item, 0x1b, true, nil
	case '0':
		return item, 0, true, nil
	case 'x', 'u':
		var hex string
		if c == 'x' && !p.eof() && p.peek() == '{' {
			end := p.pos
			for end < len(p.src) && p.src[end] != '}' {
				end++
			}
			if end >= len(p.src) {
				return item, 0, false, fmt.Errorf("unterminated \\x{")
			}
			hex = string(p.src[p.pos+1 : end])
			p.pos = end + 1
		} else {
			n := 2
			if c == 'u' {
				n = 4
			}
			if p.pos+n > len(p.src) {
				return item, 0, false, fmt.Errorf("short \\%c escape", c)
			}
			hex = string(p.src[p.pos : p.pos+n])
			p.pos += n
		}
		v, err := strconv.ParseUint(hex, 16, 32)
		if err != nil || v > unicode.MaxRune {
			return item, 0, false, fmt.Errorf("bad hex escape %q", hex)
		}
		return item, rune(v), true, nil
	}
	if c < 128 && (unicode.IsLetter(c) || unicode.IsDigit(c)) {
		return item, 0, false, fmt.Errorf("unsupported escape \\%c at %d", c, p.pos-2)
	}
	return item, c, true, nil
}

var propertyAliases = map[string]string{
	"letter": "L", "uppercase_letter": "Lu", "lowercase_letter": "Ll", "titlecase_letter": "Lt",
	"modifier_letter": "Lm", "other_letter": "Lo", "mark": "M", "nonspacing_mark": "Mn",
	"spacing_mark": "Mc", "enclosing_mark": "Me", "number": "N", "decimal_number": "Nd",
	"letter_number": "Nl", "other_number": "No", "punctuation": "P", "connector_punctuation": "Pc",
	"dash_punctuation": "Pd", "open_punctuation": "Ps", "close_punctuation": "Pe",
	"initial_punctuation": "Pi", "final_punctuation": "Pf", "other_punctuation": "Po",
	"symbol": "S", "math_symbol": "Sm", "currency_symbol": "Sc", "modifier_symbol": "Sk",
	"other_symbol": "So", "separator": "Z", "space_separator": "Zs", "line_separator": "Zl",
	"paragraph_separator": "Zp", "other": "C", "control": "Cc", "format": "Cf",
	"private_use": "Co", "surrogate": "Cs",
}

func (p *reParser) parseProperty(negate bool) (setItem, error) {
	if p.eof() || p.peek() != '{' {
		// single-letter form \pL
		if p.eof() {
			return setItem{}, fmt.Errorf("bad \\p")
		}
		name := string(p.peek())
		p.pos++
		return propertyItem(name, negate)
	}
	end := p.pos
	for end < len(p.src) && p.src[end] != '}' {
		end++
	}
	if end >= len(p.src) {
		return setItem{}, fmt.Errorf("unterminated \\p{")
	}
	name := string(p.src[p.pos+1 : end])
	p.pos = end + 1
	if strings.HasPrefix(name, "^") {
		name = name[1:]
		negate = !negate
	}
	return propertyItem(name, negate)
}

func propertyItem(name string, negate bool) (setItem, error) {
	key := strings.ToLower(strings.NewReplacer(" ", "_", "-", "_").Replace(name))
	if alias, ok := propertyAliases[key]; ok {
		name = alias
	}
	switch strings.ToLower(name) {
	case "any":
		return setItem{lo: 0, hi: unicode.MaxRune, negate: negate}, nil
	case "alpha", "alphabetic":
		return setItem{fn: func(r rune) bool {
			return unicode.IsLetter(r) || unicode.Is(unicode.Nl, r) || unicode.Is(unicode.Other_Alphabetic, r)
		}, negate: negate}, nil
	case "space", "white_space":
		return setItem{fn: isSpaceRune, negate: negate}, nil
	case "digit":
		return setItem{fn: isDigitRune, negate: negate}, nil
	case "word":
		return setItem{fn: isWordRune, negate: negate}, nil
	}
	if t, ok := unicode.Categories[name]; ok {
		return setItem{table: t, negate: negate}, nil
	}
	if t, ok := unicode.Scripts[name]; ok {
		return setItem{table: t, negate: negate}, nil
	}
	for k, t := range unicode.Scripts {
		if strings.EqualFold(k, name) {
			return setItem{table: t, negate: negate}, nil
		}
	}
	return setItem{}, fmt.Errorf("unknown Unicode property %q", name)
}

func (p *reParser) parseBracket() (*charSet, error) {
	p.pos++ // '['
	cs := &charSet{}
	if !p.eof() && p.peek() == '^' {
		cs.neg = true
		p.pos++
	}
	first := true
	for {
		if p.eof() {
			return nil, fmt.Errorf("missing ']'")
		}
		c := p.peek()
		if c == ']' && !first {
			p.pos++
			break
		}
		first = false
		if c == '[' {
			return nil, fmt.Errorf("nested character classes are not supported (at %d)", p.pos)
		}
		if c == '&' && p.pos+1 < len(p.src) && p.src[p.pos+1] == '&' {
			return nil, fmt.Errorf("class intersection is not supported (at %d)", p.pos)
		}
		var lo rune
		if c == '\\' {
			item, r, isRune, err := p.parseEscape()
			if err != nil {
				return nil, err
			}
			if !isRune {
				cs.items = append(cs.items, item)
				continue
			}
			lo = r
		} else {
			lo = c
			p.pos++
		}
		hi := lo
		if p.pos+1 < len(p.src) && p.peek() == '-' && p.src[p.pos+1] != ']' {
			p.pos++
			if p.peek() == '\\' {
				_, r, isRune, err := p.parseEscape()
				if err != nil {
					return nil, err
				}
				if !isRune {
					return nil, fmt.Errorf("bad range end at %d", p.pos)
				}
				hi = r
			} else {
				hi = p.peek()
				p.pos++
			}
			if hi < lo {
				return nil, fmt.Errorf("bad range %q-%q", lo, hi)
			}
		}
		cs.items = append(cs.items, setItem{lo: lo, hi: hi})
		if p.fold {
			for r := lo; r <= hi && r-lo < 1024; r++ {
				for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
					cs.items = append(cs.items, setItem{lo: f, hi: f})
				}
			}
		}
	}
	cs.finish()
	return cs, nil
}

// matcher holds one subject text as runes. Matching is backtracking with an explicit stack of
// continuation frames (indices into frames; -1 means "accept"), so matching allocates nothing
// once the stack has grown.
type matcher struct {
	runes  []rune
	end    int // end of the last accepted match
	frames []cont
	// Backtracking can take exponential time ("(a*)*b") and a general repetition recurses once per
	// iteration. Patterns come from tokenizer files, so a search has a step budget and a depth limit
	// (Oniguruma has retry limits for the same reason); past either, the search stops and the rest of
	// the text counts as unmatched. Real pre-tokenizer patterns use a few steps per character.
	budget    int
	depth     int
	exhausted bool
}

const (
	matchBaseBudget    = 1 << 20 // steps per search, plus matchBudgetPerRune per character of text
	matchBudgetPerRune = 256
	maxMatchDepth      = 10_000 // nested run calls (about 1 KB of stack each)
)

// cont is what remains to match after the current node list: more nodes, or (rep != nil) the
// next iteration of a general repetition.
type cont struct {
	nodes []*reNode
	rep   *reNode
	count int // iterations of rep done
	start int // where the current iteration of rep began
	next  int
}

const accept = -1

func (m *matcher) push(f cont) int {
	m.frames = append(m.frames, f)
	return len(m.frames) - 1
}

func (m *matcher) isWordAt(i int) bool {
	return i >= 0 && i < len(m.runes) && isWordRune(m.runes[i])
}

// resume continues with frame c at rune index i.
func (m *matcher) resume(i int, c int) bool {
	if c == accept {
		m.end = i
		return true
	}
	f := m.frames[c]
	if f.rep != nil {
		if i == f.start && f.count+1 > f.rep.min {
			return false // an empty iteration cannot make progress
		}
		return m.repeat(f.rep, f.count+1, i, f.next)
	}
	return m.run(f.nodes, i, f.next)
}

// run matches nodes in sequence at i, then continues with frame c.
func (m *matcher) run(nodes []*reNode, i int, c int) bool {
	m.budget--
	if m.exhausted || m.budget < 0 || m.depth >= maxMatchDepth {
		m.exhausted = true
		return false
	}
	m.depth++
	ok := m.runNodes(nodes, i, c)
	m.depth--
	return ok
}

func (m *matcher) runNodes(nodes []*reNode, i int, c int) bool {
	for len(nodes) > 0 && nodes[0].op == opSet {
		if i >= len(m.runes) || !nodes[0].set.has(m.runes[i]) {
			return false
		}
		i++
		nodes = nodes[1:]
	}
	if len(nodes) == 0 {
		return m.resume(i, c)
	}
	mark := len(m.frames)
	ok := m.runNode(nodes[0], nodes[1:], i, c)
	m.frames = m.frames[:mark] // frames pushed below are dead once the call returns
	return ok
}

// runNode matches the compound node n at i, then rest, then frame c.
func (m *matcher) runNode(n *reNode, rest []*reNode, i int, c int) bool {
	next := c
	if len(rest) > 0 {
		next = m.push(cont{nodes: rest, next: c})
	}
	switch n.op {
	case opConcat:
		return m.run(n.subs, i, next)
	case opAlt:
		for k := range n.subs {
			if f := n.firsts[k]; f != nil && (i >= len(m.runes) || !f.has(m.runes[i])) {
				continue // this alternative cannot start here
			}
			if m.run(n.subs[k:k+1], i, next) {
				return true
			}
		}
		return false
	case opRepeat:
		if n.subs[0].op == opSet {
			return m.repeatSet(n, i, next)
		}
		if n.possessive {
			if !m.repeat(n.greedy, 0, i, accept) {
				return false
			}
			return m.resume(m.end, next)
		}
		return m.repeat(n, 0, i, next)
	case opLook:
		if m.run(n.subs, i, accept) != n.neg {
			return m.resume(i, next)
		}
		return false
	case opAtomic:
		if !m.run(n.subs, i, accept) {
			return false
		}
		return m.resume(m.end, next)
	case opEmpty:
		return m.resume(i, next)
	case opLineStart:
		if i == 0 || m.runes[i-1] == '\n' {
			return m.resume(i, next)
		}
	case opLineEnd:
		if i == len(m.runes) || m.runes[i] == '\n' {
			return m.resume(i, next)
		}
	case opTextStart:
		if i == 0 {
			return m.resume(i, next)
		}
	case opTextEnd:
		if i == len(m.runes) {
			return m.resume(i, next)
		}
	case opTextEndNL:
		if i == len(m.runes) || (i == len(m.runes)-1 && m.runes[i] == '\n') {
			return m.resume(i, next)
		}
	case opWordB, opNotWordB:
		if (m.isWordAt(i-1) != m.isWordAt(i)) == (n.op == opWordB) {
			return m.resume(i, next)
		}
	}
	return false
}

// repeatSet matches a repetition of a single-character set: count the run once, then try the
// lengths in priority order.
func (m *matcher) repeatSet(n *reNode, i int, c int) bool {
	set := n.subs[0].set
	limit := len(m.runes) - i
	if n.max >= 0 && n.max < limit {
		limit = n.max
	}
	cnt := 0
	if n.lazy {
		for cnt < n.min {
			if cnt >= limit || !set.has(m.runes[i+cnt]) {
				return false
			}
			cnt++
		}
		for {
			if m.resume(i+cnt, c) {
				return true
			}
			if m.exhausted || cnt >= limit || !set.has(m.runes[i+cnt]) {
				return false
			}
			cnt++
		}
	}
	for cnt < limit && set.has(m.runes[i+cnt]) {
		cnt++
	}
	if cnt < n.min {
		return false
	}
	if n.possessive {
		return m.resume(i+cnt, c)
	}
	for k := cnt; k >= n.min && !m.exhausted; k-- {
		if m.resume(i+k, c) {
			return true
		}
	}
	return false
}

// repeat continues a general repetition after count iterations, at i.
func (m *matcher) repeat(n *reNode, count, i int, c int) bool {
	canMore := n.max < 0 || count < n.max
	if n.lazy {
		if count >= n.min && m.resume(i, c) {
			return true
		}
		return canMore && m.iterate(n, count, i, c)
	}
	if canMore && m.iterate(n, count, i, c) {
		return true
	}
	return count >= n.min && m.resume(i, c)
}

// iterate tries one more iteration of the repetition n.
func (m *matcher) iterate(n *reNode, count, i int, c int) bool {
	mark := len(m.frames)
	ok := m.run(n.subs[:1], i, m.push(cont{rep: n, count: count, start: i, next: c}))
	m.frames = m.frames[:mark]
	return ok
}

// findAll returns the byte offsets [start, end) of successive non-overlapping matches in s,
// following the onig crate's find_iter (an empty match right after the previous match is skipped).
func (re *regex) findAll(s string) [][2]int {
	if s == "" {
		return nil
	}
	runes := make([]rune, 0, len(s))
	offs := make([]int, 0, len(s)+1)
	for i, r := range s {
		runes = append(runes, r)
		offs = append(offs, i)
	}
	offs = append(offs, len(s))
	m := &matcher{runes: runes, budget: matchBaseBudget + matchBudgetPerRune*len(runes)}
	var out [][2]int
	lastMatchEnd := -1
	pos := 0
	for pos <= len(runes) {
		start, end := -1, -1
		root := []*reNode{re.root}
		for st := pos; st <= len(runes) && !m.exhausted; st++ {
			if m.run(root, st, accept) {
				start, end = st, m.end
				break
			}
		}
		if start < 0 {
			break
		}
		if start == end && lastMatchEnd == end {
			pos = end + 1
			continue
		}
		out = append(out, [2]int{offs[start], offs[end]})
		lastMatchEnd = end
		if end == start {
			pos = end + 1
		} else {
			pos = end
		}
	}
	return out
}

// findMatches mirrors HF's Pattern::find_matches: the whole string split into matched and
// unmatched consecutive spans.
func findMatches(re *regex, s string) []span {
	if s == "" {
		return []span{{0, 0, false}}
	}
	var out []span
	prev := 0
	for _, mt := range re.findAll(s) {
		if prev != mt[0] {
			out = append(out, span{prev, mt[0], false})
		}
		out = append(out, span{mt[0], mt[1], true})
		prev = mt[1]
	}
	if prev != len(s) {
		out = append(out, span{prev, len(s), false})
	}
	return out
}

// findMatchesFunc is HF's Pattern for a char predicate: each matching char is its own match.
func findMatchesFunc(s string, pred func(rune) bool) []span {
	if s == "" {
		return []span{{0, 0, false}}
	}
	var out []span
	last := 0
	for i, r := range s {
		if pred(r) {
			if last < i {
				out = append(out, span{last, i, false})
			}
			w := utf8.RuneLen(r)
			if r == utf8.RuneError {
				w = 1
			}
			out = append(out, span{i, i + w, true})
			last = i + w
		}
	}
	if last < len(s) {
		out = append(out, span{last, len(s), false})
	}
	return out
}

type span struct {
	start, end int
	match      bool
}
