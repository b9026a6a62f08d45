package chat

// Lexer and parser for the Jinja2 subset of chat templates (see chat.go for the supported list).
// The whitespace rules are those of the environment Hugging Face uses for chat templates:
// trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False.

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ---- template segments (text / {{ }} / {% %}) ----

type segKind int

const (
	segText segKind = iota
	segExpr
	segStmt
)

type segment struct {
	kind segKind
	text string // raw text, or the inside of the tag without delimiters and modifiers
	line int    // 1-based line of the segment's start
}

// pyIsSpace matches Python's str.isspace / regex \s for str patterns closely enough for templates.
func pyIsSpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

func allSpace(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !pyIsSpace(r) {
			return false
		}
	}
	return true
}

// splitTemplate cuts src into segments, applying the whitespace-control rules.
func splitTemplate(src string) ([]segment, error) {
	if strings.ContainsAny(src, "\v\f\x1c\x1d\x1e\u0085\u2028\u2029") {
		// Python's splitlines (used by Jinja to normalize newlines) treats these as line breaks.
		return nil, fmt.Errorf("unsupported: template contains a line-break character other than \\n and \\r")
	}
	src = strings.ReplaceAll(src, "\r\n", "\n")
	src = strings.ReplaceAll(src, "\r", "\n")
	src = strings.TrimSuffix(src, "\n") // keep_trailing_newline=False

	var segs []segment
	pos := 0
	line := 1
	lineStart := true // the previous tag's end consumed a newline (or we are at the start)
	for {
		i := nextTagOpen(src, pos)
		if i < 0 {
			if pos < len(src) {
				segs = append(segs, segment{kind: segText, text: src[pos:], line: line})
			}
			return segs, nil
		}
		open := src[i : i+2]
		j := i + 2
		mod := byte(0)
		if j < len(src) && (src[j] == '-' || src[j] == '+') {
			mod = src[j]
			j++
		}
		if text := trimBeforeTag(src[pos:i], open, mod, lineStart); text != "" {
			segs = append(segs, segment{kind: segText, text: text, line: line})
		}
		line += strings.Count(src[pos:i], "\n")
		tagLine := line

		closeStart, err := findClose(src, j, open)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", tagLine, err)
		}
		closeEnd := closeStart + 2
		inner := src[j:closeStart]
		closeMod := byte(0)
		if len(inner) > 0 && (inner[len(inner)-1] == '-' || (inner[len(inner)-1] == '+' && open != "{{")) {
			closeMod = inner[len(inner)-1]
			inner = inner[:len(inner)-1]
		}
		pos = skipAfterTag(src, closeEnd, open, closeMod)
		line += strings.Count(src[i:pos], "\n")
		lineStart = pos > 0 && src[pos-1] == '\n'
		switch open {
		case "{{":
			segs = append(segs, segment{kind: segExpr, text: inner, line: tagLine})
		case "{%":
			segs = append(segs, segment{kind: segStmt, text: inner, line: tagLine})
		}
	}
}

// trimBeforeTag applies whitespace control to the text before a tag: "-" strips the whitespace before it,
// lstrip_blocks the spaces and tabs between a line start and {% or {#, unless the tag has "+".
func trimBeforeTag(text, open string, mod byte, lineStart bool) string {
	switch {
	case mod == '-':
		return strings.TrimRightFunc(text, pyIsSpace)
	case mod == '+' || open == "{{":
		return text
	}
	l := strings.LastIndexByte(text, '\n') + 1
	if (l > 0 || lineStart) && allSpace(text[l:]) {
		return text[:l]
	}
	return text
}

// findClose finds the end of the tag opened by open ("{{", "{%" or "{#") whose inside starts at j.
func findClose(src string, j int, open string) (int, error) {
	switch open {
	case "{#":
		k := strings.Index(src[j:], "#}")
		if k < 0 {
			return 0, fmt.Errorf("unclosed comment")
		}
		return j + k, nil
	case "{%":
		return findTagClose(src, j, "%}")
	}
	return findTagClose(src, j, "}}")
}

