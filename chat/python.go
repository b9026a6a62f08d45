package chat

// Python semantics of values: arithmetic, truth, equality, ordering, membership, iteration, str(), repr() and
// json.dumps(ensure_ascii=False).

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode"
)

// ---- operators ----

// arith is + - * / // % on values other than undefined: numbers (bools count as ints), then strings, lists and
// tuples.
func arith(op string, l, r value) (value, error) {
	if u, ok := l.(undefined); ok {
		return nil, undefErr(u)
	}
	if u, ok := r.(undefined); ok {
		return nil, undefErr(u)
	}
	ln, rn := numeric(l), numeric(r)
	if ln == nil || rn == nil {
		return seqArith(op, l, r)
	}
	li, lInt := ln.(int64)
	ri, rInt := rn.(int64)
	if lInt && rInt {
		return intArith(op, li, ri)
	}
	return floatArith(op, toFloat(ln), toFloat(rn))
}

// errIntOverflow refuses integer results Python would give beyond int64 (its ints have no limit).
var errIntOverflow = errors.New("unsupported: integer beyond 64 bits")

func intArith(op string, l, r int64) (value, error) {
	switch op {
	case "+":
		s := l + r
		if (r > 0 && s < l) || (r < 0 && s > l) {
			return nil, errIntOverflow
		}
		return s, nil
	case "-":
		d := l - r
		if (r > 0 && d > l) || (r < 0 && d < l) {
			return nil, errIntOverflow
		}
		return d, nil
	case "*":
		p := l * r
		if l != 0 && (p/l != r || (l == -1 && r == math.MinInt64)) {
			return nil, errIntOverflow
		}
		return p, nil
	case "/":
		if r == 0 {
			return nil, fmt.Errorf("division by zero")
		}
		return float64(l) / float64(r), nil
	case "//":
		if r == 0 {
			return nil, fmt.Errorf("division by zero")
		}
		if l == math.MinInt64 && r == -1 {
			return nil, errIntOverflow
		}
		q := l / r
		if (l%r != 0) && ((l < 0) != (r < 0)) {
			q--
		}
		return q, nil
	case "%":
		if r == 0 {
			return nil, fmt.Errorf("modulo by zero")
		}
		return pyMod(l, r), nil
	}
	return nil, fmt.Errorf("unsupported operand types for %s: int and int", op)
}

func floatArith(op string, l, r float64) (value, error) {
	switch op {
	case "+":
		return l + r, nil
	case "-":
		return l - r, nil
	case "*":
		return l * r, nil
	case "/":
		if r == 0 {
			return nil, fmt.Errorf("division by zero")
		}
		return l / r, nil
	case "//", "%":
		if r == 0 {
			return nil, fmt.Errorf("division by zero")
		}
		q := math.Floor(l / r)
		if op == "//" {
			return q, nil
		}
		return l - q*r, nil
	}
	return nil, fmt.Errorf("unsupported operand types for %s: float and float", op)
}

// seqArith is + on two strings, lists or tuples and string repetition (str * int).
func seqArith(op string, l, r value) (value, error) {
	switch op {
	case "+":
		switch lv := l.(type) {
		case string:
			if rv, ok := r.(string); ok {
				if len(lv)+len(rv) > maxStringLen {
					return nil, errTooLarge
				}
				return lv + rv, nil
			}
		case []value:
			if rv, ok := r.([]value); ok {
				if len(lv)+len(rv) > maxListLen {
					return nil, fmt.Errorf("list longer than %d items", maxListLen)
				}
				return append(append([]value(nil), lv...), rv...), nil
			}
		case tuple:
			if rv, ok := r.(tuple); ok {
				if len(lv)+len(rv) > maxListLen {
					return nil, fmt.Errorf("tuple longer than %d items", maxListLen)
				}
				return append(append(tuple(nil), lv...), rv...), nil
			}
		}
	case "*":
		if s, ok := l.(string); ok {
			if n, ok := numeric(r).(int64); ok {
				if n < 0 {
					n = 0
				}
				if len(s) > 0 && n > int64(maxStringLen/len(s)) { // n·len(s) could overflow
					return nil, errTooLarge
				}
				return strings.Repeat(s, int(n)), nil
			}
		}
	case "%":
		if _, ok := l.(string); ok {
			return nil, fmt.Errorf("unsupported: %% string formatting")
		}
	}
	return nil, fmt.Errorf("unsupported operand types for %s: %s and %s", op, typeName(l), typeName(r))
}

func pyMod(a, b int64) int64 {
	m := a % b
	if m != 0 && (m < 0) != (b < 0) {
		m += b
	}
	return m
}

// numeric returns int64/float64 for numbers and bools (Python bool is an int), else nil.
func numeric(v value) value {
	switch v := v.(type) {
	case bool:
		if v {
			return int64(1)
		}
		return int64(0)
	case int64, float64:
		return v
	}
	return nil
}

func toFloat(v value) float64 {
	if i, ok := v.(int64); ok {
		return float64(i)
	}
	return v.(float64)
}

