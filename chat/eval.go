package chat

// Evaluator for the Jinja2 subset: Python-like values, operators, filters, tests and methods.
// Where Python/Jinja semantics would need more than this subset, evaluation fails with an
// "unsupported" error rather than guessing.

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

type value = any

// Value kinds: nil (None), undefined, bool, int64, float64, string, []value (list), tuple, *dict,
// *namespace, *loopObj, funcValue, methodValue.
type (
	undefined struct{ name string }
	tuple     []value
	dict      struct {
		keys []string
		m    map[string]value
	}
	namespace struct{ d *dict }
	loopObj   struct {
		items  []value
		index0 int
	}
	funcValue   struct{ name string }
	methodValue struct {
		recv value
		name string
	}
)

func newDict() *dict { return &dict{m: map[string]value{}} }

func (d *dict) set(k string, v value) {
	if _, ok := d.m[k]; !ok {
		d.keys = append(d.keys, k)
	}
	d.m[k] = v
}

// raiseError is what raise_exception() produces.
type raiseError struct{ msg string }

func (e *raiseError) Error() string { return "template raised an exception: " + e.msg }

var (
	errBreak    = errors.New("break outside a loop")
	errContinue = errors.New("continue outside a loop")
)

// ---- frames and rendering ----

type tmplFrame struct {
	vars   map[string]value
	parent *tmplFrame
}

func (f *tmplFrame) lookup(name string) (value, bool) {
	for ; f != nil; f = f.parent {
		if v, ok := f.vars[name]; ok {
			return v, true
		}
	}
	return nil, false
}

type renderer struct {
	out   strings.Builder
	spans [][2]int // byte ranges of {% generation %} blocks
	steps int
}

// Limits that keep a hostile template (it comes from a model file) from exhausting time, memory or the stack.
// Real chat templates stay far below all of them.
const (
	maxRenderSteps  = 2_000_000 // statements executed: guards against runaway loops (range(10**9))
	maxRenderOutput = 64 << 20  // bytes of rendered text
	maxStringLen    = 16 << 20  // bytes of any string a template builds (concatenation, repetition, join, replace)
	maxListLen      = 1 << 20   // items of any list a template builds by concatenation
	maxValueDepth   = 200       // nesting of lists/dicts that repr, tojson and == walk (Python stops near 1000 frames)
	maxJSONIndent   = 64
)

// errTooLarge reports a value past maxStringLen.
var errTooLarge = fmt.Errorf("string longer than %d bytes", maxStringLen)

func (r *renderer) exec(nodes []tnode, f *tmplFrame) error {
	for _, n := range nodes {
		r.steps++
		if r.steps > maxRenderSteps {
			return fmt.Errorf("template too expensive to render")
		}
		if r.out.Len() > maxRenderOutput {
			return fmt.Errorf("rendered text longer than %d bytes", maxRenderOutput)
		}
		switch n := n.(type) {
		case *textNode:
			r.out.WriteString(n.s)
		case *outputNode:
			v, err := evalExpr(n.e, f)
			if err == nil {
				var s string
				if s, err = pyStr(v); err == nil {
					r.out.WriteString(s)
				}
			}
			if err != nil {
				return lineErr(n.line, err)
			}
		case *ifNode:
			done := false
			for i, c := range n.conds {
				v, err := evalExpr(c, f)
				if err != nil {
					return lineErr(n.line, err)
				}
				if truthy(v) {
					if err := r.exec(n.bodies[i], f); err != nil {
						return err
					}
					done = true
					break
				}
			}
			if !done {
				if err := r.exec(n.els, f); err != nil {
					return err
				}
			}
		case *forNode:
			if err := r.execFor(n, f); err != nil {
				return err
			}
		case *setNode:
			if err := r.execSet(n, f); err != nil {
				return err
			}
		case *generationNode:
			start := r.out.Len()
			if err := r.exec(n.body, f); err != nil {
				return err
			}
			r.spans = append(r.spans, [2]int{start, r.out.Len()})
		case *loopCtlNode:
			if n.brk {
				return errBreak
			}
			return errContinue
		default:
			return fmt.Errorf("internal error: unknown node %T", n)
		}
	}
	return nil
}

