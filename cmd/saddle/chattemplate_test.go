package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// toolTemplate uses what chat data carries: names, content parts, tool calls (arguments as given) and tool turns.
const toolTemplate = `{{ bos_token }}{% if tools %}[tools {{ tools | tojson }}]{% endif %}{% for m in messages %}<|{{ m.role }}{% if m.name %}:{{ m.name }}{% endif %}|>` +
	`{% if m.content is string %}{{ m.content }}{% elif m.content is iterable %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endif %}` +
	`{% for c in m.tool_calls or [] %}<call {{ c.function.name }} {{ c.function.arguments if c.function.arguments is string else c.function.arguments | tojson }}>{% endfor %}` +
	`{% if m.tool_call_id %}<for {{ m.tool_call_id }}>{% endif %}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}`

// chatModel copies stories260K-hf into a temporary folder with chat_template set in tokenizer_config.json.
func chatModel(t *testing.T, template string) string {
	t.Helper()
	_, hf := testenv.Stories260K(t)
	dir := filepath.Join(t.TempDir(), "chat-model")
	testenv.CopyTree(t, hf, dir)
	setJSONKey(t, filepath.Join(dir, "tokenizer_config.json"), "chat_template", template)
	return dir
}

// setJSONKey sets key to value in the JSON object file at path.
func setJSONKey(t *testing.T, path, key string, value any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatal(err)
	}
	obj[key] = value
	if data, err = json.Marshal(obj); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

const toolConversation = `{"messages": [
	{"role": "user", "name": "alice", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}]},
	{"role": "assistant", "content": null, "tool_calls": [{"type": "function", "id": "c1", "function": {"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}}]},
	{"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "-3"},
	{"role": "assistant", "content": "Cold.", "tool_calls": [{"type": "function", "function": {"name": "log", "arguments": "{\"x\": 1.5}"}}]}],
 "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}`

func TestChatTemplatePrintsTheRender(t *testing.T) {
	model := chatModel(t, toolTemplate)
	file := writeFile(t, t.TempDir(), "conv.json", toolConversation)
	code, out, errs := saddle(t, "chat-template", "--model", model, "--messages", file, "--add-generation-prompt")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	want := `<s>[tools [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]]` +
		`<|user:alice|>Weather in Oslo?</s><|assistant|><call get_weather {"city": "Oslo", "days": 2}></s>` +
		`<|tool:get_weather|>-3<for c1></s><|assistant|>Cold.<call log {"x": 1.5}></s><|assistant|>`
	if out != want {
		t.Fatalf("printed\n%q\nwant\n%q", out, want)
	}
	// A plain array of messages; --json.
	file = writeFile(t, t.TempDir(), "plain.json", `[{"role": "user", "content": "Hi"}]`)
	code, out, errs = saddle(t, "chat-template", "--model", model, "--messages", file, "--json")
	var r struct{ Text string }
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Text != "<s><|user|>Hi</s>" {
		t.Fatalf("--json: exit %d, %q\n%s", code, out, errs)
	}
}

