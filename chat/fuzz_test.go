package chat

// Fuzz target for the template interpreter (templates come from model files). The seed corpus runs as an
// ordinary test; `go test -run XXX -fuzz FuzzChatTemplate ./chat/` explores further.

import (
	"strings"
	"testing"
)

// fuzzSeeds seed FuzzChatTemplate; the conformance test renders them with Jinja2 as well.
var fuzzSeeds = []string{
	"{% for m in messages %}<|{{ m.role }}|>\n{{ m.content | trim }}{% if not loop.last %}\n{% endif %}{% endfor %}" +
		"{% if add_generation_prompt %}<|assistant|>{% endif %}",
	"{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + eos_token }}{% endgeneration %}" +
		"{% else %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endif %}{% endfor %}",
	"{% set ns = namespace(x=[]) %}{% for i in range(3) %}{% set ns.x = ns.x + [i] %}{% endfor %}{{ ns.x | tojson(indent=2) }}",
	"{{ ('ab' * 3)[1:4] ~ (messages | length) }}{{ {'a': [1, 2.5, none, true]} | tojson }}{{ 'x'.join(['a', 'b']) }}",
	"{{ raise_exception('no') }}",
	"{% if messages[0].role == 'system' %}{{ messages[0].content.strip().upper() }}{% endif %}{{ 7 // 2 }}{{ -3 % 2 }}",
}

// FuzzChatTemplate parses and renders arbitrary templates: errors are fine, panics, hangs and runaway memory
// are not (the render limits in eval.go bound time and size).
func FuzzChatTemplate(f *testing.F) {
	for _, src := range fuzzSeeds {
		f.Add(src, "hello {{ world }}")
	}
	f.Fuzz(func(t *testing.T, src, content string) {
		tmpl, err := Parse(src)
		if err != nil {
			return
		}
		msgs := []Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: content}, {Role: "assistant", Content: "ok"}}
		out, spans, err := tmpl.render(msgs, Options{AddGenerationPrompt: true, BOSToken: "<s>", EOSToken: "</s>",
			Extra: map[string]any{"enable_thinking": false}})
		if err != nil {
			return
		}
		if len(out) > maxRenderOutput+maxStringLen {
			t.Fatalf("rendered %d bytes", len(out))
		}
		for _, s := range spans {
			if s[0] < 0 || s[0] > s[1] || s[1] > len(out) {
				t.Fatalf("span %v in %d bytes", s, len(out))
			}
		}
	})
}

// TestChatTemplateLimits checks that hostile templates fail with an error instead of exhausting memory, time or
// the stack.
func TestChatTemplateLimits(t *testing.T) {
	deep := strings.Repeat("(", 100000) + "1" + strings.Repeat(")", 100000)
	for name, src := range map[string]string{
		"repetition overflow":     "{{ 'abcd' * 4611686018427387904 }}",
		"repetition too large":    "{{ 'a' * 100000000 }}",
		"doubling concatenation":  "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
		"doubling lists":          "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
		"output flood":            "{% for i in range(1000000) %}{{ 'x' * 1000 }}{% endfor %}",
		"replace blow-up":         "{% set ns = namespace(s='aaaa') %}{% for i in range(30) %}{% set ns.s = ns.s.replace('a', 'aaaa') %}{% endfor %}",
		"deeply nested parens":    "{{ " + deep + " }}",
		"deeply nested not":       "{{ " + strings.Repeat("not ", 100000) + "true }}",
		"deeply nested minus":     "{{ " + strings.Repeat("-", 100000) + "1 }}",
		"deeply nested blocks":    strings.Repeat("{% if true %}", 100000) + strings.Repeat("{% endif %}", 100000),
		"deeply nested value":     "{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
		"deeply nested tojson":    "{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x | tojson }}",
		"huge tojson indent":      "{{ [[1]] | tojson(indent=1000000000000) }}",
		"runaway loop":            "{% for i in range(1000000000) %}{% endfor %}",
		"non-ASCII name":          "{{ café }}", // the lexer once looped forever on a name's non-ASCII byte
		"invalid UTF-8 in a name": "{{ me\xdbssages }}",
		"join blow-up":            "{% set ns = namespace(s='aaaaaaaa') %}{% for i in range(40) %}{% set ns.s = [ns.s, ns.s] | join('') %}{% endfor %}",
	} {
		t.Run(name, func(t *testing.T) {
			tmpl, err := Parse(src)
			if err == nil {
				_, err = tmpl.Render(threeTurns, Options{})
			}
			if err == nil {
				t.Fatal("no error")
			}
			t.Logf("%.200v", err)
		})
	}
}