func lineErr(line int, err error) error {
	var re *raiseError
	if errors.As(err, &re) {
		return err
	}
	return fmt.Errorf("line %d: %w", line, err)
}

func (r *renderer) execFor(n *forNode, f *tmplFrame) error {
	it, err := evalExpr(n.iter, f)
	if err != nil {
		return lineErr(n.line, err)
	}
	items, err := iterate(it)
	if err != nil {
		return lineErr(n.line, err)
	}
	if len(items) == 0 {
		return r.exec(n.els, f)
	}
	for i, item := range items {
		// Each iteration gets a fresh scope, as in Jinja: a set in one iteration is not seen by the next.
		lf := &tmplFrame{vars: map[string]value{"loop": &loopObj{items: items, index0: i}}, parent: f}
		if len(n.vars) == 1 {
			lf.vars[n.vars[0]] = item
		} else {
			parts, err := iterate(item)
			if err != nil || len(parts) != len(n.vars) {
				return lineErr(n.line, fmt.Errorf("cannot unpack %s into %d loop variables", typeName(item), len(n.vars)))
			}
			for k, name := range n.vars {
				lf.vars[name] = parts[k]
			}
		}
		err := r.exec(n.body, lf)
		if err == errBreak {
			break
		}
		if err != nil && err != errContinue {
			return err
		}
	}
	return nil
}

func (r *renderer) execSet(n *setNode, f *tmplFrame) error {
	var v value
	if n.body != nil || n.e == nil {
		sub := &renderer{steps: r.steps}
		if err := sub.exec(n.body, f); err != nil {
			return err
		}
		r.steps = sub.steps
		v = sub.out.String()
	} else {
		var err error
		if v, err = evalExpr(n.e, f); err != nil {
			return lineErr(n.line, err)
		}
	}
	if n.attr == "" {
		f.vars[n.name] = v
		return nil
	}
	obj, _ := f.lookup(n.name)
	ns, ok := obj.(*namespace)
	if !ok {
		return lineErr(n.line, fmt.Errorf("cannot assign attribute on non-namespace object %s", n.name))
	}
	ns.d.set(n.attr, v)
	return nil
}

// ---- expression evaluation ----

func evalExpr(e expr, f *tmplFrame) (value, error) {
	switch e := e.(type) {
	case *litExpr:
		return e.v, nil
	case *nameExpr:
		if v, ok := f.lookup(e.name); ok {
			return v, nil
		}
		if knownFuncs[e.name] {
			return funcValue{e.name}, nil
		}
		return undefined{e.name}, nil
	case *attrExpr:
		obj, err := evalExpr(e.obj, f)
		if err != nil {
			return nil, err
		}
		return getAttr(obj, e.name)
	case *indexExpr:
		obj, err := evalExpr(e.obj, f)
		if err != nil {
			return nil, err
		}
		idx, err := evalExpr(e.idx, f)
		if err != nil {
			return nil, err
		}
		return getItem(obj, idx)
	case *sliceExpr:
		return evalSlice(e, f)
	case *callExpr:
		return evalCall(e, f)
	case *filterExpr:
		x, err := evalExpr(e.x, f)
		if err != nil {
			return nil, err
		}
		args, kw, err := evalArgs(e.args, e.kwargs, f)
		if err != nil {
			return nil, err
		}
		return applyFilter(e.name, x, args, kw)
	case *testExpr:
		x, err := evalExpr(e.x, f)
		if err != nil {
			return nil, err
		}
		args, _, err := evalArgs(e.args, nil, f)
		if err != nil {
			return nil, err
		}
		ok, err := applyTest(e.name, x, args)
		return ok != e.neg, err
	case *unaryExpr:
		x, err := evalExpr(e.x, f)
		if err != nil {
			return nil, err
		}
		switch e.op {
		case "not":
			return !truthy(x), nil
		case "-":
			switch v := numeric(x).(type) {
			case int64:
				return -v, nil
			case float64:
				return -v, nil
			}
		case "+":
			if n := numeric(x); n != nil {
				return n, nil
			}
		}
		return nil, fmt.Errorf("bad operand type for unary %s: %s", e.op, typeName(x))
	case *binExpr:
		return evalBin(e, f)
	case *condExpr:
		c, err := evalExpr(e.cond, f)
		if err != nil {
			return nil, err
		}
		if truthy(c) {
			return evalExpr(e.a, f)
		}
		if e.b == nil {
			return undefined{"conditional expression"}, nil
		}
		return evalExpr(e.b, f)
	case *listExpr, *tupleExpr:
		var items []expr
		if l, ok := e.(*listExpr); ok {
			items = l.items
		} else {
			items = e.(*tupleExpr).items
		}
		out := make([]value, len(items))
		for i, it := range items {
			v, err := evalExpr(it, f)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		if _, ok := e.(*tupleExpr); ok {
			return tuple(out), nil
		}
		return out, nil
	case *dictExpr:
		d := newDict()
		for i := range e.keys {
			k, err := evalExpr(e.keys[i], f)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("unsupported: dict literal with a non-string key")
			}
			v, err := evalExpr(e.vals[i], f)
			if err != nil {
				return nil, err
			}
			d.set(ks, v)
		}
		return d, nil
	}
	return nil, fmt.Errorf("internal error: unknown expression %T", e)
}

