package chat

// The global functions, str and dict methods, filters and tests of the Jinja2 subset.

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ---- functions and methods ----

func callFunc(name string, args []value, kw map[string]value) (value, error) {
	switch name {
	case "raise_exception":
		msg := ""
		if len(args) > 0 {
			msg, _ = pyStr(args[0])
		}
		return nil, &raiseError{msg}
	case "namespace":
		return funcNamespace(args, kw)
	case "range":
		return funcRange(args, kw)
	}
	return nil, fmt.Errorf("unsupported: function %s()", name)
}

func funcNamespace(args []value, kw map[string]value) (value, error) {
	ns := &namespace{d: newDict()}
	if len(args) > 1 {
		return nil, fmt.Errorf("namespace() takes at most one positional argument")
	}
	if len(args) == 1 {
		d, ok := args[0].(*dict)
		if !ok {
			return nil, fmt.Errorf("unsupported: namespace(%s)", typeName(args[0]))
		}
		for _, k := range d.keys {
			ns.d.set(k, d.m[k])
		}
	}
	for _, k := range sortedKeys(kw) { // Python keeps keyword order; only lookups matter here
		ns.d.set(k, kw[k])
	}
	return ns, nil
}

func funcRange(args []value, kw map[string]value) (value, error) {
	if len(kw) > 0 || len(args) == 0 || len(args) > 3 {
		return nil, fmt.Errorf("range() takes 1 to 3 positional arguments")
	}
	var nums []int64
	for _, a := range args {
		n, ok := numeric(a).(int64)
		if !ok {
			return nil, fmt.Errorf("range() arguments must be integers, not %s", typeName(a))
		}
		nums = append(nums, n)
	}
	start, stop, step := int64(0), nums[0], int64(1)
	if len(nums) > 1 {
		start, stop = nums[0], nums[1]
	}
	if len(nums) > 2 {
		step = nums[2]
	}
	if step == 0 {
		return nil, fmt.Errorf("range() step must not be zero")
	}
	var out []value
	for i := start; (step > 0 && i < stop) || (step < 0 && i > stop); i += step {
		if len(out) >= 1_000_000 {
			return nil, fmt.Errorf("range() too long")
		}
		out = append(out, i)
		if (step > 0 && i > math.MaxInt64-step) || (step < 0 && i < math.MinInt64-step) {
			break // the next i is past stop
		}
	}
	return out, nil
}

func sortedKeys(m map[string]value) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// argAt returns positional argument i or keyword name, or def.
func argAt(args []value, kw map[string]value, i int, name string, def value) value {
	if i < len(args) {
		return args[i]
	}
	if v, ok := kw[name]; ok {
		return v
	}
	return def
}

func checkArgs(fn string, args []value, kw map[string]value, maxPos int, names ...string) error {
	if len(args) > maxPos {
		return fmt.Errorf("%s takes at most %d arguments (%d given)", fn, maxPos, len(args))
	}
	for k := range kw {
		ok := false
		for _, n := range names {
			ok = ok || n == k
		}
		if !ok {
			return fmt.Errorf("unsupported: keyword argument %q to %s", k, fn)
		}
	}
	return nil
}

func callMethod(recv value, name string, args []value, kw map[string]value) (value, error) {
	switch r := recv.(type) {
	case *dict:
		switch name {
		case "get":
			if err := checkArgs("dict.get", args, kw, 2); err != nil {
				return nil, err
			}
			if len(args) == 0 {
				return nil, fmt.Errorf("dict.get needs a key")
			}
			if k, ok := args[0].(string); ok {
				if v, ok := r.m[k]; ok {
					return v, nil
				}
			}
			return argAt(args, nil, 1, "", nil), nil
		case "items", "keys", "values":
			if err := checkArgs("dict."+name, args, kw, 0); err != nil {
				return nil, err
			}
			out := make([]value, len(r.keys))
			for i, k := range r.keys {
				switch name {
				case "items":
					out[i] = tuple{k, r.m[k]}
				case "keys":
					out[i] = k
				default:
					out[i] = r.m[k]
				}
			}
			return out, nil
		}
	case string:
		return callStrMethod(r, name, args, kw)
	}
	return nil, fmt.Errorf("unsupported: method %s on %s", name, typeName(recv))
}

