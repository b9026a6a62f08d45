package finetune

// Training data: JSONL files, one example per line, in one of three shapes:
//
//	{"text": "..."}                                   plain text; every token counts in the loss
//	{"prompt": "...", "completion": "..."}            loss on the completion tokens only
//	{"messages": [{"role": "...", "content": "..."}]}  rendered with the tokenizer's chat template
//
// Messages are OpenAI / Hugging Face chat messages (see chat.ParseMessages): content as a string or a list of
// text parts, "name", "tool_calls" on assistant turns (content may then be null) and "tool" turns with
// "tool_call_id"; the template sees each message as given. The loss is on the assistant turns, tool calls included.
//
// A line must be exactly one of these objects: other or mixed keys, duplicate keys, values of the
// wrong type, empty text/prompt/completion, a conversation without an assistant turn, invalid
// UTF-8 or a lone UTF-16 surrogate escape are errors naming file:line. Nothing is skipped
// silently; only blank lines (whitespace only) are ignored, and a UTF-8 byte-order mark at the
// start of the file is dropped. A file without any example is an error. Shapes may be mixed
// within one file.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/saddle-ml/saddle/chat"
	"github.com/saddle-ml/saddle/internal/fileio"
)

// RecordKind is the shape of a JSONL line.
type RecordKind int

const (
	TextRecord             RecordKind = iota + 1 // {"text"}
	PromptCompletionRecord                       // {"prompt", "completion"}
	ChatRecord                                   // {"messages"}
)

func (k RecordKind) String() string {
	switch k {
	case TextRecord:
		return "text"
	case PromptCompletionRecord:
		return "prompt/completion"
	case ChatRecord:
		return "messages"
	}
	return "RecordKind(" + strconv.Itoa(int(k)) + ")"
}

// Record is one parsed JSONL line.
type Record struct {
	Source     string // "file:line", for error messages
	Kind       RecordKind
	Text       string         // TextRecord
	Prompt     string         // PromptCompletionRecord
	Completion string         // PromptCompletionRecord
	Messages   []chat.Message // ChatRecord
}

// ReadJSONL reads and validates a JSONL data file.
// Only a regular file is read (a FIFO or a device could block forever or never end).
func ReadJSONL(path string) ([]Record, error) {
	f, _, err := fileio.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseJSONL(f, path)
}

// MaxLineBytes bounds one JSONL line: a file without newlines is refused at this length instead of being read
// into memory whole. (A line this long is far beyond any sequence length saddle trains on.)
const MaxLineBytes = 64 << 20

// ParseJSONL reads JSONL records from r; name is used in error messages ("name:line: ..."). A line longer than
// MaxLineBytes is an error.
func ParseJSONL(r io.Reader, name string) ([]Record, error) {
	return parseJSONL(r, name, MaxLineBytes)
}

func parseJSONL(r io.Reader, name string, maxLine int) ([]Record, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var recs []Record
	for lineNo := 1; ; lineNo++ {
		line, readErr := fileio.ReadLine(br, maxLine)
		if readErr != nil && readErr != io.EOF {
			return nil, fmt.Errorf("%s:%d: %w", name, lineNo, readErr)
		}
		if len(line) == 0 && readErr == io.EOF {
			break
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if lineNo == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
		}
		src := fmt.Sprintf("%s:%d", name, lineNo)
		if !utf8.Valid(line) {
			return nil, fmt.Errorf("%s: invalid UTF-8 at byte %d of the line", src, invalidUTF8At(line))
		}
		if len(bytes.TrimSpace(line)) > 0 {
			rec, err := parseRecord(line)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", src, err)
			}
			rec.Source = src
			recs = append(recs, rec)
		}
		if readErr == io.EOF {
			break
		}
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%s: no examples in the file", name)
	}
	return recs, nil
}

func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return len(b)
}