func evalArgs(args []expr, kwargs []kwarg, f *tmplFrame) ([]value, map[string]value, error) {
	out := make([]value, len(args))
	for i, a := range args {
		v, err := evalExpr(a, f)
		if err != nil {
			return nil, nil, err
		}
		out[i] = v
	}
	var kw map[string]value
	if len(kwargs) > 0 {
		kw = map[string]value{}
		for _, k := range kwargs {
			v, err := evalExpr(k.v, f)
			if err != nil {
				return nil, nil, err
			}
			kw[k.name] = v
		}
	}
	return out, kw, nil
}

func undefErr(u undefined) error { return fmt.Errorf("%q is undefined", u.name) }

func getAttr(obj value, name string) (value, error) {
	switch o := obj.(type) {
	case undefined:
		return nil, undefErr(o)
	case *dict:
		switch name {
		case "get", "items", "keys", "values":
			return methodValue{o, name}, nil
		}
		if v, ok := o.m[name]; ok {
			return v, nil
		}
	case *namespace:
		if v, ok := o.d.m[name]; ok {
			return v, nil
		}
	case *loopObj:
		n := len(o.items)
		switch name {
		case "index0":
			return int64(o.index0), nil
		case "index":
			return int64(o.index0 + 1), nil
		case "revindex":
			return int64(n - o.index0), nil
		case "revindex0":
			return int64(n - o.index0 - 1), nil
		case "first":
			return o.index0 == 0, nil
		case "last":
			return o.index0 == n-1, nil
		case "length":
			return int64(n), nil
		case "previtem":
			if o.index0 > 0 {
				return o.items[o.index0-1], nil
			}
		case "nextitem":
			if o.index0 < n-1 {
				return o.items[o.index0+1], nil
			}
		default:
			return nil, fmt.Errorf("unsupported: loop.%s", name)
		}
	case string:
		switch name {
		case "startswith", "endswith", "strip", "lstrip", "rstrip", "split", "upper", "lower", "replace", "find", "join":
			return methodValue{o, name}, nil
		}
	}
	return undefined{name}, nil
}

func getItem(obj, idx value) (value, error) {
	switch o := obj.(type) {
	case undefined:
		return nil, undefErr(o)
	case *dict:
		if k, ok := idx.(string); ok {
			if v, ok := o.m[k]; ok {
				return v, nil
			}
			return getAttr(obj, k)
		}
	case []value, tuple, string:
		i, ok := idx.(int64)
		if !ok {
			if s, ok := idx.(string); ok {
				return getAttr(obj, s)
			}
			if _, ok := idx.(bool); !ok {
				return nil, fmt.Errorf("indices must be integers, not %s", typeName(idx))
			}
			i = numeric(idx).(int64)
		}
		if s, ok := o.(string); ok {
			rs := []rune(s)
			if i < 0 {
				i += int64(len(rs))
			}
			if i < 0 || i >= int64(len(rs)) {
				return undefined{"string index"}, nil
			}
			return string(rs[i]), nil
		}
		items := asList(o)
		if i < 0 {
			i += int64(len(items))
		}
		if i < 0 || i >= int64(len(items)) {
			return undefined{"list index"}, nil
		}
		return items[i], nil
	default:
		if s, ok := idx.(string); ok {
			return getAttr(obj, s)
		}
	}
	return undefined{"item"}, nil
}