// strMethods are the supported str methods: positional-argument limit, keyword arguments, implementation.
var strMethods = map[string]struct {
	maxPos   int
	keywords []string
	call     func(name, s string, args []value, kw map[string]value) (value, error)
}{
	"startswith": {1, nil, strStartsEndsWith},
	"endswith":   {1, nil, strStartsEndsWith},
	"strip":      {1, nil, strStrip},
	"lstrip":     {1, nil, strStrip},
	"rstrip":     {1, nil, strStrip},
	"split":      {2, []string{"sep", "maxsplit"}, strSplit},
	"upper":      {0, nil, strCase},
	"lower":      {0, nil, strCase},
	"replace":    {3, nil, strReplace},
	"find":       {1, nil, strFind},
	"join":       {1, nil, strJoin},
}

func callStrMethod(s, name string, args []value, kw map[string]value) (value, error) {
	m, ok := strMethods[name]
	if !ok {
		return nil, fmt.Errorf("unsupported: method str.%s", name)
	}
	if err := checkArgs("str."+name, args, kw, m.maxPos, m.keywords...); err != nil {
		return nil, err
	}
	return m.call(name, s, args, kw)
}

// strArg returns the string argument at position i (or keyword kwName); has is false when it is absent or None.
func strArg(method string, args []value, kw map[string]value, i int, kwName string) (a string, has bool, err error) {
	v := argAt(args, kw, i, kwName, nil)
	if v == nil {
		return "", false, nil
	}
	a, ok := v.(string)
	if !ok {
		return "", false, fmt.Errorf("str.%s argument must be a string, not %s", method, typeName(v))
	}
	return a, true, nil
}

func strStartsEndsWith(name, s string, args []value, _ map[string]value) (value, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("str.%s takes one argument", name)
	}
	var cands []string
	switch a := args[0].(type) {
	case string:
		cands = []string{a}
	case tuple, []value:
		for _, x := range asList(a) {
			xs, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("str.%s: tuple items must be strings", name)
			}
			cands = append(cands, xs)
		}
	default:
		return nil, fmt.Errorf("str.%s argument must be a string or tuple, not %s", name, typeName(a))
	}
	for _, c := range cands {
		if (name == "startswith" && strings.HasPrefix(s, c)) || (name == "endswith" && strings.HasSuffix(s, c)) {
			return true, nil
		}
	}
	return false, nil
}

func strStrip(name, s string, args []value, kw map[string]value) (value, error) {
	chars, has, err := strArg(name, args, kw, 0, "")
	if err != nil {
		return nil, err
	}
	return pyStrip(s, name, chars, has), nil
}

func strSplit(name, s string, args []value, kw map[string]value) (value, error) {
	sep, has, err := strArg(name, args, kw, 0, "sep")
	if err != nil {
		return nil, err
	}
	maxsplit := int64(-1)
	if v := argAt(args, kw, 1, "maxsplit", nil); v != nil {
		m, ok := numeric(v).(int64)
		if !ok {
			return nil, fmt.Errorf("str.split maxsplit must be an integer")
		}
		maxsplit = m
	}
	var parts []string
	if !has {
		parts = pySplitWhitespace(s, maxsplit)
	} else {
		if sep == "" {
			return nil, fmt.Errorf("str.split: empty separator")
		}
		parts = strings.SplitN(s, sep, int(maxsplit)+1)
		if maxsplit < 0 {
			parts = strings.Split(s, sep)
		}
	}
	out := make([]value, len(parts))
	for i, p := range parts {
		out[i] = p
	}
	return out, nil
}

func strCase(name, s string, _ []value, _ map[string]value) (value, error) {
	return pyCase(s, name == "upper")
}

func strReplace(_, s string, args []value, _ map[string]value) (value, error) {
	if len(args) < 2 {
		return nil, fmt.Errorf("str.replace takes 2 or 3 arguments")
	}
	old, ok1 := args[0].(string)
	nw, ok2 := args[1].(string)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("str.replace arguments must be strings")
	}
	n := -1
	if len(args) == 3 {
		c, ok := numeric(args[2]).(int64)
		if !ok {
			return nil, fmt.Errorf("str.replace count must be an integer")
		}
		n = int(c)
	}
	if old == "" {
		return nil, fmt.Errorf("unsupported: str.replace with an empty pattern")
	}
	if len(nw) > len(old) {
		k := strings.Count(s, old)
		if n >= 0 {
			k = min(k, n)
		}
		if k > 0 && (len(nw)-len(old) > maxStringLen || len(s)+k*(len(nw)-len(old)) > maxStringLen) {
			return nil, errTooLarge
		}
	}
	return strings.Replace(s, old, nw, n), nil
}

