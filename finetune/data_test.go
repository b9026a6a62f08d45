package finetune

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/saddle-ml/saddle/chat"
	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/tokenizer"
)

var _ DataTokenizer = (*tokenizer.Tokenizer)(nil)

// fakeTok is a character-level tokenizer: each rune is one token (id 1000+rune), special strings
// are single tokens, so token counts of pieces can be computed by hand.
type fakeTok struct {
	bos      int
	eos      []int
	tmpl     string
	specials []string // id = 10+index
}

func (f *fakeTok) Encode(text string, addSpecial bool) []int {
	var ids []int
	if addSpecial && f.bos >= 0 {
		ids = append(ids, f.bos)
	}
outer:
	for len(text) > 0 {
		for i, s := range f.specials {
			if strings.HasPrefix(text, s) {
				ids = append(ids, 10+i)
				text = text[len(s):]
				continue outer
			}
		}
		r, size := utf8.DecodeRuneInString(text)
		ids = append(ids, 1000+int(r))
		text = text[size:]
	}
	return ids
}

func (f *fakeTok) decode(ids []int32) string {
	var b strings.Builder
	for _, id := range ids {
		switch {
		case id >= 1000:
			b.WriteRune(rune(id - 1000))
		case id >= 10 && int(id-10) < len(f.specials):
			b.WriteString(f.specials[id-10])
		default:
			b.WriteString("<" + string(rune('0'+id)) + ">")
		}
	}
	return b.String()
}

func (f *fakeTok) BOS() int             { return f.bos }
func (f *fakeTok) EOS() []int           { return f.eos }
func (f *fakeTok) ChatTemplate() string { return f.tmpl }
func (f *fakeTok) TokenString(id int) string {
	switch {
	case id == 1:
		return "<s>"
	case id == 2:
		return "</s>"
	case id >= 10 && id-10 < len(f.specials):
		return f.specials[id-10]
	}
	return string(rune(id - 1000))
}

