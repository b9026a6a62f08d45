package chat

// Messages as chat data has them (OpenAI / Hugging Face style): a role, content given as a string, as a list of
// parts or (for an assistant turn that calls tools) null, an optional name, tool_calls on assistant turns and
// tool_call_id on tool results. apply_chat_template hands each message dict to the template unchanged, so a parsed
// message keeps its JSON object as given (every field, in its key order) and that is what the template sees.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Message is one turn of a conversation. Role and Content are what saddle reads itself (assistant-turn spans,
// checks of training data); Content is the text of the content (its text parts joined; "" when null or absent).
// A Message built in Go is seen by templates as {"role": Role, "content": Content}; one parsed by ParseMessages
// (or json.Unmarshal) is seen as the JSON object it was parsed from.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`

	val       *dict // the object as given, when parsed
	toolCalls int
}

// ToolCalls is the number of tool calls the message carries.
func (m Message) ToolCalls() int { return m.toolCalls }

// toolCallNames are the function names of the message's tool calls.
func (m Message) toolCallNames() []string {
	if m.val == nil {
		return nil
	}
	calls, _ := m.val.m["tool_calls"].([]value)
	names := make([]string, 0, len(calls))
	for _, c := range calls {
		fn, _ := c.(*dict).m["function"].(*dict)
		names = append(names, fn.m["name"].(string))
	}
	return names
}

// MarshalJSON writes the message as the template sees it.
func (m Message) MarshalJSON() ([]byte, error) {
	if m.val != nil {
		var b strings.Builder
		if err := writeJSON(&b, m.val, -1, 0); err != nil {
			return nil, err
		}
		return []byte(b.String()), nil
	}
	return json.Marshal(struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}{m.Role, m.Content})
}

// UnmarshalJSON parses one message as ParseMessages does.
func (m *Message) UnmarshalJSON(data []byte) error {
	v, err := decodeJSON(data)
	if err != nil {
		return err
	}
	msg, err := messageFromValue(v)
	if err != nil {
		return fmt.Errorf("message%s", err)
	}
	*m = msg
	return nil
}

// templateValue is the message as the template sees it.
func (m Message) templateValue() *dict {
	if m.val != nil {
		return m.val
	}
	d := newDict()
	d.set("role", m.Role)
	d.set("content", m.Content)
	return d
}

// ParseMessages parses a JSON array of messages. Each is an object with "role" (a non-empty string), "content"
// (a string, or a list of {"type": "text", "text": ...} parts; null or absent only on an assistant turn with
// tool_calls) and optionally "name", "tool_calls" (assistant turns: [{"type": "function", "id": ...,
// "function": {"name": ..., "arguments": an object or a JSON string}}]) and "tool_call_id" (tool turns). Errors
// name the place: messages[i], messages[i].content[j], messages[i].tool_calls[j].function.arguments.
func ParseMessages(data []byte) ([]Message, error) {
	v, err := decodeJSON(data)
	if err != nil {
		return nil, fmt.Errorf("messages: %w", err)
	}
	return messagesFromValue(v)
}

func messagesFromValue(v value) ([]Message, error) {
	items, ok := v.([]value)
	if !ok {
		return nil, fmt.Errorf("messages must be an array, not %s", jsonKindOf(v))
	}
	out := make([]Message, len(items))
	for i, it := range items {
		m, err := messageFromValue(it)
		if err != nil {
			return nil, fmt.Errorf("messages[%d]%s", i, err)
		}
		out[i] = m
	}
	return out, nil
}

// Conversation is what apply_chat_template is given: the messages and, optionally, the tools (a decoded JSON list
// for Options.Extra["tools"], nil when none).
type Conversation struct {
	Messages []Message
	Tools    any
}

