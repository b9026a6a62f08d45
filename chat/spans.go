package chat

// AssistantSpans: finding the assistant turns in a rendered conversation, without template-specific knowledge.
//
// If the template marks them with {% generation %} blocks, those spans are used. Otherwise the
// conversation is rendered incrementally. For assistant message i:
//
//   - start: render(messages[:i], add_generation_prompt=true) must be a prefix of the full
//     render; the turn starts where it ends (after the assistant header).
//   - end: where the full render stops agreeing with renders that end after message i:
//     render(messages[:i+1]) and render(messages[:i+1] + a probe message with a role no template
//     knows). A candidate counts if it is a prefix of the full render, or if the text from start
//     to where it diverges holds the (trimmed) content and the names of the tools the turn calls; the smallest
//     such end is taken. This keeps the end-of-turn text (e.g. <|im_end|>, <|eot_id|>) in the
//     turn. With templates that begin every turn with a fixed token, that token can be included
//     as well (e.g. <|start_header_id|> for the @lenml Llama-3 template, which always appends an
//     assistant header): a fixed template token, never the next message's content.
//
// If any step fails (a prefix does not match, no candidate holds the content, spans overlap),
// ok is false (finetune then puts the loss on all tokens).

import "strings"

const probeRole = "\x00saddle-probe"

// AssistantSpans renders msgs and returns the byte ranges of the assistant turns in the text (content and the
// template's end-of-turn text), from {% generation %} blocks if the template has them, else by incremental
// rendering (see above). ok is false when the turns cannot be located; err is a render error.
func (t *Template) AssistantSpans(msgs []Message, ro Options) (text string, spans [][2]int, ok bool, err error) {
	text, gen, err := t.render(msgs, ro)
	if err != nil {
		return "", nil, false, err
	}
	if len(gen) > 0 {
		return text, gen, true, nil
	}
	genRO := ro
	genRO.AddGenerationPrompt = true
	prev := 0
	for i, m := range msgs {
		if m.Role != "assistant" {
			continue
		}
		prefix, _, err := t.render(msgs[:i], genRO)
		if err != nil || !strings.HasPrefix(text, prefix) {
			return text, nil, false, nil
		}
		start := len(prefix)
		// What the turn must hold: its (trimmed) content and the names of the tools it calls.
		needles := append([]string{strings.TrimFunc(m.Content, pyIsSpace)}, m.toolCallNames()...)
		holds := func(s string) bool {
			for _, n := range needles {
				if !strings.Contains(s, n) {
					return false
				}
			}
			return true
		}
		end := -1
		withProbe := append(append([]Message(nil), msgs[:i+1]...), Message{Role: probeRole, Content: "\x00"})
		for _, cand := range [][]Message{msgs[:i+1], withProbe} {
			r, _, err := t.render(cand, ro)
			if err != nil {
				continue
			}
			e := runeBoundary(text, commonPrefix(text, r))
			exact := e == len(r) // the full render continues this one
			if e <= start || !(exact || holds(text[start:e])) {
				continue
			}
			if end < 0 || e < end {
				end = e
			}
		}
		if end < 0 || start < prev {
			return text, nil, false, nil
		}
		spans = append(spans, [2]int{start, end})
		prev = end
	}
	return text, spans, len(spans) > 0, nil
}

// commonPrefix is the length of the longest common prefix of a and b, in bytes.
func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// runeBoundary moves p back to the start of the rune it falls in.
func runeBoundary(s string, p int) int {
	for p > 0 && p < len(s) && s[p]&0xC0 == 0x80 {
		p--
	}
	return p
}
