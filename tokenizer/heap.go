package tokenizer

// priorityQueue is a binary heap ordered by before (the item that comes first is popped first). Both merge loops
// (HF BPE by rank, SentencePiece by score) use it; container/heap's interface boxing costs more here.
type priorityQueue[T any] struct {
	items  []T
	before func(a, b T) bool
}

func (q *priorityQueue[T]) len() int { return len(q.items) }

func (q *priorityQueue[T]) push(x T) {
	q.items = append(q.items, x)
	a := q.items
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if !q.before(a[i], a[p]) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (q *priorityQueue[T]) pop() T {
	a := q.items
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(a) {
			break
		}
		k := l
		if r := l + 1; r < len(a) && q.before(a[r], a[l]) {
			k = r
		}
		if !q.before(a[k], a[i]) {
			break
		}
		a[i], a[k] = a[k], a[i]
		i = k
	}
	q.items = a
	return top
}
