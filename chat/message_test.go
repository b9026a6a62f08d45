package chat

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// Parsed messages reach the template exactly as given: every key, in its order, null content, parts and tool
// calls (arguments as an object keep their key order and number types).
func TestParsedMessagesAreWhatTheTemplateSees(t *testing.T) {
	src := `[{"content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}], "role": "user", "name": "alice"},
		{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
			"function": {"name": "get_weather", "arguments": {"z": 1, "a": 2.5, "m": [true, null]}}}]},
		{"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "21"},
		{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}]`
	msgs, err := ParseMessages([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	wantText := []string{"Hi there", "", "21", ""}
	wantCalls := []int{0, 1, 0, 1}
	for i, m := range msgs {
		if m.Content != wantText[i] || m.ToolCalls() != wantCalls[i] {
			t.Errorf("messages[%d]: content %q, %d tool calls; want %q, %d", i, m.Content, m.ToolCalls(), wantText[i], wantCalls[i])
		}
	}
	tmpl, err := Parse(`{{ messages | tojson }}|{% for m in messages %}{{ m.keys() | list }}{{ m.content is none }}{{ m.content is defined }};{% endfor %}`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tmpl.Render(msgs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}], "role": "user", "name": "alice"}, ` +
		`{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"z": 1, "a": 2.5, "m": [true, null]}}}]}, ` +
		`{"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "21"}, ` +
		`{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}]|` +
		`['content', 'role', 'name']FalseTrue;['role', 'content', 'tool_calls']TrueTrue;['role', 'tool_call_id', 'name', 'content']FalseTrue;['role', 'tool_calls']FalseFalse;`
	if got != want {
		t.Fatalf("the template saw\n%s\nwant\n%s", got, want)
	}
	// JSON round trip keeps the message as given.
	data, err := json.Marshal(msgs)
	if err != nil {
		t.Fatal(err)
	}
	var back []Message
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	again, _ := tmpl.Render(back, Options{})
	if again != want {
		t.Fatalf("after a JSON round trip the template saw\n%s", again)
	}
	// Messages built in Go are {"role", "content"}.
	if got, _ := tmpl.Render([]Message{{Role: "user", Content: "x"}}, Options{}); got != `[{"role": "user", "content": "x"}]|['role', 'content']FalseTrue;` {
		t.Fatalf("a Go message renders as %s", got)
	}
}

func TestParseMessagesErrorsNameThePlace(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{`{"role": "user"}`, "messages must be an array, not an object"},
		{`["hi"]`, "messages[0]: must be an object, not a string"},
		{`[{"content": "a"}]`, `messages[0]: missing "role"`},
		{`[{"role": "", "content": "a"}]`, "messages[0].role: must be a non-empty string, not a string"},
		{`[{"role": "user", "content": "a", "weight": 1}]`, `messages[0]: unknown key "weight"`},
		{`[{"role": "user", "content": "a", "role": "x"}]`, `duplicate key "role"`},
		{`[{"role": "user"}]`, `messages[0]: missing "content" (only an assistant message with tool_calls may have none)`},
		{`[{"role": "user", "content": null}]`, "messages[0].content: is null"},
		{`[{"role": "assistant", "content": null, "tool_calls": []}]`, "messages[0].content: is null"},
		{`[{"role": "user", "content": 3}]`, "messages[0].content: must be a string or a list of"},
		{`[{"role": "user", "content": []}]`, "messages[0].content: is an empty list of parts"},
		{`[{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}]`,
			`messages[1].content[1]: part type "image_url" is not supported: saddle trains on text`},
		{`[{"role": "user", "content": [{"type": "image"}]}]`, `messages[0].content[0]: part type "image" is not supported`},
		{`[{"role": "user", "content": [{"text": "a"}]}]`, `messages[0].content[0]: "type" must be a string, not missing`},
		{`[{"role": "user", "content": [{"type": "text"}]}]`, "messages[0].content[0].text: must be a string, not missing"},
		{`[{"role": "user", "content": [{"type": "text", "text": "a", "cache": 1}]}]`, `messages[0].content[0]: unknown key "cache"`},
		{`[{"role": "user", "content": "a", "name": 5}]`, "messages[0].name: must be a non-empty string, not a number"},
		{`[{"role": "user", "content": "a", "tool_call_id": "c"}]`, `messages[0]: "tool_call_id" belongs on a "tool" message, not on a "user" one`},
		{`[{"role": "user", "content": "a", "tool_calls": []}]`, `messages[0]: "tool_calls" belongs on an "assistant" message`},
		{`[{"role": "assistant", "content": "a", "tool_calls": {}}]`, "messages[0].tool_calls: must be a list, not an object"},
		{`[{"role": "assistant", "tool_calls": [{"type": "function", "name": "f", "arguments": {}}]}]`, `messages[0].tool_calls[0]: unknown key "name"`},
		{`[{"role": "assistant", "tool_calls": [{"type": "code", "function": {"name": "f", "arguments": {}}}]}]`, `messages[0].tool_calls[0].type: must be "function"`},
		{`[{"role": "assistant", "tool_calls": [{"type": "function"}]}]`, "messages[0].tool_calls[0].function: must be an object"},
		{`[{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]`, "messages[0].tool_calls[0].function.name: must be a non-empty string, not missing"},
		{`[{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]`, "messages[0].tool_calls[0].function.arguments: must be an object or a JSON string, not missing"},
		{`[{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]`, "messages[0].tool_calls[0].function.arguments: is a string but not JSON"},
		{`[{"role": "assistant", "tool_calls": [{"id": 1, "function": {"name": "f", "arguments": {}}}]}]`, "messages[0].tool_calls[0].id: must be a string"},
		{`[{"role": "user", "content": "a", "n": 99999999999999999999}]`, "does not fit in 64 bits"},
	} {
		_, err := ParseMessages([]byte(c.src))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.src, err, c.want)
		}
	}
}