// skipAfterTag applies whitespace control after a tag ending at pos: "-" skips the whitespace after it,
// trim_blocks one newline after %} and #}, unless the tag has "+". It returns where the next text starts.
func skipAfterTag(src string, pos int, open string, closeMod byte) int {
	switch {
	case closeMod == '-':
		for pos < len(src) {
			r, size := utf8.DecodeRuneInString(src[pos:])
			if !pyIsSpace(r) {
				break
			}
			pos += size
		}
	case closeMod == '+' || open == "{{":
	default:
		if pos < len(src) && src[pos] == '\n' {
			pos++
		}
	}
	return pos
}

func nextTagOpen(s string, from int) int {
	for i := from; i+1 < len(s); i++ {
		if s[i] == '{' && (s[i+1] == '{' || s[i+1] == '%' || s[i+1] == '#') {
			return i
		}
	}
	return -1
}

// findTagClose finds want ("}}" or "%}") from j, skipping string literals. As in Jinja's lexer, a tag ends only
// outside brackets: in {{ {'a': {'b': 1}} }} the first "}}" closes two dicts.
func findTagClose(s string, j int, want string) (int, error) {
	depth := 0
	for k := j; k < len(s); k++ {
		switch c := s[k]; {
		case c == '\'' || c == '"':
			end, err := skipString(s, k)
			if err != nil {
				return 0, err
			}
			k = end - 1
		case depth == 0 && strings.HasPrefix(s[k:], want):
			return k, nil
		case c == '(' || c == '[' || c == '{':
			depth++
		case (c == ')' || c == ']' || c == '}') && depth > 0:
			depth--
		}
	}
	return 0, fmt.Errorf("unclosed tag (missing %q)", want)
}

