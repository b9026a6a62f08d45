package chat

// Evaluator for the Jinja2 subset: values, scopes, statements and expressions. Functions, methods, filters and
// tests are in builtins.go, Python's operators, comparisons, str(), repr() and json.dumps in python.go. Where
// Python/Jinja semantics would need more than this subset, evaluation fails with an "unsupported" error rather
// than guessing.

import (
	"errors"
	"fmt"
	"math"
	"strings"
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
			if err := r.execIf(n, f); err != nil {
				return err
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

func (r *renderer) execIf(n *ifNode, f *tmplFrame) error {
	for i, c := range n.conds {
		v, err := evalExpr(c, f)
		if err != nil {
			return lineErr(n.line, err)
		}
		if truthy(v) {
			return r.exec(n.bodies[i], f)
		}
	}
	return r.exec(n.els, f)
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
		return evalName(e, f), nil
	case *attrExpr:
		obj, err := evalExpr(e.obj, f)
		if err != nil {
			return nil, err
		}
		return getAttr(obj, e.name)
	case *indexExpr:
		return evalIndex(e, f)
	case *sliceExpr:
		return evalSlice(e, f)
	case *callExpr:
		return evalCall(e, f)
	case *filterExpr:
		return evalFilter(e, f)
	case *testExpr:
		return evalTest(e, f)
	case *unaryExpr:
		return evalUnary(e, f)
	case *binExpr:
		return evalBin(e, f)
	case *condExpr:
		return evalCond(e, f)
	case *listExpr:
		return evalAll(e.items, f)
	case *tupleExpr:
		items, err := evalAll(e.items, f)
		return tuple(items), err
	case *dictExpr:
		return evalDict(e, f)
	}
	return nil, fmt.Errorf("internal error: unknown expression %T", e)
}

func evalName(e *nameExpr, f *tmplFrame) value {
	if v, ok := f.lookup(e.name); ok {
		return v
	}
	if knownFuncs[e.name] {
		return funcValue{e.name}
	}
	return undefined{e.name}
}

func evalIndex(e *indexExpr, f *tmplFrame) (value, error) {
	obj, err := evalExpr(e.obj, f)
	if err != nil {
		return nil, err
	}
	idx, err := evalExpr(e.idx, f)
	if err != nil {
		return nil, err
	}
	return getItem(obj, idx)
}

func evalFilter(e *filterExpr, f *tmplFrame) (value, error) {
	x, err := evalExpr(e.x, f)
	if err != nil {
		return nil, err
	}
	args, kw, err := evalArgs(e.args, e.kwargs, f)
	if err != nil {
		return nil, err
	}
	return applyFilter(e.name, x, args, kw)
}

func evalTest(e *testExpr, f *tmplFrame) (value, error) {
	x, err := evalExpr(e.x, f)
	if err != nil {
		return nil, err
	}
	args, err := evalAll(e.args, f)
	if err != nil {
		return nil, err
	}
	ok, err := applyTest(e.name, x, args)
	return ok != e.neg, err
}

func evalUnary(e *unaryExpr, f *tmplFrame) (value, error) {
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
			if v == math.MinInt64 {
				return nil, errIntOverflow
			}
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
}

func evalCond(e *condExpr, f *tmplFrame) (value, error) {
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
}

// evalAll evaluates exprs in order (list and tuple items, arguments).
func evalAll(exprs []expr, f *tmplFrame) ([]value, error) {
	out := make([]value, len(exprs))
	for i, it := range exprs {
		v, err := evalExpr(it, f)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func evalDict(e *dictExpr, f *tmplFrame) (value, error) {
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

func evalArgs(args []expr, kwargs []kwarg, f *tmplFrame) ([]value, map[string]value, error) {
	out, err := evalAll(args, f)
	if err != nil {
		return nil, nil, err
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
		if _, ok := strMethods[name]; ok {
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
		return pyCompare(l, r, e.op)
	}
	return arith(e.op, l, r)
}
