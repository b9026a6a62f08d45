package finetune

import (
	"strings"
	"testing"
)

// Chat data as people have it: tool calls (content null), tool results with tool_call_id and name, names and
// content as a list of text parts. A conversation whose only assistant turn calls a tool still has something to
// learn; an image part is refused naming file, line and part.
func TestParseJSONLChatWithToolsAndParts(t *testing.T) {
	data := `{"messages": [{"role": "user", "name": "alice", "content": [{"type": "text", "text": "Weather?"}]}, {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "id": "c1", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]}]}
{"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}, {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "-3"}, {"role": "assistant", "content": [{"type": "text", "text": "Cold."}]}]}
`
	recs, err := ParseJSONL(strings.NewReader(data), "chat.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Kind != ChatRecord || recs[1].Kind != ChatRecord {
		t.Fatalf("records %+v", recs)
	}
	if m := recs[0].Messages; m[0].Content != "Weather?" || m[1].ToolCalls() != 1 || m[1].Content != "" {
		t.Fatalf("first conversation %+v", m)
	}
	if m := recs[1].Messages; len(m) != 4 || m[3].Content != "Cold." || m[2].Role != "tool" {
		t.Fatalf("second conversation %+v", m)
	}
	for _, c := range []struct{ line, want string }{
		{`{"messages": [{"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image_url", "image_url": {"url": "cat.png"}}]}, {"role": "assistant", "content": "A cat."}]}`,
			`bad.jsonl:2: messages[0].content[1]: part type "image_url" is not supported`},
		{`{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": null}]}`,
			`bad.jsonl:2: messages[1].content: is null`},
		{`{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", "tool_calls": []}]}`,
			`bad.jsonl:2: "messages" has no assistant turn with content or tool calls`},
	} {
		_, err := ParseJSONL(strings.NewReader(`{"text": "ok"}`+"\n"+c.line+"\n"), "bad.jsonl")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.line, err, c.want)
		}
	}
}