// skipString returns the index just past the string literal starting at s[k].
func skipString(s string, k int) (int, error) {
	q := s[k]
	for m := k + 1; m < len(s); m++ {
		switch s[m] {
		case '\\':
			m++
		case q:
			return m + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string literal")
}

// ---- expression tokens ----

type etokKind int

const (
	etName etokKind = iota
	etString
	etInt
	etFloat
	etOp
	etEOF
)

type etok struct {
	kind etokKind
	s    string // name, decoded string, operator, or number text
}

var ops3 = []string{"//", "**", "==", "!=", "<=", ">="}

// Number literals as Jinja's lexer reads them: float_re first, then integer_re (0b/0o/0x prefixes, no leading
// zeros); an underscore may separate digits.
var (
	floatLitRe = regexp.MustCompile(`^(?i)([0-9]+_)*[0-9]+((\.([0-9]+_)*[0-9]+)?e[+-]?([0-9]+_)*[0-9]+|\.([0-9]+_)*[0-9]+)`)
	intLitRe   = regexp.MustCompile(`^(?i)(0b(_?[01])+|0o(_?[0-7])+|0x(_?[0-9a-f])+|[1-9](_?[0-9])*|0(_?0)*)`)
)

func lexExpr(src string) ([]etok, error) {
	var toks []etok
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'' || c == '"':
			end, err := skipString(src, i)
			if err != nil {
				return nil, err
			}
			s, err := unescapePy(src[i+1 : end-1])
			if err != nil {
				return nil, err
			}
			toks = append(toks, etok{etString, s})
			i = end
		case c >= '0' && c <= '9':
			kind, m := etFloat, ""
			if i == 0 || src[i-1] != '.' { // Jinja's float_re does not start after a "."
				m = floatLitRe.FindString(src[i:])
			}
			if m == "" {
				kind, m = etInt, intLitRe.FindString(src[i:]) // matches at least the digit
			}
			toks = append(toks, etok{kind, strings.ReplaceAll(m, "_", "")})
			i += len(m)
		case c == '_' || c < utf8.RuneSelf && unicode.IsLetter(rune(c)):
			// Names are ASCII here: a non-ASCII byte such as 0xdb is not the letter U+00DB, and the loop below
			// must consume at least the first byte.
			j := i
			for j < len(src) && (src[j] == '_' || src[j] < utf8.RuneSelf && (unicode.IsLetter(rune(src[j])) || unicode.IsDigit(rune(src[j])))) {
				j++
			}
			toks = append(toks, etok{etName, src[i:j]})
			i = j
		default:
			op := ""
			for _, o := range ops3 {
				if strings.HasPrefix(src[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				if !strings.ContainsRune("+-*/%~<>()[]{},.:|=", rune(c)) {
					r, _ := utf8.DecodeRuneInString(src[i:])
					if unicode.IsLetter(r) { // Jinja reads Unicode identifiers
						return nil, fmt.Errorf("unsupported: non-ASCII name (%q)", r)
					}
					return nil, fmt.Errorf("unexpected character %q", r)
				}
				op = src[i : i+1]
			}
			toks = append(toks, etok{etOp, op})
			i += len(op)
		}
	}
	return append(toks, etok{kind: etEOF}), nil
}

// unescapePy decodes the backslash escapes Jinja accepts in string literals (Python's unicode-escape).
func unescapePy(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch e := s[i]; e {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '\\', '\'', '"':
			b.WriteByte(e)
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'v':
			b.WriteByte('\v')
		case '\n':
			// line continuation
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
			if i+1+n > len(s) {
				return "", fmt.Errorf("bad \\%c escape in string literal", e)
			}
			v, err := strconv.ParseUint(s[i+1:i+1+n], 16, 32)
			if err != nil || (v >= 0xD800 && v <= 0xDFFF) || v > unicode.MaxRune {
				return "", fmt.Errorf("bad \\%c escape in string literal", e)
			}
			b.WriteRune(rune(v))
			i += n
		case '0', '1', '2', '3', '4', '5', '6', '7':
			j := i
			for j < len(s) && j < i+3 && s[j] >= '0' && s[j] <= '7' {
				j++
			}
			v, _ := strconv.ParseUint(s[i:j], 8, 32)
			b.WriteRune(rune(v))
			i = j - 1
		case 'N':
			return "", fmt.Errorf("unsupported: \\N{...} escape in string literal")
		default: // unknown escapes stay as written
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
	return b.String(), nil
}

// ---- AST ----

type tnode interface{}

type textNode struct{ s string }

type outputNode struct {
	e    expr
	line int
}

type ifNode struct {
	conds  []expr
	bodies [][]tnode
	els    []tnode
	line   int
}

type forNode struct {
	vars []string
	iter expr
	body []tnode
	els  []tnode
	line int
}

type setNode struct {
	name string // variable, or namespace variable when attr != ""
	attr string
	e    expr    // nil for a block set
	body []tnode // block set: {% set x %}...{% endset %}
	line int
}

type generationNode struct{ body []tnode }

type loopCtlNode struct {
	brk  bool
	line int
}

type expr interface{}

type (
	litExpr  struct{ v value }
	nameExpr struct{ name string }
	attrExpr struct {
		obj  expr
		name string
	}
	indexExpr struct{ obj, idx expr }
	sliceExpr struct{ obj, lo, hi, step expr } // nil parts are omitted
	callExpr  struct {
		fn     expr // nameExpr (global function) or attrExpr (method)
		args   []expr
		kwargs []kwarg
	}
	filterExpr struct {
		x      expr
		name   string
		args   []expr
		kwargs []kwarg
	}
	testExpr struct {
		x    expr
		name string
		args []expr
		neg  bool
	}
	unaryExpr struct {
		op string // "-", "+", "not"
		x  expr
	}
	binExpr struct {
		op   string
		l, r expr
	}
	condExpr  struct{ cond, a, b expr } // b nil: undefined
	listExpr  struct{ items []expr }
	tupleExpr struct{ items []expr }
	dictExpr  struct{ keys, vals []expr }
)

type kwarg struct {
	name string
	v    expr
}

// Names the parser accepts (and filters in builtins.go); anything else is reported as unsupported at parse time.
var (
	knownTests = map[string]bool{
		"defined": true, "undefined": true, "none": true, "string": true, "number": true,
		"integer": true, "float": true, "boolean": true, "true": true, "false": true,
		"mapping": true, "iterable": true, "sequence": true, "odd": true, "even": true,
		"divisibleby": true, "eq": true, "equalto": true, "ne": true, "in": true,
	}
	knownMethods = map[string]bool{
		"startswith": true, "endswith": true, "strip": true, "lstrip": true, "rstrip": true,
		"split": true, "upper": true, "lower": true, "replace": true, "find": true, "join": true,
		"get": true, "items": true, "keys": true, "values": true,
	}
	knownFuncs = map[string]bool{"raise_exception": true, "namespace": true, "range": true}
)

// ---- expression parser (Jinja2 precedence) ----

type exprParser struct {
	toks  []etok
	i     int
	depth int // nesting of parseExpr/parseNot/parseUnary, every cycle of the recursive descent passes one
}

// maxParseDepth bounds the nesting of expressions and of statements: a template is read from a model file, and
// "((((…" a million deep would otherwise overflow the goroutine stack, which no recover can catch.
const maxParseDepth = 200

// enter counts one level of nesting; call the returned function when leaving it.
func (p *exprParser) enter() (func(), error) {
	p.depth++
	if p.depth > maxParseDepth {
		p.depth--
		return nil, fmt.Errorf("expression nested deeper than %d levels", maxParseDepth)
	}
	return func() { p.depth-- }, nil
}

func (p *exprParser) peek() etok { return p.toks[p.i] }
func (p *exprParser) next() etok {
	t := p.toks[p.i]
	if t.kind != etEOF {
		p.i++
	}
	return t
}
func (p *exprParser) isOp(s string) bool   { t := p.peek(); return t.kind == etOp && t.s == s }
func (p *exprParser) isName(s string) bool { t := p.peek(); return t.kind == etName && t.s == s }
func (p *exprParser) acceptOp(s string) bool {
	if p.isOp(s) {
		p.i++
		return true
	}
	return false
}
func (p *exprParser) acceptName(s string) bool {
	if p.isName(s) {
		p.i++
		return true
	}
	return false
}
func (p *exprParser) expectOp(s string) error {
	if !p.acceptOp(s) {
		return fmt.Errorf("expected %q, found %s", s, p.peek().describe())
	}
	return nil
}

func (t etok) describe() string {
	switch t.kind {
	case etEOF:
		return "end of tag"
	case etString:
		return strconv.Quote(t.s)
	}
	return fmt.Sprintf("%q", t.s)
}

// parseExpr: conditional expression (a if b else c).
func (p *exprParser) parseExpr() (expr, error) {
	leave, err := p.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	x, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	for p.acceptName("if") {
		cond, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		var b expr
		if p.acceptName("else") {
			if b, err = p.parseExpr(); err != nil {
				return nil, err
			}
		}
		x = &condExpr{cond: cond, a: x, b: b}
	}
	return x, nil
}

func (p *exprParser) parseOr() (expr, error)  { return p.leftAssoc(p.parseAnd, etName, "or") }
func (p *exprParser) parseAnd() (expr, error) { return p.leftAssoc(p.parseNot, etName, "and") }

// leftAssoc parses operand (op operand)* for the operators ops (tokens of kind k), grouping to the left.
func (p *exprParser) leftAssoc(operand func() (expr, error), k etokKind, ops ...string) (expr, error) {
	x, err := operand()
	for err == nil {
		t := p.peek()
		if t.kind != k || !slices.Contains(ops, t.s) {
			break
		}
		p.i++
		var r expr
		if r, err = operand(); err == nil {
			x = &binExpr{op: t.s, l: x, r: r}
		}
	}
	return x, err
}

func (p *exprParser) parseNot() (expr, error) {
	if p.acceptName("not") {
		leave, err := p.enter()
		if err != nil {
			return nil, err
		}
		defer leave()
		x, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		return &unaryExpr{op: "not", x: x}, nil
	}
	return p.parseCompare()
}

func (p *exprParser) parseCompare() (expr, error) {
	x, err := p.parseMath1()
	if err != nil {
		return nil, err
	}
	for {
		var op string
		switch t := p.peek(); {
		case t.kind == etOp && (t.s == "==" || t.s == "!=" || t.s == "<" || t.s == ">" || t.s == "<=" || t.s == ">="):
			op = t.s
			p.i++
		case p.isName("in"):
			op = "in"
			p.i++
		case p.isName("not") && p.toks[p.i+1].kind == etName && p.toks[p.i+1].s == "in":
			op = "not in"
			p.i += 2
		default:
			return x, nil
		}
		r, err := p.parseMath1()
		if err != nil {
			return nil, err
		}
		x = &binExpr{op: op, l: x, r: r}
	}
}

func (p *exprParser) parseMath1() (expr, error)  { return p.leftAssoc(p.parseConcat, etOp, "+", "-") }
func (p *exprParser) parseConcat() (expr, error) { return p.leftAssoc(p.parseMath2, etOp, "~") }
func (p *exprParser) parseMath2() (expr, error) {
	return p.leftAssoc(p.parsePow, etOp, "*", "/", "//", "%")
}

func (p *exprParser) parsePow() (expr, error) {
	x, err := p.parseUnary(true)
	if err == nil && p.isOp("**") {
		return nil, fmt.Errorf("unsupported: operator **")
	}
	return x, err
}

func (p *exprParser) parseUnary(withFilter bool) (expr, error) {
	var x expr
	var err error
	if p.isOp("-") || p.isOp("+") {
		leave, err := p.enter()
		if err != nil {
			return nil, err
		}
		defer leave()
		op := p.next().s
		inner, err := p.parseUnary(false)
		if err != nil {
			return nil, err
		}
		x = &unaryExpr{op: op, x: inner}
	} else if x, err = p.parsePrimary(); err != nil {
		return nil, err
	}
	if x, err = p.parsePostfix(x); err != nil {
		return nil, err
	}
	if withFilter {
		return p.parseFilterExpr(x)
	}
	return x, nil
}

func (p *exprParser) parsePrimary() (expr, error) {
	t := p.next()
	switch t.kind {
	case etString:
		s := t.s
		for p.peek().kind == etString { // adjacent literals concatenate
			s += p.next().s
		}
		return &litExpr{v: s}, nil
	case etInt:
		v, err := strconv.ParseInt(t.s, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("unsupported: integer literal %s", t.s)
		}
		return &litExpr{v: v}, nil
	case etFloat:
		v, err := strconv.ParseFloat(t.s, 64)
		if err != nil && math.IsInf(v, 0) {
			// Python reads inf, but Jinja's compiled code then names an undefined "inf" unless it folds a constant.
			return nil, fmt.Errorf("unsupported: float literal %s beyond float64", t.s)
		}
		if err != nil {
			return nil, fmt.Errorf("bad number %s", t.s)
		}
		return &litExpr{v: v}, nil
	case etName:
		switch t.s {
		case "true", "True":
			return &litExpr{v: true}, nil
		case "false", "False":
			return &litExpr{v: false}, nil
		case "none", "None":
			return &litExpr{v: nil}, nil
		}
		return &nameExpr{name: t.s}, nil
	case etOp:
		switch t.s {
		case "(":
			return p.parseParen()
		case "[":
			return p.parseList()
		case "{":
			return p.parseDict()
		}
	}
	return nil, fmt.Errorf("unexpected %s", t.describe())
}

// parseParen parses what follows "(": a parenthesized expression or a tuple.
func (p *exprParser) parseParen() (expr, error) {
	if p.acceptOp(")") {
		return &tupleExpr{}, nil
	}
	x, err := p.parseExpr()
	if err != nil {
		return nil, err
	}
	if p.isOp(",") {
		items := []expr{x}
		for p.acceptOp(",") && !p.isOp(")") {
			it, err := p.parseExpr()
			if err != nil {
				return nil, err
			}
			items = append(items, it)
		}
		x = &tupleExpr{items: items}
	}
	return x, p.expectOp(")")
}

// parseList parses the items of a list literal after "[".
func (p *exprParser) parseList() (expr, error) {
	var items []expr
	for !p.isOp("]") {
		it, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		items = append(items, it)
		if !p.acceptOp(",") {
			break
		}
	}
	return &listExpr{items: items}, p.expectOp("]")
}

// parseDict parses the entries of a dict literal after "{".
func (p *exprParser) parseDict() (expr, error) {
	d := &dictExpr{}
	for !p.isOp("}") {
		k, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		if err := p.expectOp(":"); err != nil {
			return nil, err
		}
		v, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		d.keys, d.vals = append(d.keys, k), append(d.vals, v)
		if !p.acceptOp(",") {
			break
		}
	}
	return d, p.expectOp("}")
}

func (p *exprParser) parsePostfix(x expr) (expr, error) {
	for {
		switch {
		case p.acceptOp("."):
			t := p.next()
			if t.kind != etName {
				if t.kind == etInt {
					x = &indexExpr{obj: x, idx: &litExpr{v: mustAtoi(t.s)}}
					continue
				}
				return nil, fmt.Errorf("expected attribute name after '.', found %s", t.describe())
			}
			x = &attrExpr{obj: x, name: t.s}
		case p.acceptOp("["):
			idx, err := p.parseSubscript(x)
			if err != nil {
				return nil, err
			}
			x = idx
		case p.isOp("("):
			c, err := p.parseCall(x)
			if err != nil {
				return nil, err
			}
			x = c
		default:
			return x, nil
		}
	}
}

func mustAtoi(s string) int64 { v, _ := strconv.ParseInt(s, 0, 64); return v }

func (p *exprParser) parseSubscript(obj expr) (expr, error) {
	var parts [3]expr
	n := 0
	isSlice := false
	for {
		if !p.isOp(":") && !p.isOp("]") {
			e, err := p.parseExpr()
			if err != nil {
				return nil, err
			}
			parts[n] = e
		}
		if p.acceptOp(":") {
			isSlice = true
			n++
			if n > 2 {
				return nil, fmt.Errorf("bad slice")
			}
			continue
		}
		break
	}
	if err := p.expectOp("]"); err != nil {
		return nil, err
	}
	if !isSlice {
		if parts[0] == nil {
			return nil, fmt.Errorf("empty subscript")
		}
		return &indexExpr{obj: obj, idx: parts[0]}, nil
	}
	return &sliceExpr{obj: obj, lo: parts[0], hi: parts[1], step: parts[2]}, nil
}

func (p *exprParser) parseArgs() ([]expr, []kwarg, error) {
	if err := p.expectOp("("); err != nil {
		return nil, nil, err
	}
	var args []expr
	var kwargs []kwarg
	for !p.isOp(")") {
		if p.peek().kind == etName && p.toks[p.i+1].kind == etOp && p.toks[p.i+1].s == "=" {
			name := p.next().s
			p.next()
			v, err := p.parseExpr()
			if err != nil {
				return nil, nil, err
			}
			kwargs = append(kwargs, kwarg{name, v})
		} else {
			if p.isOp("*") || p.isOp("**") {
				return nil, nil, fmt.Errorf("unsupported: *args/**kwargs in a call")
			}
			if len(kwargs) > 0 {
				return nil, nil, fmt.Errorf("positional argument after keyword argument")
			}
			v, err := p.parseExpr()
			if err != nil {
				return nil, nil, err
			}
			args = append(args, v)
		}
		if !p.acceptOp(",") {
			break
		}
	}
	return args, kwargs, p.expectOp(")")
}

func (p *exprParser) parseCall(fn expr) (expr, error) {
	switch f := fn.(type) {
	case *nameExpr:
		if !knownFuncs[f.name] {
			return nil, fmt.Errorf("unsupported: function %s()", f.name)
		}
	case *attrExpr:
		if !knownMethods[f.name] {
			return nil, fmt.Errorf("unsupported: method .%s()", f.name)
		}
	default:
		return nil, fmt.Errorf("unsupported: call of a computed value")
	}
	args, kwargs, err := p.parseArgs()
	if err != nil {
		return nil, err
	}
	return &callExpr{fn: fn, args: args, kwargs: kwargs}, nil
}

func (p *exprParser) parseFilterExpr(x expr) (expr, error) {
	for {
		switch {
		case p.acceptOp("|"):
			t := p.next()
			if t.kind != etName {
				return nil, fmt.Errorf("expected filter name, found %s", t.describe())
			}
			name := t.s
			for p.isOp(".") { // dotted filter names
				p.next()
				name += "." + p.next().s
			}
			if _, ok := filters[name]; !ok {
				return nil, fmt.Errorf("unsupported: filter %q", name)
			}
			f := &filterExpr{x: x, name: name}
			if p.isOp("(") {
				var err error
				if f.args, f.kwargs, err = p.parseArgs(); err != nil {
					return nil, err
				}
			}
			x = f
		case p.acceptName("is"):
			neg := p.acceptName("not")
			t := p.next()
			if t.kind != etName {
				return nil, fmt.Errorf("expected test name after 'is', found %s", t.describe())
			}
			if !knownTests[t.s] {
				return nil, fmt.Errorf("unsupported: test %q", t.s)
			}
			te := &testExpr{x: x, name: t.s, neg: neg}
			if p.isOp("(") {
				args, kwargs, err := p.parseArgs()
				if err != nil {
					return nil, err
				}
				if len(kwargs) > 0 {
					return nil, fmt.Errorf("unsupported: keyword arguments to test %q", t.s)
				}
				te.args = args
			} else if nt := p.peek(); nt.kind == etString || nt.kind == etInt || nt.kind == etFloat ||
				(nt.kind == etName && !isKeyword(nt.s)) {
				// a test with one argument written without parentheses: x is divisibleby 3
				arg, err := p.parsePrimary()
				if err != nil {
					return nil, err
				}
				if arg, err = p.parsePostfix(arg); err != nil {
					return nil, err
				}
				te.args = []expr{arg}
			}
			x = te
		default:
			return x, nil
		}
	}
}

func isKeyword(s string) bool {
	switch s {
	case "and", "or", "not", "in", "is", "if", "else":
		return true
	}
	return false
}

func parseExprString(src string) (expr, error) {
	toks, err := lexExpr(src)
	if err != nil {
		return nil, err
	}
	p := &exprParser{toks: toks}
	x, err := p.parseExpr()
	if err != nil {
		return nil, err
	}
	if p.peek().kind != etEOF {
		return nil, fmt.Errorf("unexpected %s after expression", p.peek().describe())
	}
	return x, nil
}

// ---- statement parser ----

type stmtParser struct {
	segs  []segment
	i     int
	depth int // nesting of blocks (if/for/generation)
}

// parseTemplate builds the node tree.
func parseTemplate(src string) ([]tnode, error) {
	segs, err := splitTemplate(src)
	if err != nil {
		return nil, err
	}
	sp := &stmtParser{segs: segs}
	nodes, end, err := sp.parseBody(nil)
	if err != nil {
		return nil, err
	}
	if end != nil {
		return nil, fmt.Errorf("line %d: unexpected {%% %s %%}", end.line, end.word)
	}
	return nodes, nil
}

type endTag struct {
	word string
	rest string
	line int
}

// parseBody parses nodes until a statement whose first word is in stops (returned), or EOF.
func (sp *stmtParser) parseBody(stops []string) ([]tnode, *endTag, error) {
	sp.depth++
	defer func() { sp.depth-- }()
	if sp.depth > maxParseDepth {
		return nil, nil, fmt.Errorf("blocks nested deeper than %d levels", maxParseDepth)
	}
	var nodes []tnode
	for sp.i < len(sp.segs) {
		seg := sp.segs[sp.i]
		sp.i++
		switch seg.kind {
		case segText:
			nodes = append(nodes, &textNode{s: seg.text})
		case segExpr:
			x, err := parseExprString(seg.text)
			if err != nil {
				return nil, nil, fmt.Errorf("line %d: {{ %s }}: %v", seg.line, strings.TrimSpace(seg.text), err)
			}
			nodes = append(nodes, &outputNode{e: x, line: seg.line})
		case segStmt:
			body := strings.TrimSpace(seg.text)
			word, rest := body, ""
			if k := strings.IndexFunc(body, pyIsSpace); k >= 0 {
				word, rest = body[:k], strings.TrimSpace(body[k:])
			}
			for _, s := range stops {
				if word == s {
					return nodes, &endTag{word: word, rest: rest, line: seg.line}, nil
				}
			}
			n, err := sp.parseStmt(word, rest, seg.line)
			if err != nil {
				return nil, nil, fmt.Errorf("line %d: {%% %s %%}: %v", seg.line, body, err)
			}
			nodes = append(nodes, n)
		}
	}
	if len(stops) > 0 {
		return nil, nil, fmt.Errorf("missing {%% %s %%}", stops[len(stops)-1])
	}
	return nodes, nil, nil
}

func (sp *stmtParser) parseStmt(word, rest string, line int) (tnode, error) {
	switch word {
	case "if":
		n := &ifNode{line: line}
		cond, err := parseExprString(rest)
		if err != nil {
			return nil, err
		}
		for {
			body, end, err := sp.parseBody([]string{"elif", "else", "endif"})
			if err != nil {
				return nil, err
			}
			n.conds, n.bodies = append(n.conds, cond), append(n.bodies, body)
			switch end.word {
			case "elif":
				if cond, err = parseExprString(end.rest); err != nil {
					return nil, fmt.Errorf("elif: %v", err)
				}
				continue
			case "else":
				els, end2, err := sp.parseBody([]string{"endif"})
				if err != nil {
					return nil, err
				}
				_ = end2
				n.els = els
			}
			return n, nil
		}
	case "for":
		return sp.parseFor(rest, line)
	case "set":
		return sp.parseSet(rest, line)
	case "generation":
		body, _, err := sp.parseBody([]string{"endgeneration"})
		if err != nil {
			return nil, err
		}
		return &generationNode{body: body}, nil
	case "break", "continue":
		if rest != "" {
			return nil, fmt.Errorf("unexpected %q", rest)
		}
		return &loopCtlNode{brk: word == "break", line: line}, nil
	case "":
		return nil, fmt.Errorf("empty statement")
	}
	return nil, fmt.Errorf("unsupported: statement %q", word)
}

func (sp *stmtParser) parseFor(rest string, line int) (tnode, error) {
	toks, err := lexExpr(rest)
	if err != nil {
		return nil, err
	}
	p := &exprParser{toks: toks}
	n := &forNode{line: line}
	paren := p.acceptOp("(")
	for {
		t := p.next()
		if t.kind != etName || isKeyword(t.s) {
			return nil, fmt.Errorf("expected loop variable, found %s", t.describe())
		}
		n.vars = append(n.vars, t.s)
		if !p.acceptOp(",") {
			break
		}
	}
	if paren {
		if err := p.expectOp(")"); err != nil {
			return nil, err
		}
	}
	if !p.acceptName("in") {
		return nil, fmt.Errorf("expected 'in', found %s", p.peek().describe())
	}
	// The iterable is an or-expression: a trailing "if" would be a loop filter.
	if n.iter, err = p.parseOr(); err != nil {
		return nil, err
	}
	if p.isName("if") {
		return nil, fmt.Errorf("unsupported: loop filter (for ... if ...)")
	}
	if p.isName("recursive") {
		return nil, fmt.Errorf("unsupported: recursive loop")
	}
	if p.peek().kind != etEOF {
		return nil, fmt.Errorf("unexpected %s", p.peek().describe())
	}
	body, end, err := sp.parseBody([]string{"else", "endfor"})
	if err != nil {
		return nil, err
	}
	n.body = body
	if end.word == "else" {
		if n.els, _, err = sp.parseBody([]string{"endfor"}); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (sp *stmtParser) parseSet(rest string, line int) (tnode, error) {
	toks, err := lexExpr(rest)
	if err != nil {
		return nil, err
	}
	p := &exprParser{toks: toks}
	t := p.next()
	if t.kind != etName || isKeyword(t.s) {
		return nil, fmt.Errorf("expected variable name, found %s", t.describe())
	}
	n := &setNode{name: t.s, line: line}
	if p.acceptOp(".") {
		a := p.next()
		if a.kind != etName {
			return nil, fmt.Errorf("expected attribute name, found %s", a.describe())
		}
		n.attr = a.s
	}
	if p.isOp(",") {
		return nil, fmt.Errorf("unsupported: tuple assignment in set")
	}
	if p.peek().kind == etEOF { // block set
		if n.attr != "" {
			return nil, fmt.Errorf("unsupported: block set of an attribute")
		}
		body, _, err := sp.parseBody([]string{"endset"})
		if err != nil {
			return nil, err
		}
		n.body = body
		return n, nil
	}
	if p.isOp("|") {
		return nil, fmt.Errorf("unsupported: filtered block set")
	}
	if err := p.expectOp("="); err != nil {
		return nil, err
	}
	if n.e, err = p.parseExpr(); err != nil {
		return nil, err
	}
	if p.peek().kind != etEOF {
		return nil, fmt.Errorf("unexpected %s", p.peek().describe())
	}
	return n, nil
}
