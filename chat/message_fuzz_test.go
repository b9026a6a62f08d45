package chat

import (
	"encoding/json"
	"testing"
)

// FuzzParseConversation: any input parses or is refused without a panic, and a parsed conversation written back
// as JSON parses to the same messages.
func FuzzParseConversation(f *testing.F) {
	for _, s := range []string{
		`[{"role": "user", "content": "hi"}]`,
		`{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"a\": [1, 2.5e3, null]}"}}]}], "tools": []}`,
		`[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]`,
		`[{"role": "tool", "tool_call_id": "x", "name": "n", "content": "\u00e9"}]`,
		`[{"role": "user", "content": "a", "content": "b"}]`, `[1e999]`, `{"messages": {}}`, `[`, `[] []`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConversation([]byte(s))
		if err != nil {
			return
		}
		data, err := json.Marshal(c.Messages)
		if err != nil {
			t.Fatalf("%q: marshal: %v", s, err)
		}
		back, err := ParseMessages(data)
		if err != nil {
			t.Fatalf("%q: written back as %s, which does not parse: %v", s, data, err)
		}
		again, _ := json.Marshal(back)
		if string(again) != string(data) {
			t.Fatalf("%q: round trip %s → %s", s, data, again)
		}
		for i, m := range back {
			if m.Role != c.Messages[i].Role || m.Content != c.Messages[i].Content || m.ToolCalls() != c.Messages[i].ToolCalls() {
				t.Fatalf("%q: message %d changed in the round trip", s, i)
			}
		}
	})
}
