package tokenizer

// postProcessor adds special tokens around a single encoded sequence.
type postProcessor interface {
	process(ids []int, addSpecial bool) []int
}

type seqPostProcessor []postProcessor

func (q seqPostProcessor) process(ids []int, addSpecial bool) []int {
	for _, p := range q {
		ids = p.process(ids, addSpecial)
	}
	return ids
}

// templatePiece is one element of a TemplateProcessing "single" template: either the sequence
// itself (special == nil) or the ids of a special token.
type templatePiece struct {
	special []int
	isSeq   bool
}

type templateProcessor struct {
	single []templatePiece
}

func (t *templateProcessor) process(ids []int, addSpecial bool) []int {
	n := len(ids)
	if addSpecial {
		for _, p := range t.single {
			n += len(p.special)
		}
	}
	out := make([]int, 0, n)
	for _, p := range t.single {
		if p.isSeq {
			out = append(out, ids...)
		} else if addSpecial {
			out = append(out, p.special...)
		}
	}
	return out
}

// wrapProcessor is BertProcessing / RobertaProcessing for a single sequence: first A last.
type wrapProcessor struct {
	first, last int
}

func (w wrapProcessor) process(ids []int, addSpecial bool) []int {
	if !addSpecial {
		return ids
	}
	out := make([]int, 0, len(ids)+2)
	out = append(out, w.first)
	out = append(out, ids...)
	return append(out, w.last)
}

// passProcessor is a post-processor that changes no ids (ByteLevel: offsets only).
type passProcessor struct{}

func (passProcessor) process(ids []int, _ bool) []int { return ids }

// leadingSpecial returns the first special-token id of a template, or -1.
func leadingSpecial(p postProcessor) int {
	switch v := p.(type) {
	case *templateProcessor:
		if len(v.single) > 0 && !v.single[0].isSeq && len(v.single[0].special) == 1 {
			return v.single[0].special[0]
		}
	case wrapProcessor:
		return v.first
	case seqPostProcessor:
		for _, q := range v {
			if id := leadingSpecial(q); id >= 0 {
				return id
			}
		}
	}
	return -1
}
