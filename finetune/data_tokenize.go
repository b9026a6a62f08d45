package finetune

// Tokenization of records into examples with a per-token loss mask.
//
//   - text: Encode(text, addSpecial=true) (so BOS first when the tokenizer adds one), then the
//     first EOS id if the tokenizer has one (unless NoEOS). Every token counts in the loss. A
//     tokenizer without EOS (e.g. stories260K read from GGUF/llama2.c: the model saw only BOS
//     between stories) gets nothing appended: in packed batches the next example's BOS is then
//     the "end of story" target.
//   - prompt/completion: the text prompt+completion (concatenated as is; put a space or newline
//     in the completion if you want one) is encoded with special tokens, EOS appended as for text.
//     The prompt part is the longest common token prefix with Encode(prompt, true); those tokens
//     do not count in the loss, the rest (the completion, and the EOS) do. A token that straddles
//     the boundary counts as completion.
//   - messages: rendered with the chat template (add_generation_prompt=false), encoded without
//     added special tokens (the template writes bos_token itself), no EOS appended (the template
//     ends turns). Loss on the assistant turns (content and the template's end-of-turn text), see
//     chat.Template.AssistantSpans; where the spans cannot be determined, on all tokens (counted in
//     TokenizeStats.ChatAllTokens).

import (
	"fmt"
	"math"

	"github.com/saddle-ml/saddle/chat"
)

// DataTokenizer is what the data pipeline needs from a tokenizer (*tokenizer.Tokenizer has it).
type DataTokenizer interface {
	Encode(text string, addSpecial bool) []int
	BOS() int   // -1: none
	EOS() []int // empty: none
	ChatTemplate() string
	TokenString(id int) string
}

// Example is one tokenized record.
type Example struct {
	Source string  // "file:line"
	Tokens []int32 // token ids
	Loss   []bool  // Loss[i]: token i counts in the loss when it is a prediction target
}

// TokenizeOptions tunes TokenizeRecords.
type TokenizeOptions struct {
	NoEOS        bool   // never append EOS to text and prompt/completion examples
	ChatTemplate string // overrides the tokenizer's chat template ("" = use the tokenizer's)
}

// TokenizeStats summarizes tokenized data.
type TokenizeStats struct {
	Examples   int
	Tokens     int
	LossTokens int // tokens marked for the loss
	// ChatAllTokens counts chat examples whose assistant spans could not be determined, so all
	// their tokens count in the loss; ChatAllTokensSources names them.
	ChatAllTokens        int
	ChatAllTokensSources []string
}

// LoadExamples reads a JSONL file and tokenizes it.
func LoadExamples(path string, tok DataTokenizer, opts TokenizeOptions) ([]Example, TokenizeStats, error) {
	recs, err := ReadJSONL(path)
	if err != nil {
		return nil, TokenizeStats{}, err
	}
	return TokenizeRecords(recs, tok, opts)
}

// TokenizeRecords turns records into examples.
func TokenizeRecords(recs []Record, tok DataTokenizer, opts TokenizeOptions) ([]Example, TokenizeStats, error) {
	var st TokenizeStats
	var eos []int32
	if ids := tok.EOS(); len(ids) > 0 && !opts.NoEOS {
		eos = []int32{int32(ids[0])}
	}
	var tmpl *chat.Template
	var ro chat.Options
	out := make([]Example, 0, len(recs))
	for _, rec := range recs {
		var ex Example
		var err error
		switch rec.Kind {
		case TextRecord:
			ex, err = tokenizeText(tok, rec.Text, eos)
		case PromptCompletionRecord:
			ex, err = tokenizePromptCompletion(tok, rec.Prompt, rec.Completion, eos)
		case ChatRecord:
			if tmpl == nil {
				if tmpl, ro, err = ChatSetup(tok, opts); err != nil {
					return nil, st, fmt.Errorf("%s: %w", rec.Source, err)
				}
			}
			var all bool
			ex, all, err = tokenizeChat(tok, tmpl, ro, rec.Messages)
			if all {
				st.ChatAllTokens++
				st.ChatAllTokensSources = append(st.ChatAllTokensSources, rec.Source)
			}
		default:
			err = fmt.Errorf("unknown record kind %v", rec.Kind)
		}
		if err != nil {
			return nil, st, fmt.Errorf("%s: %w", rec.Source, err)
		}
		ex.Source = rec.Source
		st.Examples++
		st.Tokens += len(ex.Tokens)
		for _, l := range ex.Loss {
			if l {
				st.LossTokens++
			}
		}
		out = append(out, ex)
	}
	return out, st, nil
}