// ParseConversation parses a JSON array of messages, or an object {"messages": [...], "tools": [...]} (tools
// optional), as ParseMessages does.
func ParseConversation(data []byte) (Conversation, error) {
	v, err := decodeJSON(data)
	if err != nil {
		return Conversation{}, err
	}
	var c Conversation
	d, ok := v.(*dict)
	if !ok {
		c.Messages, err = messagesFromValue(v)
		return c, err
	}
	for _, k := range d.keys {
		if k != "messages" && k != "tools" {
			return c, fmt.Errorf(`unknown key %q (want "messages" and optionally "tools")`, k)
		}
	}
	msgs, ok := d.m["messages"]
	if !ok {
		return c, fmt.Errorf(`missing "messages"`)
	}
	if c.Messages, err = messagesFromValue(msgs); err != nil {
		return c, err
	}
	switch tools := d.m["tools"].(type) {
	case nil:
	case []value:
		c.Tools = tools
	default:
		return c, fmt.Errorf(`"tools" must be a list, not %s`, jsonKindOf(tools))
	}
	return c, nil
}

// DecodeJSON decodes JSON into a value a template can be given in Options.Extra with its objects' key order
// kept (as Python's json.loads keeps it), e.g. the "tools" of a request. Duplicate keys are refused.
func DecodeJSON(data []byte) (any, error) { return decodeJSON(data) }

// placeErr is an error whose message starts with where it happened, relative to the message (".content[2]: ...").
func placeErr(place, format string, args ...any) error {
	if place == "" {
		return fmt.Errorf(": "+format, args...)
	}
	return fmt.Errorf("%s: "+format, append([]any{place}, args...)...)
}

func messageFromValue(v value) (Message, error) {
	d, ok := v.(*dict)
	if !ok {
		return Message{}, placeErr("", "must be an object, not %s", jsonKindOf(v))
	}
	for _, k := range d.keys {
		switch k {
		case "role", "content", "name", "tool_calls", "tool_call_id":
		default:
			return Message{}, placeErr("", `unknown key %q (want "role", "content", and optionally "name", "tool_calls", "tool_call_id")`, k)
		}
	}
	var m Message
	role, ok := d.m["role"]
	if !ok {
		return m, placeErr("", `missing "role"`)
	}
	if m.Role, ok = role.(string); !ok || m.Role == "" {
		return m, placeErr(".role", "must be a non-empty string, not %s", jsonKindOf(role))
	}
	for _, k := range []string{"name", "tool_call_id"} {
		if s, ok := d.m[k]; ok {
			if s, ok := s.(string); !ok || s == "" {
				return m, placeErr("."+k, "must be a non-empty string, not %s", jsonKindOf(d.m[k]))
			}
		}
	}
	if _, ok := d.m["tool_call_id"]; ok && m.Role != "tool" {
		return m, placeErr("", `"tool_call_id" belongs on a "tool" message, not on a %q one`, m.Role)
	}
	if tc, ok := d.m["tool_calls"]; ok {
		if m.Role != "assistant" {
			return m, placeErr("", `"tool_calls" belongs on an "assistant" message, not on a %q one`, m.Role)
		}
		n, err := checkToolCalls(tc)
		if err != nil {
			return m, err
		}
		m.toolCalls = n
	}
	switch c, present := d.m["content"]; c := c.(type) {
	case string:
		m.Content = c
	case nil:
		if m.toolCalls == 0 {
			if !present {
				return m, placeErr("", `missing "content" (only an assistant message with tool_calls may have none)`)
			}
			return m, placeErr(".content", "is null (only an assistant message with tool_calls may have no content)")
		}
	case []value:
		text, err := partsText(c)
		if err != nil {
			return m, err
		}
		m.Content = text
	default:
		return m, placeErr(".content", `must be a string or a list of {"type": "text", "text": ...} parts, not %s`, jsonKindOf(c))
	}
	m.val = d
	return m, nil
}

// partsText checks a content list and returns its text.
func partsText(parts []value) (string, error) {
	if len(parts) == 0 {
		return "", placeErr(".content", "is an empty list of parts")
	}
	var sb strings.Builder
	for j, p := range parts {
		place := ".content[" + strconv.Itoa(j) + "]"
		d, ok := p.(*dict)
		if !ok {
			return "", placeErr(place, `must be a part object such as {"type": "text", "text": ...}, not %s`, jsonKindOf(p))
		}
		typ, ok := d.m["type"].(string)
		if !ok {
			return "", placeErr(place, `"type" must be a string, not %s`, kindAt(d, "type"))
		}
		if typ != "text" {
			return "", placeErr(place, `part type %q is not supported: saddle trains on text (only {"type": "text", "text": ...} parts)`, typ)
		}
		for _, k := range d.keys {
			if k != "type" && k != "text" {
				return "", placeErr(place, `unknown key %q in a text part (want "type" and "text")`, k)
			}
		}
		text, ok := d.m["text"].(string)
		if !ok {
			return "", placeErr(place+".text", "must be a string, not %s", kindAt(d, "text"))
		}
		sb.WriteString(text)
	}
	return sb.String(), nil
}

