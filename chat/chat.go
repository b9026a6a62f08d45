// Package chat renders chat templates: the Jinja2 subset that Hugging Face's apply_chat_template needs for the
// chat_template strings of tokenizers (tokenizer_config.json, GGUF tokenizer.chat_template). In Hugging Face this
// is a tokenizer concern; here it is a pure function of a template and a conversation.
//
// It renders as transformers' apply_chat_template does (Jinja2 ImmutableSandboxedEnvironment with trim_blocks,
// lstrip_blocks, loopcontrols, a JSON tojson, raise_exception), for this subset:
//
//   - statements: if/elif/else, for (with else, loop.index/index0/revindex/revindex0/first/last/
//     length/previtem/nextitem, tuple unpacking), set (also ns.attr and block set), break,
//     continue, generation (its output spans are recorded), comments, whitespace control {%- -%}
//     {{- -}} and {%+ +%};
//   - expressions: literals (string, int, float, list, tuple, dict, true/false/none), attribute and
//     item access, slices [a:b:c], + - * / // % ~, comparisons, in / not in, and/or/not,
//     "a if c else b";
//   - filters: trim length count tojson default(d) upper lower string int first last join list
//     reverse replace items;
//   - tests: defined undefined none string number integer float boolean true false mapping
//     iterable sequence odd even divisibleby eq equalto ne in;
//   - methods: str.startswith/endswith/strip/lstrip/rstrip/split/upper/lower/replace/find/join,
//     dict.get/items/keys/values; functions raise_exception, namespace, range.
//
// Anything else (macros, include, filters like map/selectattr, strftime_now, ...) is rejected with
// an error naming the construct, when parsing if possible; it never renders something different.
//
// The conformance test (conformance_test.go) renders the chat templates of real tokenizers and the
// templates of this package's tests with Jinja2 itself (scripts/chat-oracle/render.py) and compares.
package chat

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Template is a parsed chat template.
type Template struct {
	nodes []tnode
}

// Parse parses a Jinja2 chat template; unsupported constructs are reported here.
func Parse(src string) (*Template, error) {
	nodes, err := parseTemplate(src)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	return &Template{nodes: nodes}, nil
}

// Options are the variables a template sees besides messages.
type Options struct {
	AddGenerationPrompt bool
	BOSToken, EOSToken  string // "" when the tokenizer has none: the variable is then undefined
	// Extra holds further variables (e.g. "enable_thinking", "tools"): nil, bool, int, int64,
	// float64, string, []any, map[string]any (keys sorted), []Message, json.RawMessage (decoded with its objects'
	// key order kept) or what DecodeJSON returns. "tools" is None unless set.
	Extra map[string]any
}

// Render renders the template for messages.
func (t *Template) Render(messages []Message, opts Options) (string, error) {
	s, _, err := t.render(messages, opts)
	return s, err
}

// render also returns the byte spans of {% generation %} blocks.
func (t *Template) render(messages []Message, opts Options) (string, [][2]int, error) {
	vars := map[string]value{
		"tools": nil, "documents": nil,
	}
	for k, v := range opts.Extra {
		cv, err := fromGo(v)
		if err != nil {
			return "", nil, fmt.Errorf("chat template: variable %q: %w", k, err)
		}
		vars[k] = cv
	}
	vars["messages"] = messagesValue(messages)
	vars["add_generation_prompt"] = opts.AddGenerationPrompt
	// As with transformers (the tokenizer's special_tokens_map), a token the tokenizer lacks stays undefined.
	if opts.BOSToken != "" {
		vars["bos_token"] = opts.BOSToken
	}
	if opts.EOSToken != "" {
		vars["eos_token"] = opts.EOSToken
	}
	r := &renderer{}
	err := r.exec(t.nodes, &tmplFrame{vars: vars})
	switch err {
	case nil:
	case errBreak, errContinue:
		return "", nil, fmt.Errorf("chat template: %v", err)
	default:
		return "", nil, fmt.Errorf("chat template: %w", err)
	}
	return r.out.String(), r.spans, nil
}

func messagesValue(msgs []Message) []value {
	out := make([]value, len(msgs))
	for i, m := range msgs {
		out[i] = m.templateValue()
	}
	return out
}

// fromGo converts JSON-like Go values to template values.
func fromGo(v any) (value, error) {
	switch v := v.(type) {
	case nil, bool, int64, float64, string, *dict:
		return v, nil
	case json.RawMessage:
		return decodeJSON(v)
	case int:
		return int64(v), nil
	case float32:
		return float64(v), nil
	case []Message:
		return messagesValue(v), nil
	case []string:
		out := make([]value, len(v))
		for i, s := range v {
			out[i] = s
		}
		return out, nil
	case []any:
		out := make([]value, len(v))
		for i, it := range v {
			c, err := fromGo(it)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		d := newDict()
		for _, k := range keys {
			c, err := fromGo(v[k])
			if err != nil {
				return nil, err
			}
			d.set(k, c)
		}
		return d, nil
	}
	return nil, fmt.Errorf("unsupported Go type %T", v)
}