func toInt32(ids []int) ([]int32, error) {
	out := make([]int32, len(ids))
	for i, id := range ids {
		if id < 0 || id > math.MaxInt32 {
			return nil, fmt.Errorf("tokenizer returned id %d", id)
		}
		out[i] = int32(id)
	}
	return out, nil
}

func tokenizeText(tok DataTokenizer, text string, eos []int32) (Example, error) {
	ids, err := toInt32(tok.Encode(text, true))
	if err != nil {
		return Example{}, err
	}
	ids = append(ids, eos...)
	if len(ids) < 2 {
		return Example{}, fmt.Errorf("text encodes to %d token(s); need at least 2", len(ids))
	}
	loss := make([]bool, len(ids))
	for i := range loss {
		loss[i] = true
	}
	return Example{Tokens: ids, Loss: loss}, nil
}

func tokenizePromptCompletion(tok DataTokenizer, prompt, completion string, eos []int32) (Example, error) {
	full, err := toInt32(tok.Encode(prompt+completion, true))
	if err != nil {
		return Example{}, err
	}
	p, err := toInt32(tok.Encode(prompt, true))
	if err != nil {
		return Example{}, err
	}
	k := commonPrefix(full, p)
	if k >= len(full) {
		return Example{}, fmt.Errorf("completion adds no tokens to the prompt")
	}
	if k == 0 {
		return Example{}, fmt.Errorf("prompt encodes to no tokens")
	}
	full = append(full, eos...)
	loss := make([]bool, len(full))
	for i := k; i < len(full); i++ {
		loss[i] = true
	}
	return Example{Tokens: full, Loss: loss}, nil
}

func commonPrefix[T comparable](a, b []T) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// ChatSetup parses the chat template (opts.ChatTemplate, else the tokenizer's) and the special tokens it is
// rendered with (the tokenizer's BOS and first EOS), as apply_chat_template passes them.
func ChatSetup(tok DataTokenizer, opts TokenizeOptions) (*chat.Template, chat.Options, error) {
	src := opts.ChatTemplate
	if src == "" {
		src = tok.ChatTemplate()
	}
	if src == "" {
		return nil, chat.Options{}, fmt.Errorf(`"messages" need a chat template and the tokenizer has none (give one explicitly)`)
	}
	t, err := chat.Parse(src)
	if err != nil {
		return nil, chat.Options{}, err
	}
	var ro chat.Options
	if b := tok.BOS(); b >= 0 {
		ro.BOSToken = tok.TokenString(b)
	}
	if e := tok.EOS(); len(e) > 0 {
		ro.EOSToken = tok.TokenString(e[0])
	}
	return t, ro, nil
}

// tokenizeChat renders and encodes a conversation; all reports the fallback to loss on all tokens.
func tokenizeChat(tok DataTokenizer, t *chat.Template, ro chat.Options, msgs []chat.Message) (ex Example, all bool, err error) {
	text, spans, ok, err := t.AssistantSpans(msgs, ro)
	if err != nil {
		return Example{}, false, err
	}
	ids, err := toInt32(tok.Encode(text, false))
	if err != nil {
		return Example{}, false, err
	}
	if len(ids) < 2 {
		return Example{}, false, fmt.Errorf("conversation encodes to %d token(s); need at least 2", len(ids))
	}
	loss := make([]bool, len(ids))
	if !ok {
		for i := range loss {
			loss[i] = true
		}
		return Example{Tokens: ids, Loss: loss}, true, nil
	}
	// Map byte offsets to token indices: the tokens of text[:p] that agree with the full encoding.
	tokAt := map[int]int{0: 0, len(text): len(ids)}
	boundary := func(p int) (int, error) {
		if k, ok := tokAt[p]; ok {
			return k, nil
		}
		pre, err := toInt32(tok.Encode(text[:p], false))
		if err != nil {
			return 0, err
		}
		k := commonPrefix(pre, ids)
		tokAt[p] = k
		return k, nil
	}
	marked := false
	for _, s := range spans {
		a, err := boundary(s[0])
		if err != nil {
			return Example{}, false, err
		}
		b, err := boundary(s[1])
		if err != nil {
			return Example{}, false, err
		}
		for i := a; i < b; i++ {
			loss[i] = true
			marked = true
		}
	}
	if !marked {
		for i := range loss {
			loss[i] = true
		}
		return Example{Tokens: ids, Loss: loss}, true, nil
	}
	return Example{Tokens: ids, Loss: loss}, false, nil
}