// The CLI prints what Jinja2 renders (the chat oracle, configured as transformers configures it) for a real
// template that uses tool calls (qwen3's), with the tokenizer's special tokens.
func TestChatTemplateMatchesJinja(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import jinja2").Run(); err != nil {
		testenv.Missing(t, "/usr/bin/python3 with jinja2 not available (%v); install python3-jinja2", err)
	}
	qwen3 := testenv.ChatTemplate(t, "qwen3")
	model := chatModel(t, qwen3)
	conv := `{"messages": [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather in Zürich?"},
		{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "id": "c1", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "C"}}}]},
		{"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "21"},
		{"role": "assistant", "content": "It is 21 °C."}],
		"tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}]}`
	file := writeFile(t, t.TempDir(), "conv.json", conv)
	var parsed struct {
		Messages []any `json:"messages"`
		Tools    []any `json:"tools"`
	}
	if err := json.Unmarshal([]byte(conv), &parsed); err != nil {
		t.Fatal(err)
	}
	for _, gen := range []bool{false, true} {
		args := []string{"chat-template", "--model", model, "--messages", file}
		if gen {
			args = append(args, "--add-generation-prompt")
		}
		code, out, errs := saddle(t, args...)
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, errs)
		}
		// The oracle gets the file's JSON as is (Python keeps the key order) and stories260K's special tokens.
		req := `{"templates": [` + mustJSON(t, qwen3) + `], "cases": [{"template": 0, "messages": ` + mustJSON(t, json.RawMessage(messagesOf(t, conv))) +
			`, "add_generation_prompt": ` + mustJSON(t, gen) + `, "bos_token": "<s>", "eos_token": "</s>", "vars": {"tools": ` + mustJSON(t, json.RawMessage(toolsOf(t, conv))) + `}}]}`
		cmd := exec.Command("/usr/bin/python3", filepath.Join("..", "..", "scripts", "chat-oracle", "render.py"))
		cmd.Stdin = strings.NewReader(req)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("oracle: %v\n%s", err, stderr.String())
		}
		var res []struct {
			Text  *string `json:"text"`
			Error string  `json:"error"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || len(res) != 1 || res[0].Text == nil {
			t.Fatalf("oracle answered %s (%v)", stdout.String(), err)
		}
		if out != *res[0].Text {
			t.Fatalf("generation prompt %v: saddle printed\n%q\nJinja2 renders\n%q", gen, out, *res[0].Text)
		}
		if !strings.Contains(out, `{"name": "get_weather", "arguments": {"city": "Zürich", "unit": "C"}}`) {
			t.Fatalf("the render lacks the tool call: %q", out)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// messagesOf and toolsOf cut the raw JSON of a conversation's fields (key order kept).
func messagesOf(t *testing.T, conv string) []byte { return rawField(t, conv, "messages") }
func toolsOf(t *testing.T, conv string) []byte    { return rawField(t, conv, "tools") }

func rawField(t *testing.T, conv, key string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(conv), &m); err != nil {
		t.Fatal(err)
	}
	return m[key]
}

func TestChatTemplateAndGenerateChatErrors(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	model := chatModel(t, toolTemplate)
	plain := writeFile(t, t.TempDir(), "plain.json", `[{"role": "user", "content": "Hi"}]`)
	image := writeFile(t, t.TempDir(), "image.json", `[{"role": "user", "content": [{"type": "text", "text": "See"}, {"type": "image_url", "image_url": {"url": "x.png"}}]}]`)
	extra := writeFile(t, t.TempDir(), "extra.json", `{"messages": [], "documents": []}`)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"chat-template", "--model", model}, 2, "--messages"},
		{[]string{"chat-template", "--model", gguf, "--messages", plain}, 1, "stories260K.gguf: the model has no chat template"},
		{[]string{"chat-template", "--model", model, "--messages", image}, 1, `image.json: messages[0].content[1]: part type "image_url" is not supported`},
		{[]string{"chat-template", "--model", model, "--messages", extra}, 1, `extra.json: unknown key "documents"`},
		{[]string{"chat-template", "--model", model, "--messages", filepath.Join(t.TempDir(), "none.json")}, 1, "none.json"},
		{[]string{"generate", "--model", gguf, "--chat", "--prompt", "Hi", "--max-tokens", "2"}, 1, "the model has no chat template"},
		{[]string{"generate", "--model", model, "--chat", "--max-tokens", "2"}, 2, "--chat needs --prompt"},
	} {
		code, _, errs := saddle(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("saddle %v: exit %d (want %d), stderr %q (want it to mention %q)", tc.args, code, tc.code, errs, tc.want)
		}
	}
}

// generate --chat feeds the model the template's render of one user message with the generation prompt, encoded
// without added special tokens (the template writes them): the same tokens saddle tokenize gives for that text.
func TestGenerateChatWrapsThePrompt(t *testing.T) {
	model := chatModel(t, toolTemplate)
	code, out, errs := saddle(t, "generate", "--model", model, "--chat", "--prompt", "Once upon a time", "--max-tokens", "4", "--temperature", "0", "--json")
	if code != 0 {
		t.Fatalf("generate --chat: exit %d\n%s", code, errs)
	}
	var r generateResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	code, out, errs = saddle(t, "tokenize", "--model", model, "--add-special=false", "--text", "<s><|user|>Once upon a time</s><|assistant|>")
	var ids []int
	if code != 0 || json.Unmarshal([]byte(out), &ids) != nil {
		t.Fatalf("tokenize: exit %d %q\n%s", code, out, errs)
	}
	if r.PromptTokens != len(ids) || !strings.Contains(r.Text, "<|user|>Once upon a time") {
		t.Fatalf("generate --chat: %d prompt tokens (the render has %d), text %q", r.PromptTokens, len(ids), r.Text)
	}
	// Without --chat the prompt is the bare text.
	code, out, _ = saddle(t, "generate", "--model", model, "--prompt", "Once upon a time", "--max-tokens", "4", "--temperature", "0", "--json")
	var plain generateResult
	if code != 0 || json.Unmarshal([]byte(out), &plain) != nil || plain.PromptTokens >= r.PromptTokens {
		t.Fatalf("generate without --chat: exit %d, %d prompt tokens (with --chat %d)", code, plain.PromptTokens, r.PromptTokens)
	}
}