func asList(v value) []value {
	switch v := v.(type) {
	case []value:
		return v
	case tuple:
		return v
	}
	return nil
}

func evalSlice(e *sliceExpr, f *tmplFrame) (value, error) {
	obj, err := evalExpr(e.obj, f)
	if err != nil {
		return nil, err
	}
	var parts [3]*int64
	for k, pe := range []expr{e.lo, e.hi, e.step} {
		if pe == nil {
			continue
		}
		v, err := evalExpr(pe, f)
		if err != nil {
			return nil, err
		}
		switch n := numeric(v).(type) {
		case int64:
			parts[k] = &n
		default:
			if v != nil {
				return nil, fmt.Errorf("slice indices must be integers or None, not %s", typeName(v))
			}
		}
	}
	var n int
	var rs []rune
	switch o := obj.(type) {
	case undefined:
		return nil, undefErr(o)
	case string:
		rs = []rune(o)
		n = len(rs)
	case []value, tuple:
		n = len(asList(o))
	default:
		return nil, fmt.Errorf("%s is not subscriptable", typeName(obj))
	}
	idx, err := sliceIndices(n, parts[0], parts[1], parts[2])
	if err != nil {
		return nil, err
	}
	switch o := obj.(type) {
	case string:
		out := make([]rune, len(idx))
		for k, i := range idx {
			out[k] = rs[i]
		}
		return string(out), nil
	case tuple:
		out := make(tuple, len(idx))
		for k, i := range idx {
			out[k] = o[i]
		}
		return out, nil
	default:
		items := asList(o)
		out := make([]value, len(idx))
		for k, i := range idx {
			out[k] = items[i]
		}
		return out, nil
	}
}

// sliceIndices follows Python's slice.indices.
func sliceIndices(n int, lo, hi, step *int64) ([]int, error) {
	st := int64(1)
	if step != nil {
		st = *step
	}
	if st == 0 {
		return nil, fmt.Errorf("slice step cannot be zero")
	}
	N := int64(n)
	clamp := func(p *int64, def int64) int64 {
		if p == nil {
			return def
		}
		x := *p
		if x < 0 {
			x += N
			if x < 0 {
				if st < 0 {
					return -1
				}
				return 0
			}
		}
		if x >= N {
			if st < 0 {
				return N - 1
			}
			return N
		}
		return x
	}
	var out []int
	if st > 0 {
		for i := clamp(lo, 0); i < clamp(hi, N); i += st {
			out = append(out, int(i))
		}
	} else {
		for i := clamp(lo, N-1); i > clamp(hi, -1); i += st {
			out = append(out, int(i))
		}
	}
	return out, nil
}

func evalCall(e *callExpr, f *tmplFrame) (value, error) {
	args, kw, err := evalArgs(e.args, e.kwargs, f)
	if err != nil {
		return nil, err
	}
	var fnv value
	switch fn := e.fn.(type) {
	case *nameExpr:
		if fnv, err = evalExpr(fn, f); err != nil {
			return nil, err
		}
	case *attrExpr:
		obj, err := evalExpr(fn.obj, f)
		if err != nil {
			return nil, err
		}
		if fnv, err = getAttr(obj, fn.name); err != nil {
			return nil, err
		}
	}
	switch fv := fnv.(type) {
	case funcValue:
		return callFunc(fv.name, args, kw)
	case methodValue:
		return callMethod(fv.recv, fv.name, args, kw)
	case undefined:
		return nil, fmt.Errorf("%q is undefined (not callable)", fv.name)
	}
	return nil, fmt.Errorf("%s is not callable", typeName(fnv))
}