func stories260K(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.FromFile(testenv.Shared(t, "models", "stories260K-hf", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ---- JSONL ----

func TestParseJSONLShapes(t *testing.T) {
	recs, err := ReadJSONL(filepath.Join("testdata", "mixed.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		kind RecordKind
		line string
	}{{TextRecord, ":2"}, {PromptCompletionRecord, ":4"}, {ChatRecord, ":5"}, {TextRecord, ":7"}}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d: %+v", len(recs), len(want), recs)
	}
	for i, w := range want {
		if recs[i].Kind != w.kind || !strings.HasSuffix(recs[i].Source, "mixed.jsonl"+w.line) {
			t.Errorf("record %d: kind %v source %s, want %v at line %s", i, recs[i].Kind, recs[i].Source, w.kind, w.line)
		}
	}
	if recs[0].Text != "Pip said \"beep boop\".\nThe end." {
		t.Errorf("text = %q", recs[0].Text)
	}
	if recs[1].Prompt != "Who fixes things?" || recs[1].Completion != " Pip does." {
		t.Errorf("prompt/completion = %q / %q", recs[1].Prompt, recs[1].Completion)
	}
	if m := recs[2].Messages; len(m) != 2 || m[1].Role != "assistant" || m[1].Content != "Beep boop!" {
		t.Errorf("messages = %+v", m)
	}
	if recs[3].Text != "é ✓ 😀" {
		t.Errorf("text with escapes = %q", recs[3].Text)
	}
}

func TestParseJSONLErrors(t *testing.T) {
	good := `{"text": "ok"}` + "\n"
	cases := []struct{ name, line, msg string }{
		{"bad json", `{"text": "a"`, "invalid JSON"},
		{"not an object", `["text"]`, "want a JSON object"},
		{"trailing data", `{"text": "a"} {"text": "b"}`, "after the object"},
		{"missing completion", `{"prompt": "a"}`, "match no example shape"},
		{"unknown key", `{"text": "a", "id": 3}`, "match no example shape"},
		{"mixed keys", `{"text": "a", "prompt": "b", "completion": "c"}`, "match no example shape"},
		{"duplicate key", `{"text": "a", "text": "b"}`, "duplicate key"},
		{"text not a string", `{"text": 5}`, `"text" must be a string, not a number`},
		{"text null", `{"text": null}`, `"text" must be a string, not null`},
		{"empty text", `{"text": "  "}`, `empty "text"`},
		{"empty prompt", `{"prompt": "", "completion": "x"}`, `empty "prompt"`},
		{"empty completion", `{"prompt": "p", "completion": ""}`, `empty "completion"`},
		{"completion mistyped", `{"prompt": "p", "completion": ["x"]}`, `"completion" must be a string`},
		{"messages not array", `{"messages": "hi"}`, `"messages" must be an array`},
		{"messages empty", `{"messages": []}`, `"messages" is empty`},
		{"message not object", `{"messages": ["hi"]}`, "messages[0]: must be an object"},
		{"message missing content", `{"messages": [{"role": "user"}]}`, `messages[0]: missing "content"`},
		{"message extra key", `{"messages": [{"role": "user", "content": "a", "weight": 1}]}`, `messages[0]: unknown key "weight"`},
		{"message role mistyped", `{"messages": [{"role": 1, "content": "a"}]}`, `messages[0].role: must be a non-empty string`},
		{"no assistant turn", `{"messages": [{"role": "user", "content": "a"}]}`, "no assistant turn with content or tool calls"},
		{"invalid utf-8", "{\"text\": \"a\xff\"}", "invalid UTF-8 at byte 11"},
		{"lone surrogate", `{"text": "a\ud800b"}`, "lone UTF-16 surrogate"},
		{"lone low surrogate", `{"text": "\udc00"}`, "lone UTF-16 surrogate"},
	}
	for _, c := range cases {
		// The bad line is line 4: after a good line and two blank lines (which are skipped).
		src := good + "\n  \t\n" + c.line + "\n" + good
		_, err := ParseJSONL(strings.NewReader(src), "data.jsonl")
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if !strings.HasPrefix(err.Error(), "data.jsonl:4: ") || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %q, want data.jsonl:4: ...%s...", c.name, err, c.msg)
		}
	}
	// A valid surrogate pair and an escaped backslash before "u" are fine.
	if _, err := ParseJSONL(strings.NewReader(`{"text": "\ud83d\ude00 \\ud800"}`), "x"); err != nil {
		t.Errorf("valid escapes: %v", err)
	}
	for _, src := range []string{"", "\n\n  \n", "\xef\xbb\xbf\n"} {
		if _, err := ParseJSONL(strings.NewReader(src), "empty.jsonl"); err == nil || !strings.Contains(err.Error(), "empty.jsonl: no examples") {
			t.Errorf("empty file %q: err = %v", src, err)
		}
	}
	// CRLF line ends and a final line without newline.
	recs, err := ParseJSONL(strings.NewReader("{\"text\": \"a\"}\r\n{\"text\": \"b\"}"), "crlf")
	if err != nil || len(recs) != 2 || recs[1].Text != "b" || recs[1].Source != "crlf:2" {
		t.Errorf("CRLF: %+v, %v", recs, err)
	}
}

// ---- tokenization ----

func TestTokenizeTextEOS(t *testing.T) {
	recs := []Record{{Source: "s:1", Kind: TextRecord, Text: "ab"}}
	cases := []struct {
		name string
		tok  *fakeTok
		opts TokenizeOptions
		want []int32
	}{
		{"BOS and EOS", &fakeTok{bos: 1, eos: []int{2, 3}}, TokenizeOptions{}, []int32{1, 1000 + 'a', 1000 + 'b', 2}},
		{"BOS only", &fakeTok{bos: 1}, TokenizeOptions{}, []int32{1, 1000 + 'a', 1000 + 'b'}},
		{"NoEOS", &fakeTok{bos: 1, eos: []int{2}}, TokenizeOptions{NoEOS: true}, []int32{1, 1000 + 'a', 1000 + 'b'}},
		{"neither", &fakeTok{bos: -1}, TokenizeOptions{}, []int32{1000 + 'a', 1000 + 'b'}},
	}
	for _, c := range cases {
		exs, st, err := TokenizeRecords(recs, c.tok, c.opts)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		ex := exs[0]
		if !slices.Equal(ex.Tokens, c.want) {
			t.Errorf("%s: tokens %v, want %v", c.name, ex.Tokens, c.want)
		}
		for i, l := range ex.Loss {
			if !l {
				t.Errorf("%s: token %d not in the loss", c.name, i)
			}
		}
		if st.Tokens != len(c.want) || st.LossTokens != len(c.want) || st.Examples != 1 || ex.Source != "s:1" {
			t.Errorf("%s: stats %+v source %q", c.name, st, ex.Source)
		}
	}
	if _, _, err := TokenizeRecords([]Record{{Source: "s:9", Kind: TextRecord, Text: "a"}}, &fakeTok{bos: -1}, TokenizeOptions{}); err == nil || !strings.HasPrefix(err.Error(), "s:9: ") {
		t.Errorf("one-token text: err = %v", err)
	}
}

func TestPromptCompletionMaskFake(t *testing.T) {
	for _, eos := range [][]int{{2}, nil} {
		tok := &fakeTok{bos: 1, eos: eos}
		prompt, completion := "Q: hi?\nA:", " Beep boop."
		exs, st, err := TokenizeRecords([]Record{{Kind: PromptCompletionRecord, Prompt: prompt, Completion: completion}}, tok, TokenizeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ex := exs[0]
		nPrompt := 1 + utf8.RuneCountInString(prompt) // BOS + one token per rune
		nComp := utf8.RuneCountInString(completion) + len(eos)
		if len(ex.Tokens) != nPrompt+nComp {
			t.Fatalf("eos %v: %d tokens, want %d", eos, len(ex.Tokens), nPrompt+nComp)
		}
		for i, l := range ex.Loss {
			if l != (i >= nPrompt) {
				t.Errorf("eos %v: token %d (%q) loss=%v", eos, i, tok.decode(ex.Tokens[i:i+1]), l)
			}
		}
		if got := tok.decode(ex.Tokens[nPrompt : nPrompt+utf8.RuneCountInString(completion)]); got != completion {
			t.Errorf("completion tokens decode to %q", got)
		}
		if len(eos) > 0 && ex.Tokens[len(ex.Tokens)-1] != 2 {
			t.Errorf("last token %d, want EOS 2", ex.Tokens[len(ex.Tokens)-1])
		}
		if st.LossTokens != nComp {
			t.Errorf("LossTokens %d, want %d", st.LossTokens, nComp)
		}
	}
}

func TestPromptCompletionMaskStories260K(t *testing.T) {
	tok := stories260K(t)
	prompt, completion := "Lily's kite was broken. Who can fix it?", " Pip can fix it! Beep boop!"
	exs, _, err := TokenizeRecords([]Record{{Kind: PromptCompletionRecord, Prompt: prompt, Completion: completion}}, tok, TokenizeOptions{NoEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	ex := exs[0]
	p := tok.Encode(prompt, true)
	full := tok.Encode(prompt+completion, true)
	if len(ex.Tokens) != len(full) {
		t.Fatalf("%d tokens, want %d (NoEOS)", len(ex.Tokens), len(full))
	}
	k := 0
	for k < len(ex.Loss) && !ex.Loss[k] {
		k++
	}
	// The completion starts with a space, so the prompt's own tokens form the unweighted prefix.
	if k != len(p) {
		t.Errorf("first loss token at %d, want %d (the prompt's token count)", k, len(p))
	}
	for i := k; i < len(ex.Loss); i++ {
		if !ex.Loss[i] {
			t.Errorf("completion token %d not in the loss", i)
		}
	}
	ids := make([]int, 0, len(ex.Tokens)-k)
	for _, id := range ex.Tokens[k:] {
		ids = append(ids, int(id))
	}
	if got := tok.Decode(ids, true); strings.TrimSpace(got) != strings.TrimSpace(completion) {
		t.Errorf("loss tokens decode to %q, want %q", got, completion)
	}
	// With EOS (the tokenizer reports one) the EOS is appended and counts.
	exs, _, err = TokenizeRecords([]Record{{Kind: PromptCompletionRecord, Prompt: prompt, Completion: completion}}, tok, TokenizeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if eos := tok.EOS(); len(eos) > 0 {
		last := len(exs[0].Tokens) - 1
		if int(exs[0].Tokens[last]) != eos[0] || !exs[0].Loss[last] || last != len(full) {
			t.Errorf("EOS not appended/weighted: %v", exs[0].Tokens)
		}
	}
}

func TestTextStories260KBOS(t *testing.T) {
	tok := stories260K(t)
	exs, _, err := TokenizeRecords([]Record{{Kind: TextRecord, Text: "Once upon a time"}}, tok, TokenizeOptions{NoEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	want := tok.Encode("Once upon a time", false)
	got := exs[0].Tokens
	if tok.BOS() < 0 || int(got[0]) != tok.BOS() || len(got) != len(want)+1 {
		t.Fatalf("tokens %v: want BOS %d then %v", got, tok.BOS(), want)
	}
	for i, id := range want {
		if int(got[i+1]) != id {
			t.Fatalf("tokens %v: want BOS then %v", got, want)
		}
	}
}

// ---- chat masks ----

const chatMLTemplate = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}" +
	"{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// maskedText returns the text of the runs of loss tokens, joined by "|".
func maskedText(tok *fakeTok, ex Example) string {
	var runs []string
	for i := 0; i < len(ex.Tokens); {
		if !ex.Loss[i] {
			i++
			continue
		}
		j := i
		for j < len(ex.Tokens) && ex.Loss[j] {
			j++
		}
		runs = append(runs, tok.decode(ex.Tokens[i:j]))
		i = j
	}
	return strings.Join(runs, "|")
}

func TestChatMaskAssistantOnly(t *testing.T) {
	tok := &fakeTok{bos: 1, eos: []int{11}, tmpl: chatMLTemplate, specials: []string{"<|im_start|>", "<|im_end|>"}}
	msgs := []chat.Message{{Role: "system", Content: "Be Pip."}, {Role: "user", Content: "Fix it?"}, {Role: "assistant", Content: "Beep boop!"}, {Role: "user", Content: "Thanks"}, {Role: "assistant", Content: "Bye."}}
	exs, st, err := TokenizeRecords([]Record{{Source: "c:1", Kind: ChatRecord, Messages: msgs}}, tok, TokenizeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ex := exs[0]
	// Hand-derived: each assistant turn from after "<|im_start|>assistant\n" through "<|im_end|>\n".
	if got, want := maskedText(tok, ex), "Beep boop!<|im_end|>\n|Bye.<|im_end|>\n"; got != want {
		t.Errorf("loss on %q, want %q", got, want)
	}
	if st.ChatAllTokens != 0 {
		t.Errorf("fallback used: %+v", st)
	}
	if tok.decode(ex.Tokens) != "<|im_start|>system\nBe Pip.<|im_end|>\n<|im_start|>user\nFix it?<|im_end|>\n<|im_start|>assistant\nBeep boop!<|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\nBye.<|im_end|>\n" {
		t.Errorf("rendered %q", tok.decode(ex.Tokens))
	}

	// A template whose assistant turns cannot be located falls back to all tokens, and says so.
	odd := &fakeTok{bos: 1, tmpl: "{% for m in messages|reverse %}{{ m.content }};{% endfor %}"}
	exs, st, err = TokenizeRecords([]Record{{Source: "c:2", Kind: ChatRecord, Messages: msgs[1:3]}}, odd, TokenizeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ChatAllTokens != 1 || st.ChatAllTokensSources[0] != "c:2" || st.LossTokens != len(exs[0].Tokens) {
		t.Errorf("fallback: stats %+v", st)
	}

	// {% generation %} blocks give the spans directly.
	gen := &fakeTok{bos: 1, tmpl: "{% for m in messages %}[{{ m.role }}]{% if m.role == 'assistant' %}{% generation %}{{ m.content }}.{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}"}
	exs, _, err = TokenizeRecords([]Record{{Kind: ChatRecord, Messages: msgs[1:3]}}, gen, TokenizeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := maskedText(gen, exs[0]); got != "Beep boop!." {
		t.Errorf("generation spans: loss on %q", got)
	}

	// No template: an error naming the record.
	_, _, err = TokenizeRecords([]Record{{Source: "c:3", Kind: ChatRecord, Messages: msgs}}, &fakeTok{bos: 1}, TokenizeOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "c:3: ") || !strings.Contains(err.Error(), "chat template") {
		t.Errorf("no template: err = %v", err)
	}
	// An explicit template overrides.
	if _, _, err = TokenizeRecords([]Record{{Kind: ChatRecord, Messages: msgs}}, &fakeTok{bos: 1}, TokenizeOptions{ChatTemplate: chatMLTemplate}); err != nil {
		t.Errorf("explicit template: %v", err)
	}
	// The template's raise_exception is reported with the record.
	strict := &fakeTok{bos: 1, tmpl: "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}x"}
	_, _, err = TokenizeRecords([]Record{{Source: "c:4", Kind: ChatRecord, Messages: msgs}}, strict, TokenizeOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "c:4: ") || !strings.Contains(err.Error(), "user first") {
		t.Errorf("raise_exception: err = %v", err)
	}
}

// The real templates with a character tokenizer that knows their special tokens.
func TestChatMaskRealTemplates(t *testing.T) {
	multi := []chat.Message{
		{Role: "system", Content: "Be Pip."},
		{Role: "user", Content: "Hi"},
		{Role: "assistant", Content: "<think>\nsay hi\n</think>\n\nHello!"},
		{Role: "user", Content: "Fix it?"},
		{Role: "assistant", Content: "Beep boop."},
	}
	plain := append([]chat.Message(nil), multi...)
	plain[2].Content = "Hello!"
	cases := []struct {
		name     string
		bos, eos string
		specials []string
		msgs     []chat.Message
		want     string // hand-derived text of the loss runs
	}{
		// Qwen3 adds an empty think block to the last assistant turn.
		{"qwen3", "", "<|im_end|>", []string{"<|im_start|>", "<|im_end|>"}, plain,
			"Hello!<|im_end|>\n|<think>\n\n</think>\n\nBeep boop.<|im_end|>\n"},
		// This Llama-3 template always appends an assistant header, so each turn also keeps the
		// next header's first token (a fixed template token).
		{"llama3", "<|begin_of_text|>", "<|end_of_text|>", []string{"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
			multi[:3], "<think>\nsay hi\n</think>\n\nHello!<|eot_id|><|start_header_id|>"},
		{"gemma3", "<bos>", "<eos>", []string{"<bos>", "<start_of_turn>", "<end_of_turn>"}, multi,
			"<think>\nsay hi\n</think>\n\nHello!<end_of_turn>\n|Beep boop.<end_of_turn>\n"},
	}
	for _, c := range cases {
		tok := &fakeTok{bos: 10, eos: []int{11}, tmpl: testenv.ChatTemplate(t, c.name), specials: c.specials}
		if c.bos == "" {
			tok.bos = -1
		}
		// TokenString must give the template's special strings for BOS/EOS.
		tok.specials = append([]string{c.bos, c.eos}, c.specials...)
		if c.bos == "" {
			tok.specials[0] = "\x00nobos"
		}
		exs, st, err := TokenizeRecords([]Record{{Source: c.name, Kind: ChatRecord, Messages: c.msgs}}, tok, TokenizeOptions{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if st.ChatAllTokens != 0 {
			t.Errorf("%s: fell back to all tokens", c.name)
		}
		if got := maskedText(tok, exs[0]); got != c.want {
			t.Errorf("%s: loss on %q\nwant %q", c.name, got, c.want)
		}
	}

	// Qwen3 strips the reasoning of an earlier assistant turn only when a later user turn follows,
	// so no partial render lines up with that turn: loss on all tokens, reported.
	tok := &fakeTok{bos: -1, eos: []int{11}, tmpl: testenv.ChatTemplate(t, "qwen3"), specials: []string{"\x00nobos", "<|im_end|>", "<|im_start|>"}}
	exs, st, err := TokenizeRecords([]Record{{Source: "q:1", Kind: ChatRecord, Messages: multi}}, tok, TokenizeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ChatAllTokens != 1 || st.LossTokens != len(exs[0].Tokens) {
		t.Errorf("qwen3 with earlier reasoning: stats %+v, want the all-tokens fallback", st)
	}
}