func strFind(name, s string, args []value, kw map[string]value) (value, error) {
	sub, has, err := strArg(name, args, kw, 0, "")
	if err != nil || !has {
		return nil, fmt.Errorf("str.find takes one string argument")
	}
	i := strings.Index(s, sub)
	if i < 0 {
		return int64(-1), nil
	}
	return int64(utf8.RuneCountInString(s[:i])), nil
}

func strJoin(_, s string, args []value, _ map[string]value) (value, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("str.join takes one argument")
	}
	items, err := iterate(args[0])
	if err != nil {
		return nil, err
	}
	parts := make([]string, len(items))
	total := 0
	for i, it := range items {
		p, ok := it.(string)
		if !ok {
			return nil, fmt.Errorf("str.join: item %d is %s, not a string", i, typeName(it))
		}
		parts[i] = p
		if total += len(p) + len(s); total > maxStringLen {
			return nil, errTooLarge
		}
	}
	return strings.Join(parts, s), nil
}

func pyStrip(s, which, chars string, has bool) string {
	cut := pyIsSpace
	if has {
		cut = func(r rune) bool { return strings.ContainsRune(chars, r) }
	}
	if which != "rstrip" {
		s = strings.TrimLeftFunc(s, cut)
	}
	if which != "lstrip" {
		s = strings.TrimRightFunc(s, cut)
	}
	return s
}

func pySplitWhitespace(s string, maxsplit int64) []string {
	var out []string
	for {
		s = strings.TrimLeftFunc(s, pyIsSpace)
		if s == "" {
			return out
		}
		if maxsplit >= 0 && int64(len(out)) == maxsplit {
			return append(out, s)
		}
		i := strings.IndexFunc(s, pyIsSpace)
		if i < 0 {
			return append(out, s)
		}
		out = append(out, s[:i])
		s = s[i:]
	}
}

// pyCase is str.upper/lower; runes whose Python (full) case mapping differs from Go's simple
// mapping are refused rather than converted differently.
func pyCase(s string, upper bool) (string, error) {
	for _, r := range s {
		special := r == 0x130 || (upper && (r == 0xDF || r == 0x149 || r == 0x1F0 || r == 0x390 || r == 0x3B0 ||
			r == 0x587 || (r >= 0x1E96 && r <= 0x1E9A) || (r >= 0x1F50 && r <= 0x1FFF) || (r >= 0xFB00 && r <= 0xFB17)))
		if special {
			return "", fmt.Errorf("unsupported: case conversion of %q", r)
		}
	}
	if upper {
		return strings.ToUpper(s), nil
	}
	return strings.ToLower(s), nil
}

// ---- filters and tests ----

// filterSpec describes a supported filter: its arguments besides the filtered value, and whether an undefined
// value acts as an empty one (Jinja's default Undefined) or is an error.
type filterSpec struct {
	maxPos      int
	keywords    []string
	undefinedOK bool
	apply       func(name string, x value, args []value, kw map[string]value) (value, error)
}

// filters are the supported filters; the parser refuses any other name.
var filters = map[string]filterSpec{
	"trim":    {1, []string{"chars"}, true, filterTrim},
	"length":  {0, nil, true, filterLength},
	"count":   {0, nil, true, filterLength},
	"tojson":  {2, []string{"ensure_ascii", "indent"}, false, filterToJSON},
	"default": {2, []string{"default_value", "boolean"}, true, filterDefault},
	"d":       {2, []string{"default_value", "boolean"}, true, filterDefault},
	"upper":   {0, nil, true, filterCase},
	"lower":   {0, nil, true, filterCase},
	"string":  {0, nil, true, filterString},
	"int":     {1, []string{"default"}, false, filterInt},
	"first":   {0, nil, true, filterSequence},
	"last":    {0, nil, true, filterSequence},
	"list":    {0, nil, true, filterSequence},
	"reverse": {0, nil, true, filterSequence},
	"join":    {1, []string{"d"}, true, filterJoin},
	"replace": {3, nil, false, filterReplace},
	"items":   {0, nil, false, filterItems},
}

func applyFilter(name string, x value, args []value, kw map[string]value) (value, error) {
	spec, ok := filters[name]
	if !ok {
		return nil, fmt.Errorf("unsupported: filter %q", name)
	}
	if u, ok := x.(undefined); ok && !spec.undefinedOK {
		return nil, undefErr(u)
	}
	if err := checkArgs(name, args, kw, spec.maxPos, spec.keywords...); err != nil {
		return nil, err
	}
	return spec.apply(name, x, args, kw)
}