func truthy(v value) bool {
	switch v := v.(type) {
	case nil, undefined:
		return false
	case bool:
		return v
	case int64:
		return v != 0
	case float64:
		return v != 0
	case string:
		return v != ""
	case []value:
		return len(v) > 0
	case tuple:
		return len(v) > 0
	case *dict:
		return len(v.keys) > 0
	}
	return true
}

// pyEqual is Python's ==. Values nested deeper than maxValueDepth compare unequal (Python would raise
// RecursionError); the limit keeps a crafted template from overflowing the stack.
func pyEqual(a, b value) bool { return pyEqualDepth(a, b, 0) }

func pyEqualDepth(a, b value, depth int) bool {
	if depth > maxValueDepth {
		return false
	}
	if an, bn := numeric(a), numeric(b); an != nil && bn != nil {
		c, ordered := numCompare(an, bn)
		return ordered && c == 0
	}
	switch av := a.(type) {
	case nil:
		return b == nil
	case undefined:
		_, ok := b.(undefined)
		return ok
	case string:
		bv, ok := b.(string)
		return ok && av == bv
	case []value:
		bv, ok := b.([]value)
		return ok && listEqual(av, bv, depth)
	case tuple:
		bv, ok := b.(tuple)
		return ok && listEqual(av, bv, depth)
	case *dict:
		bv, ok := b.(*dict)
		if !ok || len(av.keys) != len(bv.keys) {
			return false
		}
		for k, v := range av.m {
			w, ok := bv.m[k]
			if !ok || !pyEqualDepth(v, w, depth+1) {
				return false
			}
		}
		return true
	case bool, int64, float64:
		return false // b is not a number
	case *namespace, *loopObj:
		return a == b
	}
	return false
}

func listEqual(a, b []value, depth int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !pyEqualDepth(a[i], b[i], depth+1) {
			return false
		}
	}
	return true
}

// pyCompare is Python's < > <= >= on numbers and on strings.
func pyCompare(a, b value, op string) (bool, error) {
	var c int
	if an, bn := numeric(a), numeric(b); an != nil && bn != nil {
		var ordered bool
		if c, ordered = numCompare(an, bn); !ordered {
			return false, nil // NaN
		}
	} else if as, ok := a.(string); ok {
		bs, ok := b.(string)
		if !ok {
			return false, fmt.Errorf("'%s' not supported between %s and %s", op, typeName(a), typeName(b))
		}
		c = strings.Compare(as, bs)
	} else {
		_, al := a.([]value)
		_, bl := b.([]value)
		_, at := a.(tuple)
		_, bt := b.(tuple)
		if (al && bl) || (at && bt) {
			return false, fmt.Errorf("unsupported: ordering of %ss", typeName(a))
		}
		return false, fmt.Errorf("'%s' not supported between %s and %s", op, typeName(a), typeName(b))
	}
	switch op {
	case "<":
		return c < 0, nil
	case ">":
		return c > 0, nil
	case "<=":
		return c <= 0, nil
	}
	return c >= 0, nil
}

// numCompare compares two numbers (int64 or float64) exactly, as Python compares ints with floats; ordered is
// false when one is NaN.
func numCompare(a, b value) (c int, ordered bool) {
	ai, aInt := a.(int64)
	bi, bInt := b.(int64)
	if aInt && bInt {
		return cmp.Compare(ai, bi), true
	}
	af, bf := toFloat(a), toFloat(b)
	switch {
	case math.IsNaN(af) || math.IsNaN(bf):
		return 0, false
	case aInt:
		return new(big.Float).SetInt64(ai).Cmp(big.NewFloat(bf)), true
	case bInt:
		return big.NewFloat(af).Cmp(new(big.Float).SetInt64(bi)), true
	}
	return cmp.Compare(af, bf), true
}

func pyIn(x, container value) (bool, error) {
	switch c := container.(type) {
	case string:
		xs, ok := x.(string)
		if !ok {
			return false, fmt.Errorf("'in <string>' requires string as left operand, not %s", typeName(x))
		}
		return strings.Contains(c, xs), nil
	case []value, tuple:
		if f, ok := x.(float64); ok && math.IsNaN(f) {
			return false, fmt.Errorf("unsupported: NaN in a sequence (Python compares identity first)")
		}
		for _, it := range asList(c) {
			if pyEqual(x, it) {
				return true, nil
			}
		}
		return false, nil
	case *dict:
		xs, ok := x.(string)
		if !ok {
			return false, nil
		}
		_, has := c.m[xs]
		return has, nil
	case undefined:
		return false, nil
	}
	return false, fmt.Errorf("argument of type %s is not iterable", typeName(container))
}