// A tool-calling assistant turn is an assistant turn: its span covers the call the template renders; the tool's
// result is not in any span.
func TestAssistantSpansCoverToolCalls(t *testing.T) {
	tmpl, err := Parse(`{% for m in messages %}<|{{ m.role }}|>{% if m.content is string %}{{ m.content }}{% endif %}` +
		`{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}({{ c.function.arguments | tojson }})</call>{% endfor %}<|end|>{% endfor %}` +
		`{% if add_generation_prompt %}<|assistant|>{% endif %}`)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := ParseMessages([]byte(`[{"role": "user", "content": "Weather?"},
		{"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
		{"role": "tool", "content": "TOOL-RESULT"},
		{"role": "assistant", "content": "Cold."}]`))
	if err != nil {
		t.Fatal(err)
	}
	text, spans, ok, err := tmpl.AssistantSpans(msgs, Options{})
	if err != nil || !ok || len(spans) != 2 {
		t.Fatalf("spans %v ok %v err %v in %q", spans, ok, err, text)
	}
	first, second := text[spans[0][0]:spans[0][1]], text[spans[1][0]:spans[1][1]]
	if first != `<call>get_weather({"city": "Oslo"})</call><|end|>` || second != "Cold.<|end|>" {
		t.Fatalf("spans %q and %q in %q", first, second, text)
	}
}

// With qwen3's real template, a tool-calling turn's span holds the rendered call and its end-of-turn token, and
// no tool result is inside a span.
func TestAssistantSpansOfToolCallsWithQwen3(t *testing.T) {
	tmpl, err := Parse(testenv.ChatTemplate(t, "qwen3"))
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := ParseMessages([]byte(`[{"role": "user", "content": "Weather in Oslo?"},
		{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
		{"role": "tool", "content": "TOOL-RESULT"},
		{"role": "assistant", "content": "Cold."}]`))
	if err != nil {
		t.Fatal(err)
	}
	text, spans, ok, err := tmpl.AssistantSpans(msgs, Options{Extra: map[string]any{"tools": []any{}}})
	if err != nil || !ok || len(spans) != 2 {
		t.Fatalf("spans %v ok %v err %v in %q", spans, ok, err, text)
	}
	call := text[spans[0][0]:spans[0][1]]
	if !strings.Contains(call, `<tool_call>`) || !strings.Contains(call, `{"name": "get_weather", "arguments": {"city": "Oslo"}}`) || !strings.HasSuffix(strings.TrimSpace(call), "<|im_end|>") {
		t.Fatalf("tool-call span %q in %q", call, text)
	}
	for _, s := range spans {
		if strings.Contains(text[s[0]:s[1]], "TOOL-RESULT") || strings.Contains(text[s[0]:s[1]], "Weather in Oslo") {
			t.Fatalf("span %q holds another turn", text[s[0]:s[1]])
		}
	}
	if !strings.Contains(text[spans[1][0]:spans[1][1]], "Cold.") {
		t.Fatalf("final span %q", text[spans[1][0]:spans[1][1]])
	}
}