func filterTrim(_ string, x value, args []value, kw map[string]value) (value, error) {
	s, err := pyStr(x)
	if err != nil {
		return nil, err
	}
	c := argAt(args, kw, 0, "chars", nil)
	if c == nil {
		return pyStrip(s, "strip", "", false), nil
	}
	cs, ok := c.(string)
	if !ok {
		return nil, fmt.Errorf("trim chars must be a string")
	}
	return pyStrip(s, "strip", cs, true), nil
}

func filterLength(_ string, x value, _ []value, _ map[string]value) (value, error) {
	switch v := x.(type) {
	case undefined:
		return int64(0), nil
	case string:
		return int64(utf8.RuneCountInString(v)), nil
	case []value, tuple:
		return int64(len(asList(v))), nil
	case *dict:
		return int64(len(v.keys)), nil
	}
	return nil, fmt.Errorf("object of type %s has no len()", typeName(x))
}

// filterToJSON is transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False),
// json.dumps with these arguments; ensure_ascii must stay false, separators and sort_keys unset.
func filterToJSON(_ string, x value, args []value, kw map[string]value) (value, error) {
	if truthy(argAt(args, kw, 0, "ensure_ascii", false)) {
		return nil, fmt.Errorf("unsupported: tojson with ensure_ascii")
	}
	indent := -1
	if v := argAt(args, kw, 1, "indent", nil); v != nil {
		n, ok := numeric(v).(int64)
		if !ok {
			return nil, fmt.Errorf("unsupported: tojson indent of type %s", typeName(v))
		}
		if n > maxJSONIndent {
			return nil, fmt.Errorf("unsupported: tojson indent %d (at most %d)", n, maxJSONIndent)
		}
		indent = int(max(n, 0)) // Python indents by " " * n, which is "" for n < 0
	}
	var b strings.Builder
	if err := writeJSON(&b, x, indent, 0); err != nil {
		return nil, err
	}
	return b.String(), nil
}

func filterDefault(_ string, x value, args []value, kw map[string]value) (value, error) {
	def := argAt(args, kw, 0, "default_value", "")
	boolean := truthy(argAt(args, kw, 1, "boolean", false))
	if _, ok := x.(undefined); ok || (boolean && !truthy(x)) {
		return def, nil
	}
	return x, nil
}

func filterCase(name string, x value, _ []value, _ map[string]value) (value, error) {
	s, err := pyStr(x)
	if err != nil {
		return nil, err
	}
	return pyCase(s, name == "upper")
}

func filterString(_ string, x value, _ []value, _ map[string]value) (value, error) { return pyStr(x) }

func filterInt(_ string, x value, args []value, kw map[string]value) (value, error) {
	def := argAt(args, kw, 0, "default", int64(0))
	switch v := x.(type) {
	case bool, int64:
		return numeric(v), nil
	case float64:
		return floatToInt(v, def)
	case string:
		return stringToInt(v, def)
	}
	return def, nil
}

// filterSequence is first, last, list and reverse.
func filterSequence(name string, x value, _ []value, _ map[string]value) (value, error) {
	if s, ok := x.(string); ok && name == "reverse" {
		rs := []rune(s)
		for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
			rs[i], rs[j] = rs[j], rs[i]
		}
		return string(rs), nil
	}
	items, err := iterate(x)
	if err != nil {
		return nil, err
	}
	switch name {
	case "first", "last":
		if len(items) == 0 {
			return undefined{name + " of empty sequence"}, nil
		}
		if name == "first" {
			return items[0], nil
		}
		return items[len(items)-1], nil
	case "reverse":
		out := make([]value, len(items))
		for i, it := range items {
			out[len(items)-1-i] = it
		}
		return out, nil
	}
	return append([]value(nil), items...), nil
}

func filterJoin(_ string, x value, args []value, kw map[string]value) (value, error) {
	sepv := argAt(args, kw, 0, "d", "")
	sep, ok := sepv.(string)
	if !ok {
		return nil, fmt.Errorf("join separator must be a string")
	}
	items, err := iterate(x)
	if err != nil {
		return nil, err
	}
	parts := make([]string, len(items))
	total := 0
	for i, it := range items {
		if parts[i], err = pyStr(it); err != nil {
			return nil, err
		}
		if total += len(parts[i]) + len(sep); total > maxStringLen {
			return nil, errTooLarge
		}
	}
	return strings.Join(parts, sep), nil
}

func filterReplace(_ string, x value, args []value, _ map[string]value) (value, error) {
	s, err := pyStr(x)
	if err != nil {
		return nil, err
	}
	return callStrMethod(s, "replace", args, nil)
}