func parseRecord(line []byte) (Record, error) {
	if err := checkSurrogates(line); err != nil {
		return Record{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	fields, err := decodeObject(dec)
	if err != nil {
		return Record{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return Record{}, fmt.Errorf("invalid JSON: unexpected data after the object")
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	shape := strings.Join(keys, ",")
	var rec Record
	switch shape {
	case "text":
		rec.Kind = TextRecord
		if rec.Text, err = stringField(fields, "text"); err != nil {
			return rec, err
		}
		if strings.TrimSpace(rec.Text) == "" {
			return rec, fmt.Errorf(`empty "text"`)
		}
	case "completion,prompt":
		rec.Kind = PromptCompletionRecord
		if rec.Prompt, err = stringField(fields, "prompt"); err != nil {
			return rec, err
		}
		if rec.Completion, err = stringField(fields, "completion"); err != nil {
			return rec, err
		}
		if rec.Prompt == "" {
			return rec, fmt.Errorf(`empty "prompt" (use {"text": ...} for plain text)`)
		}
		if strings.TrimSpace(rec.Completion) == "" {
			return rec, fmt.Errorf(`empty "completion"`)
		}
	case "messages":
		rec.Kind = ChatRecord
		if rec.Messages, err = parseMessages(fields["messages"]); err != nil {
			return rec, err
		}
	default:
		quoted := make([]string, len(keys))
		for i, k := range keys {
			quoted[i] = strconv.Quote(k)
		}
		return rec, fmt.Errorf(`keys {%s} match no example shape: want {"text"}, {"prompt", "completion"} or {"messages"}`,
			strings.Join(quoted, ", "))
	}
	return rec, nil
}

// decodeObject reads one JSON object, refusing duplicate keys.
func decodeObject(dec *json.Decoder) (map[string]json.RawMessage, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", jsonErr(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("want a JSON object, found %s", jsonKind(tok))
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON: %v", jsonErr(err))
		}
		k, _ := kt.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("invalid JSON: %v", jsonErr(err))
		}
		if _, dup := fields[k]; dup {
			return nil, fmt.Errorf("duplicate key %q", k)
		}
		fields[k] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", jsonErr(err))
	}
	return fields, nil
}

func jsonErr(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("unexpected end of line")
	}
	return err
}

func jsonKind(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			return "an array"
		}
		return string(t)
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

func rawKind(raw json.RawMessage) string {
	b := bytes.TrimSpace(raw)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func stringField(fields map[string]json.RawMessage, key string) (string, error) {
	raw := fields[key]
	if rawKind(raw) != "a string" {
		return "", fmt.Errorf("%q must be a string, not %s", key, rawKind(raw))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%q: %v", key, err)
	}
	return s, nil
}

func parseMessages(raw json.RawMessage) ([]chat.Message, error) {
	if rawKind(raw) != "an array" {
		return nil, fmt.Errorf(`"messages" must be an array, not %s`, rawKind(raw))
	}
	msgs, err := chat.ParseMessages(raw)
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf(`"messages" is empty`)
	}
	for _, m := range msgs {
		if m.Role == "assistant" && (strings.TrimSpace(m.Content) != "" || m.ToolCalls() > 0) {
			return msgs, nil
		}
	}
	return nil, fmt.Errorf(`"messages" has no assistant turn with content or tool calls (nothing to learn)`)
}

// checkSurrogates rejects \u escapes that encode lone UTF-16 surrogates (encoding/json would
// silently turn them into U+FFFD).
func checkSurrogates(line []byte) error {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(line) || line[i] != '\\' || line[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(line[i+2:i+6]), 16, 16)
		return rune(v), err == nil
	}
	for i := 0; i < len(line); i++ {
		if line[i] != '\\' || i+1 >= len(line) {
			continue
		}
		if line[i+1] != 'u' {
			i++ // skip the escaped character (possibly a backslash)
			continue
		}
		r, ok := hex4(i)
		if !ok {
			continue // the JSON decoder reports it
		}
		switch {
		case r >= 0xD800 && r < 0xDC00:
			lo, ok := hex4(i + 6)
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return fmt.Errorf("lone UTF-16 surrogate \\u%04x at byte %d", r, i)
			}
			i += 11
		case r >= 0xDC00 && r <= 0xDFFF:
			return fmt.Errorf("lone UTF-16 surrogate \\u%04x at byte %d", r, i)
		default:
			i += 5
		}
	}
	return nil
}