func iterate(v value) ([]value, error) {
	switch v := v.(type) {
	case undefined:
		return nil, nil
	case []value:
		return v, nil
	case tuple:
		return v, nil
	case string:
		out := make([]value, 0, len(v))
		for _, r := range v {
			out = append(out, string(r))
		}
		return out, nil
	case *dict:
		out := make([]value, len(v.keys))
		for i, k := range v.keys {
			out[i] = k
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s is not iterable", typeName(v))
}

func typeName(v value) string {
	switch v.(type) {
	case nil:
		return "none"
	case undefined:
		return "undefined"
	case bool:
		return "bool"
	case int64:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []value:
		return "list"
	case tuple:
		return "tuple"
	case *dict:
		return "dict"
	case *namespace:
		return "namespace"
	case *loopObj:
		return "loop"
	case funcValue, methodValue:
		return "function"
	}
	return fmt.Sprintf("%T", v)
}

// ---- Python str(), repr() and json.dumps(ensure_ascii=False) ----

func pyStr(v value) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case undefined:
		return "", nil
	case []value, tuple, *dict, nil, bool, int64, float64:
		return pyRepr(v)
	}
	return "", fmt.Errorf("unsupported: converting a %s to a string", typeName(v))
}

func pyRepr(v value) (string, error) { return pyReprDepth(v, 0) }

// pyReprDepth is pyRepr for a value nested depth levels deep.
func pyReprDepth(v value, depth int) (string, error) {
	if depth > maxValueDepth {
		return "", fmt.Errorf("value nested deeper than %d levels", maxValueDepth)
	}
	switch v := v.(type) {
	case nil:
		return "None", nil
	case bool:
		if v {
			return "True", nil
		}
		return "False", nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case float64:
		return pyFloat(v, false), nil
	case string:
		return pyReprString(v), nil
	case []value, tuple:
		items := asList(v)
		parts := make([]string, len(items))
		total := 0
		for i, it := range items {
			s, err := pyReprDepth(it, depth+1)
			if err != nil {
				return "", err
			}
			parts[i] = s
			if total += len(s) + 2; total > maxStringLen {
				return "", errTooLarge
			}
		}
		if _, ok := v.(tuple); ok {
			if len(parts) == 1 {
				return "(" + parts[0] + ",)", nil
			}
			return "(" + strings.Join(parts, ", ") + ")", nil
		}
		return "[" + strings.Join(parts, ", ") + "]", nil
	case *dict:
		parts := make([]string, len(v.keys))
		total := 0
		for i, k := range v.keys {
			s, err := pyReprDepth(v.m[k], depth+1)
			if err != nil {
				return "", err
			}
			parts[i] = pyReprString(k) + ": " + s
			if total += len(parts[i]) + 2; total > maxStringLen {
				return "", errTooLarge
			}
		}
		return "{" + strings.Join(parts, ", ") + "}", nil
	}
	return "", fmt.Errorf("unsupported: repr of a %s", typeName(v))
}

func pyFloat(f float64, jsonStyle bool) string {
	switch {
	case math.IsNaN(f):
		if jsonStyle {
			return "NaN"
		}
		return "nan"
	case math.IsInf(f, 1):
		if jsonStyle {
			return "Infinity"
		}
		return "inf"
	case math.IsInf(f, -1):
		if jsonStyle {
			return "-Infinity"
		}
		return "-inf"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if exp < -4 || exp >= 16 {
		return e
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

func pyReprString(s string) string {
	q := byte('\'')
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		q = '"'
	}
	var b strings.Builder
	b.WriteByte(q)
	for _, r := range s {
		switch {
		case r == rune(q) || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && !unicode.IsPrint(r)):
			switch {
			case r < 0x100:
				fmt.Fprintf(&b, `\x%02x`, r)
			case r < 0x10000:
				fmt.Fprintf(&b, `\u%04x`, r)
			default:
				fmt.Fprintf(&b, `\U%08x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(q)
	return b.String()
}

// writeJSON writes v as Python's json.dumps(v, ensure_ascii=False, indent=indent) would
// (indent < 0: no indentation, separators ", " and ": ").
func writeJSON(b *strings.Builder, v value, indent, level int) error {
	if level > maxValueDepth {
		return fmt.Errorf("value nested deeper than %d levels", maxValueDepth)
	}
	if b.Len() > maxStringLen {
		return errTooLarge
	}
	nl := func(lvl int) {
		if indent >= 0 {
			b.WriteByte('\n')
			b.WriteString(strings.Repeat(" ", indent*lvl))
		}
	}
	itemSep := ", "
	if indent >= 0 {
		itemSep = ","
	}
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case float64:
		b.WriteString(pyFloat(v, true))
	case string:
		writeJSONString(b, v)
	case []value, tuple:
		items := asList(v)
		if len(items) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				b.WriteString(itemSep)
			}
			nl(level + 1)
			if err := writeJSON(b, it, indent, level+1); err != nil {
				return err
			}
		}
		nl(level)
		b.WriteByte(']')
	case *dict:
		if len(v.keys) == 0 {
			b.WriteString("{}")
			return nil
		}
		b.WriteByte('{')
		for i, k := range v.keys {
			if i > 0 {
				b.WriteString(itemSep)
			}
			nl(level + 1)
			writeJSONString(b, k)
			b.WriteString(": ")
			if err := writeJSON(b, v.m[k], indent, level+1); err != nil {
				return err
			}
		}
		nl(level)
		b.WriteByte('}')
	default:
		return fmt.Errorf("object of type %s is not JSON serializable", typeName(v))
	}
	return nil
}

func writeJSONString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}
