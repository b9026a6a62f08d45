package finetune

// Fuzz targets for the JSONL data reader and the chat-template interpreter (templates come from model files).
// The seed corpora run as ordinary tests; `go test -fuzz FuzzParseJSONL ./finetune` explores further.

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// sourceRe is the file:line every record and every line error must carry.
var sourceRe = regexp.MustCompile(`^fuzz\.jsonl:([0-9]+)$`)

// escapedFFFD matches a JSON escape of U+FFFD.
var escapedFFFD = regexp.MustCompile(`(?i)\\ufffd`)

func FuzzParseJSONL(f *testing.F) {
	for _, s := range []string{
		`{"text": "Once upon a time"}` + "\n" + `{"prompt": "Q: 2+2?", "completion": " 4"}` + "\n",
		`{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}`,
		"\xef\xbb\xbf{\"text\": \"bom\"}\r\n\r\n   \n{\"text\": \"\\ud83d\\ude00 ok\"}",
		`{"text": "a", "text": "b"}`,
		`{"text": 3}`,
		`{"text": "\ud800"}`,
		"{\"text\": \"\xff\"}",
		`[1, 2]`,
		`{"prompt": "", "completion": "x"}`,
		"",
	} {
		f.Add([]byte(s))
	}
	if data, err := os.ReadFile(filepath.Join("testdata", "mixed.jsonl")); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := ParseJSONL(bytes.NewReader(data), "fuzz.jsonl")
		lines := bytes.Count(data, []byte("\n")) + 1
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "fuzz.jsonl:") {
				t.Fatalf("error does not name the file: %v", err)
			}
			if m := regexp.MustCompile(`^fuzz\.jsonl:([0-9]+): `).FindStringSubmatch(msg); m != nil {
				if n, _ := strconv.Atoi(m[1]); n < 1 || n > lines {
					t.Fatalf("error names line %d of %d: %v", n, lines, err)
				}
			} else if !strings.HasPrefix(msg, "fuzz.jsonl: ") {
				t.Fatalf("error names neither the file nor a line: %v", err)
			}
			return
		}
		if len(recs) == 0 {
			t.Fatal("no records and no error")
		}
		// Invalid UTF-8 and lone surrogate escapes are refused, so every U+FFFD in the records must be in the
		// file, literally or escaped; a decoder that silently replaced bad bytes would add some.
		last, replaced := 0, 0
		for _, r := range recs {
			m := sourceRe.FindStringSubmatch(r.Source)
			if m == nil {
				t.Fatalf("record source %q", r.Source)
			}
			n, _ := strconv.Atoi(m[1])
			if n <= last || n > lines {
				t.Fatalf("record from line %d after line %d (%d lines)", n, last, lines)
			}
			last = n
			var texts []string
			switch r.Kind {
			case TextRecord:
				texts = []string{r.Text}
				if strings.TrimSpace(r.Text) == "" {
					t.Fatalf("%s: empty text accepted", r.Source)
				}
			case PromptCompletionRecord:
				texts = []string{r.Prompt, r.Completion}
				if r.Prompt == "" || strings.TrimSpace(r.Completion) == "" {
					t.Fatalf("%s: empty prompt or completion accepted", r.Source)
				}
			case ChatRecord:
				if len(r.Messages) == 0 {
					t.Fatalf("%s: empty conversation accepted", r.Source)
				}
				for _, msg := range r.Messages {
					texts = append(texts, msg.Role, msg.Content)
				}
			default:
				t.Fatalf("%s: kind %v", r.Source, r.Kind)
			}
			for _, s := range texts {
				replaced += strings.Count(s, "\uFFFD")
			}
		}
		if inFile := bytes.Count(data, []byte("\uFFFD")) + len(escapedFFFD.FindAll(data, -1)); replaced > inFile {
			t.Fatalf("%d U+FFFD in the records, %d in the file", replaced, inFile)
		}
	})
}

// FuzzChatTemplate parses and renders arbitrary templates: errors are fine, panics, hangs and runaway memory
// are not (the render limits in chat_eval.go bound time and size).
func FuzzChatTemplate(f *testing.F) {
	for _, src := range []string{
		"{% for m in messages %}<|{{ m.role }}|>\n{{ m.content | trim }}{% if not loop.last %}\n{% endif %}{% endfor %}" +
			"{% if add_generation_prompt %}<|assistant|>{% endif %}",
		"{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + eos_token }}{% endgeneration %}" +
			"{% else %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endif %}{% endfor %}",
		"{% set ns = namespace(x=[]) %}{% for i in range(3) %}{% set ns.x = ns.x + [i] %}{% endfor %}{{ ns.x | tojson(indent=2) }}",
		"{{ ('ab' * 3)[1:4] ~ (messages | length) }}{{ {'a': [1, 2.5, none, true]} | tojson }}{{ 'x'.join(['a', 'b']) }}",
		"{{ raise_exception('no') }}",
		"{% if messages[0].role == 'system' %}{{ messages[0].content.strip().upper() }}{% endif %}{{ 7 // 2 }}{{ -3 % 2 }}",
	} {
		f.Add(src, "hello {{ world }}")
	}
	f.Fuzz(func(t *testing.T, src, content string) {
		tmpl, err := ParseChatTemplate(src)
		if err != nil {
			return
		}
		msgs := []Message{{"system", "be brief"}, {"user", content}, {"assistant", "ok"}}
		out, spans, err := tmpl.render(msgs, ChatRenderOptions{AddGenerationPrompt: true, BOSToken: "<s>", EOSToken: "</s>",
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
			tmpl, err := ParseChatTemplate(src)
			if err == nil {
				_, err = tmpl.Render(threeTurns, ChatRenderOptions{})
			}
			if err == nil {
				t.Fatal("no error")
			}
			t.Logf("%.200v", err)
		})
	}
}
