package finetune

// Fuzz target for the JSONL data reader. The seed corpus runs as an ordinary test;
// `go test -fuzz FuzzParseJSONL ./finetune` explores further.

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