// checkToolCalls checks an assistant message's tool_calls (null and [] are no calls) and returns how many it has.
func checkToolCalls(v value) (int, error) {
	if v == nil {
		return 0, nil
	}
	calls, ok := v.([]value)
	if !ok {
		return 0, placeErr(".tool_calls", "must be a list, not %s", jsonKindOf(v))
	}
	for j, c := range calls {
		place := ".tool_calls[" + strconv.Itoa(j) + "]"
		d, ok := c.(*dict)
		if !ok {
			return 0, placeErr(place, "must be an object, not %s", jsonKindOf(c))
		}
		for _, k := range d.keys {
			if k != "id" && k != "type" && k != "function" {
				return 0, placeErr(place, `unknown key %q (want "type": "function", "function" and optionally "id")`, k)
			}
		}
		if t, ok := d.m["type"]; ok && t != "function" {
			return 0, placeErr(place+".type", `must be "function", not %s`, jsonKindOf(t))
		}
		if id, ok := d.m["id"]; ok {
			if _, ok := id.(string); !ok {
				return 0, placeErr(place+".id", "must be a string, not %s", jsonKindOf(id))
			}
		}
		fn, ok := d.m["function"].(*dict)
		if !ok {
			return 0, placeErr(place+".function", `must be an object {"name": ..., "arguments": ...}, not %s`, kindAt(d, "function"))
		}
		for _, k := range fn.keys {
			if k != "name" && k != "arguments" {
				return 0, placeErr(place+".function", `unknown key %q (want "name" and "arguments")`, k)
			}
		}
		if name, ok := fn.m["name"].(string); !ok || name == "" {
			return 0, placeErr(place+".function.name", "must be a non-empty string, not %s", kindAt(fn, "name"))
		}
		switch args := fn.m["arguments"].(type) {
		case *dict:
		case string:
			if _, err := decodeJSON([]byte(args)); err != nil {
				return 0, placeErr(place+".function.arguments", "is a string but not JSON: %v", err)
			}
		default:
			return 0, placeErr(place+".function.arguments", "must be an object or a JSON string, not %s", kindAt(fn, "arguments"))
		}
	}
	return len(calls), nil
}

// decodeJSON decodes one JSON value into template values: objects as *dict in key order (duplicate keys refused),
// arrays as []value, integers as int64, other numbers as float64.
func decodeJSON(data []byte) (value, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("invalid JSON: more than one value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (value, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			d := newDict()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("invalid JSON: %v", err)
				}
				k, _ := kt.(string)
				if _, dup := d.m[k]; dup {
					return nil, fmt.Errorf("duplicate key %q", k)
				}
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				d.set(k, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("invalid JSON: %v", err)
			}
			return d, nil
		case '[':
			list := []value{}
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("invalid JSON: %v", err)
			}
			return list, nil
		}
		return nil, fmt.Errorf("invalid JSON: unexpected %v", t)
	case json.Number:
		s := string(t)
		if !strings.ContainsAny(s, ".eE") {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("number %s does not fit in 64 bits", s)
			}
			return n, nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("number %s is out of range", s)
		}
		return f, nil
	case string, bool, nil:
		return t, nil
	}
	return nil, fmt.Errorf("invalid JSON: unexpected %v", tok)
}

// jsonKindOf names the JSON kind of a decoded value for error messages.
func jsonKindOf(v value) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64, float64:
		return "a number"
	case []value:
		return "an array"
	case *dict:
		return "an object"
	case undefined:
		return "nothing"
	}
	return fmt.Sprintf("%T", v)
}

// kindAt names the kind of d[k], or says that it is missing.
func kindAt(d *dict, k string) string {
	if v, ok := d.m[k]; ok {
		return jsonKindOf(v)
	}
	return "missing"
}
