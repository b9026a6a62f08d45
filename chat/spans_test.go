package chat

import "testing"

func TestAssistantSpans(t *testing.T) {
	msgs := []Message{{Role: "user", Content: "Fix it?"}, {Role: "assistant", Content: "Beep boop!"}, {Role: "user", Content: "Thanks"}, {Role: "assistant", Content: "Bye."}}
	cases := []struct {
		name, tmpl string
		want       []string // the text of the spans; nil: not found
	}{
		{"incremental renders", "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}" +
			"{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
			[]string{"Beep boop!<|im_end|>\n", "Bye.<|im_end|>\n"}},
		{"generation blocks", "{% for m in messages %}[{{ m.role }}]{% if m.role == 'assistant' %}{% generation %}{{ m.content }}.{% endgeneration %}" +
			"{% else %}{{ m.content }}{% endif %}{% endfor %}",
			[]string{"Beep boop!.", "Bye.."}},
		{"turns out of order", "{% for m in messages | reverse %}{{ m.content }};{% endfor %}", nil},
	}
	for _, c := range cases {
		tmpl, err := Parse(c.tmpl)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		text, spans, ok, err := tmpl.AssistantSpans(msgs, Options{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if ok != (c.want != nil) || (ok && len(spans) != len(c.want)) {
			t.Errorf("%s: ok %v, spans %v", c.name, ok, spans)
			continue
		}
		for i, s := range spans {
			if text[s[0]:s[1]] != c.want[i] {
				t.Errorf("%s: span %d is %q, want %q", c.name, i, text[s[0]:s[1]], c.want[i])
			}
		}
	}
	if _, _, _, err := mustParse(t, "{{ raise_exception('no') }}").AssistantSpans(msgs, Options{}); err == nil {
		t.Error("a template that raises: no error")
	}
}

func mustParse(t *testing.T, src string) *Template {
	t.Helper()
	tmpl, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}