func callFunc(name string, args []value, kw map[string]value) (value, error) {
	switch name {
	case "raise_exception":
		msg := ""
		if len(args) > 0 {
			msg, _ = pyStr(args[0])
		}
		return nil, &raiseError{msg}
	case "namespace":
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
	case "range":
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
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported: function %s()", name)
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

func callStrMethod(s, name string, args []value, kw map[string]value) (value, error) {
	strArg := func(i int, kwName string) (string, bool, error) {
		v := argAt(args, kw, i, kwName, nil)
		if v == nil {
			return "", false, nil
		}
		a, ok := v.(string)
		if !ok {
			return "", false, fmt.Errorf("str.%s argument must be a string, not %s", name, typeName(v))
		}
		return a, true, nil
	}
	switch name {
	case "startswith", "endswith":
		if err := checkArgs("str."+name, args, kw, 1); err != nil {
			return nil, err
		}
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
	case "strip", "lstrip", "rstrip":
		if err := checkArgs("str."+name, args, kw, 1); err != nil {
			return nil, err
		}
		chars, has, err := strArg(0, "")
		if err != nil {
			return nil, err
		}
		return pyStrip(s, name, chars, has), nil
	case "split":
		if err := checkArgs("str.split", args, kw, 2, "sep", "maxsplit"); err != nil {
			return nil, err
		}
		sep, has, err := strArg(0, "sep")
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
	case "upper", "lower":
		if err := checkArgs("str."+name, args, kw, 0); err != nil {
			return nil, err
		}
		return pyCase(s, name == "upper")
	case "replace":
		if err := checkArgs("str.replace", args, kw, 3); err != nil {
			return nil, err
		}
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
	case "find":
		if err := checkArgs("str.find", args, kw, 1); err != nil {
			return nil, err
		}
		sub, has, err := strArg(0, "")
		if err != nil || !has {
			return nil, fmt.Errorf("str.find takes one string argument")
		}
		i := strings.Index(s, sub)
		if i < 0 {
			return int64(-1), nil
		}
		return int64(utf8.RuneCountInString(s[:i])), nil
	case "join":
		if err := checkArgs("str.join", args, kw, 1); err != nil {
			return nil, err
		}
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
	return nil, fmt.Errorf("unsupported: method str.%s", name)
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

func applyFilter(name string, x value, args []value, kw map[string]value) (value, error) {
	if u, ok := x.(undefined); ok {
		switch name {
		case "default", "d", "length", "count", "string", "trim", "upper", "lower", "list", "join", "first", "last", "reverse":
			// Undefined behaves like an empty value for these (Jinja's default Undefined).
		default:
			return nil, undefErr(u)
		}
	}
	switch name {
	case "trim":
		if err := checkArgs("trim", args, kw, 1, "chars"); err != nil {
			return nil, err
		}
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
	case "length", "count":
		if err := checkArgs(name, args, kw, 0); err != nil {
			return nil, err
		}
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
	case "tojson":
		// transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) is
		// json.dumps with these arguments; ensure_ascii must stay false, separators and sort_keys unset.
		if err := checkArgs("tojson", args, kw, 2, "ensure_ascii", "indent"); err != nil {
			return nil, err
		}
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
	case "default", "d":
		if err := checkArgs(name, args, kw, 2, "default_value", "boolean"); err != nil {
			return nil, err
		}
		def := argAt(args, kw, 0, "default_value", "")
		boolean := truthy(argAt(args, kw, 1, "boolean", false))
		if _, ok := x.(undefined); ok || (boolean && !truthy(x)) {
			return def, nil
		}
		return x, nil
	case "upper", "lower":
		if err := checkArgs(name, args, kw, 0); err != nil {
			return nil, err
		}
		s, err := pyStr(x)
		if err != nil {
			return nil, err
		}
		return pyCase(s, name == "upper")
	case "string":
		if err := checkArgs(name, args, kw, 0); err != nil {
			return nil, err
		}
		return pyStr(x)
	case "int":
		if err := checkArgs(name, args, kw, 1, "default"); err != nil {
			return nil, err
		}
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
	case "first", "last", "list", "reverse":
		if err := checkArgs(name, args, kw, 0); err != nil {
			return nil, err
		}
		var items []value
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
	case "join":
		if err := checkArgs(name, args, kw, 1, "d"); err != nil {
			return nil, err
		}
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
	case "replace":
		if err := checkArgs(name, args, kw, 3); err != nil {
			return nil, err
		}
		s, err := pyStr(x)
		if err != nil {
			return nil, err
		}
		return callStrMethod(s, "replace", args, nil)
	case "items":
		if err := checkArgs(name, args, kw, 0); err != nil {
			return nil, err
		}
		d, ok := x.(*dict)
		if !ok {
			return nil, fmt.Errorf("items filter needs a mapping, not %s", typeName(x))
		}
		return callMethod(d, "items", nil, nil)
	}
	return nil, fmt.Errorf("unsupported: filter %q", name)
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

// ---- operators ----

func evalBin(e *binExpr, f *tmplFrame) (value, error) {
	l, err := evalExpr(e.l, f)
	if err != nil {
		return nil, err
	}
	switch e.op {
	case "and":
		if !truthy(l) {
			return l, nil
		}
		return evalExpr(e.r, f)
	case "or":
		if truthy(l) {
			return l, nil
		}
		return evalExpr(e.r, f)
	}
	r, err := evalExpr(e.r, f)
	if err != nil {
		return nil, err
	}
	switch e.op {
	case "==":
		return pyEqual(l, r), nil
	case "!=":
		return !pyEqual(l, r), nil
	case "in":
		return pyIn(l, r)
	case "not in":
		ok, err := pyIn(l, r)
		return !ok, err
	case "~":
		ls, err := pyStr(l)
		if err != nil {
			return nil, err
		}
		rs, err := pyStr(r)
		if err != nil {
			return nil, err
		}
		if len(ls)+len(rs) > maxStringLen {
			return nil, errTooLarge
		}
		return ls + rs, nil
	case "<", ">", "<=", ">=":
		c, err := pyCompare(l, r, e.op)
		if err != nil {
			return nil, err
		}
		switch e.op {
		case "<":
			return c < 0, nil
		case ">":
			return c > 0, nil
		case "<=":
			return c <= 0, nil
		}
		return c >= 0, nil
	}
	return arith(e.op, l, r)
}

func arith(op string, l, r value) (value, error) {
	if u, ok := l.(undefined); ok {
		return nil, undefErr(u)
	}
	if u, ok := r.(undefined); ok {
		return nil, undefErr(u)
	}
	ln, rn := numeric(l), numeric(r)
	if ln != nil && rn != nil {
		li, lInt := ln.(int64)
		ri, rInt := rn.(int64)
		if lInt && rInt {
			switch op {
			case "+":
				return li + ri, nil
			case "-":
				return li - ri, nil
			case "*":
				return li * ri, nil
			case "/":
				if ri == 0 {
					return nil, fmt.Errorf("division by zero")
				}
				return float64(li) / float64(ri), nil
			case "//":
				if ri == 0 {
					return nil, fmt.Errorf("division by zero")
				}
				q := li / ri
				if (li%ri != 0) && ((li < 0) != (ri < 0)) {
					q--
				}
				return q, nil
			case "%":
				if ri == 0 {
					return nil, fmt.Errorf("modulo by zero")
				}
				return pyMod(li, ri), nil
			}
		}
		lf, rf := toFloat(ln), toFloat(rn)
		switch op {
		case "+":
			return lf + rf, nil
		case "-":
			return lf - rf, nil
		case "*":
			return lf * rf, nil
		case "/":
			if rf == 0 {
				return nil, fmt.Errorf("division by zero")
			}
			return lf / rf, nil
		case "//", "%":
			if rf == 0 {
				return nil, fmt.Errorf("division by zero")
			}
			q := math.Floor(lf / rf)
			if op == "//" {
				return q, nil
			}
			return lf - q*rf, nil
		}
	}
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
			if n, ok := rn.(int64); ok {
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
		ai, aInt := an.(int64)
		bi, bInt := bn.(int64)
		if aInt && bInt {
			return ai == bi
		}
		return toFloat(an) == toFloat(bn)
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

func pyCompare(a, b value, op string) (int, error) {
	if an, bn := numeric(a), numeric(b); an != nil && bn != nil {
		af, bf := toFloat(an), toFloat(bn)
		ai, aInt := an.(int64)
		bi, bInt := bn.(int64)
		switch {
		case aInt && bInt && ai < bi, !(aInt && bInt) && af < bf:
			return -1, nil
		case aInt && bInt && ai > bi, !(aInt && bInt) && af > bf:
			return 1, nil
		}
		return 0, nil
	}
	if as, ok := a.(string); ok {
		if bs, ok := b.(string); ok {
			return strings.Compare(as, bs), nil
		}
	}
	return 0, fmt.Errorf("'%s' not supported between %s and %s", op, typeName(a), typeName(b))
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