func filterItems(_ string, x value, _ []value, _ map[string]value) (value, error) {
	d, ok := x.(*dict)
	if !ok {
		return nil, fmt.Errorf("items filter needs a mapping, not %s", typeName(x))
	}
	return callMethod(d, "items", nil, nil)
}

// Python's int() and float() syntax for strings (ASCII digits; underscores only between digits).
var (
	pyIntRe    = regexp.MustCompile(`^[+-]?[0-9]+(_[0-9]+)*$`)
	pyFloatRe  = regexp.MustCompile(`^[+-]?([0-9]+(_[0-9]+)*(\.([0-9]+(_[0-9]+)*)?)?|\.[0-9]+(_[0-9]+)*)([eE][+-]?[0-9]+(_[0-9]+)*)?$`)
	pyInfNaNRe = regexp.MustCompile(`(?i)^[+-]?(inf|infinity|nan)$`)
)

// stringToInt is Jinja's int filter on a string: int(s), else int(float(s)), else def.
func stringToInt(s string, def value) (value, error) {
	t := strings.TrimFunc(s, pyIsSpace)
	for _, r := range t {
		if r >= utf8.RuneSelf && unicode.IsDigit(r) {
			return nil, fmt.Errorf("unsupported: int filter on non-ASCII digits")
		}
	}
	switch {
	case pyIntRe.MatchString(t):
		n, err := strconv.ParseInt(strings.ReplaceAll(t, "_", ""), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("unsupported: int filter on an integer beyond 64 bits")
		}
		return n, nil
	case pyFloatRe.MatchString(t):
		f, _ := strconv.ParseFloat(strings.ReplaceAll(t, "_", ""), 64) // ±Inf when too large, as in Python
		return floatToInt(f, def)
	case pyInfNaNRe.MatchString(t):
		if strings.HasSuffix(strings.ToLower(t), "nan") {
			return def, nil
		}
		return floatToInt(math.Inf(1), def)
	}
	return def, nil
}

// floatToInt is Python's int(f) as the int filter uses it: NaN gives def, infinity raises.
func floatToInt(f float64, def value) (value, error) {
	switch {
	case math.IsNaN(f):
		return def, nil
	case math.IsInf(f, 0):
		return nil, fmt.Errorf("cannot convert float infinity to integer")
	case math.Abs(f) >= 1<<63:
		return nil, fmt.Errorf("unsupported: int filter on a number beyond 64 bits")
	}
	return int64(f), nil
}

func applyTest(name string, x value, args []value) (bool, error) {
	want := map[string]int{"divisibleby": 1, "eq": 1, "equalto": 1, "ne": 1, "in": 1}[name]
	if len(args) != want {
		return false, fmt.Errorf("test %q takes %d argument(s), got %d", name, want, len(args))
	}
	_, isUndef := x.(undefined)
	switch name {
	case "defined":
		return !isUndef, nil
	case "undefined":
		return isUndef, nil
	case "none":
		return x == nil, nil
	case "string":
		_, ok := x.(string)
		return ok, nil
	case "number":
		switch x.(type) {
		case bool, int64, float64:
			return true, nil
		}
		return false, nil
	case "integer":
		_, ok := x.(int64)
		return ok, nil
	case "float":
		_, ok := x.(float64)
		return ok, nil
	case "boolean":
		_, ok := x.(bool)
		return ok, nil
	case "true":
		return x == true, nil
	case "false":
		return x == false, nil
	case "mapping":
		_, ok := x.(*dict)
		return ok, nil
	case "iterable", "sequence":
		switch x.(type) {
		case undefined, string, []value, tuple, *dict:
			return true, nil
		}
		return false, nil
	case "odd", "even", "divisibleby":
		n, ok := numeric(x).(int64)
		if !ok {
			return false, fmt.Errorf("test %q needs an integer, not %s", name, typeName(x))
		}
		switch name {
		case "odd":
			return pyMod(n, 2) == 1, nil
		case "even":
			return pyMod(n, 2) == 0, nil
		}
		d, ok := numeric(args[0]).(int64)
		if !ok || d == 0 {
			return false, fmt.Errorf("divisibleby needs a non-zero integer")
		}
		return pyMod(n, d) == 0, nil
	case "eq", "equalto":
		return pyEqual(x, args[0]), nil
	case "ne":
		return !pyEqual(x, args[0]), nil
	case "in":
		return pyIn(x, args[0])
	}
	return false, fmt.Errorf("unsupported: test %q", name)
}
