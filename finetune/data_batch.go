package finetune

// Batching. A row is T+1 tokens: inputs are tokens[0:T], targets tokens[1:T+1], and the weight of a
// target is 1 when its token is marked for the loss, 0 for padding and unmarked (prompt) tokens.
//
//   - packed: all examples' tokens are concatenated in order and cut into windows of T+1 tokens
//     that overlap by one token (window w starts at w·T), so every token but the first is a target
//     exactly once; the last window is padded. Attention crosses example boundaries, as in
//     pretraining.
//   - padded: one example per row, padded with PadID; an example longer than T+1 tokens is cut to
//     T+1 (Truncate, counted in BatchStats.Truncated) or refused.
//
// The order of rows is a fixed permutation per epoch drawn from (Seed, epoch) with a PCG generator;
// the rows of consecutive epochs form one stream, and batch s holds stream rows [s·B, s·B+B). So
// BatchAt is a pure function of (examples, options, step), and a batch may span two epochs.

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"sync"
)

// BatchOptions shapes batches.
type BatchOptions struct {
	SeqLen    int   // T: tokens per row (targets per row)
	BatchSize int   // B: rows per batch
	Pack      bool  // packed rows instead of one padded example per row
	Truncate  bool  // padded mode: cut examples longer than SeqLen+1 tokens instead of refusing them
	PadID     int32 // token id written into padding positions (their weight is 0)
	Seed      uint64
}

// Batch is B rows of T positions, flattened row-major.
type Batch struct {
	Inputs  []int32   // [B*T]
	Targets []int32   // [B*T]
	Weights []float32 // [B*T]: 1 where the target counts in the loss
	B, T    int
}

// BatchStats describes the rows built from the examples.
type BatchStats struct {
	Rows       int // rows per epoch
	Truncated  int // padded mode: examples cut to SeqLen+1 tokens
	Targets    int // target positions holding a real token
	LossTokens int // targets with weight 1
	NoLossRows int // rows without any weighted target (e.g. truncation removed the whole completion)
}

// Batcher serves training batches; it is safe for concurrent use.
type Batcher struct {
	opts BatchOptions
	// packed: one stream; padded: one (possibly truncated) sequence per example.
	seqs  [][]int32
	loss  [][]bool
	rows  []rowRef
	stats BatchStats

	mu    sync.Mutex
	perms map[int][]int32 // epoch → row permutation (the two most recent)
}

// rowRef is a row: T+1 tokens of seqs[seq] starting at off (padded past the end).
type rowRef struct {
	seq, off int
}

// NewBatcher prepares rows from examples.
func NewBatcher(examples []Example, opts BatchOptions) (*Batcher, error) {
	switch {
	case opts.SeqLen < 1:
		return nil, fmt.Errorf("sequence length %d must be >= 1", opts.SeqLen)
	case opts.BatchSize < 1:
		return nil, fmt.Errorf("batch size %d must be >= 1", opts.BatchSize)
	case opts.PadID < 0:
		return nil, fmt.Errorf("pad id %d must be >= 0", opts.PadID)
	case len(examples) == 0:
		return nil, fmt.Errorf("no examples")
	}
	for _, ex := range examples {
		if len(ex.Tokens) == 0 || len(ex.Tokens) != len(ex.Loss) {
			return nil, fmt.Errorf("%s: example has %d tokens and %d loss flags", ex.Source, len(ex.Tokens), len(ex.Loss))
		}
	}
	b := &Batcher{opts: opts, perms: map[int][]int32{}}
	T := opts.SeqLen
	if opts.Pack {
		var stream []int32
		var loss []bool
		for _, ex := range examples {
			stream = append(stream, ex.Tokens...)
			loss = append(loss, ex.Loss...)
		}
		if len(stream) < 2 {
			return nil, fmt.Errorf("the examples hold %d token(s); need at least 2", len(stream))
		}
		b.seqs, b.loss = [][]int32{stream}, [][]bool{loss}
		for off := 0; off+1 < len(stream); off += T {
			b.rows = append(b.rows, rowRef{0, off})
		}
	} else {
		if !opts.Truncate {
			// Refuse with the first offender and how many there are, so one run tells the whole story.
			var first *Example
			tooLong := 0
			for i := range examples {
				if len(examples[i].Tokens) > T+1 {
					if first == nil {
						first = &examples[i]
					}
					tooLong++
				}
			}
			if first != nil {
				return nil, fmt.Errorf("%s: example has %d tokens, more than sequence length + 1 = %d; %d of %d examples are too long (enable truncation or packing)",
					first.Source, len(first.Tokens), T+1, tooLong, len(examples))
			}
		}
		for i, ex := range examples {
			toks, loss := ex.Tokens, ex.Loss
			if len(toks) > T+1 {
				toks, loss = toks[:T+1], loss[:T+1]
				b.stats.Truncated++
			}
			if len(toks) < 2 {
				return nil, fmt.Errorf("%s: example has %d token(s); a padded row needs at least 2", ex.Source, len(toks))
			}
			b.seqs, b.loss = append(b.seqs, toks), append(b.loss, loss)
			b.rows = append(b.rows, rowRef{i, 0})
		}
	}
	b.stats.Rows = len(b.rows)
	for _, r := range b.rows {
		n := 0
		for t := 1; t <= T; t++ {
			p := r.off + t
			if p >= len(b.seqs[r.seq]) {
				break
			}
			b.stats.Targets++
			if b.loss[r.seq][p] {
				n++
			}
		}
		b.stats.LossTokens += n
		if n == 0 {
			b.stats.NoLossRows++
		}
	}
	if b.stats.LossTokens == 0 {
		return nil, fmt.Errorf("no token of the data counts in the loss")
	}
	return b, nil
}

// Stats describes the rows.
func (b *Batcher) Stats() BatchStats { return b.stats }

// StepsPerEpoch is the number of batches that cover every row once (rounded up).
func (b *Batcher) StepsPerEpoch() int {
	return (len(b.rows) + b.opts.BatchSize - 1) / b.opts.BatchSize
}

// Epoch is the number of epochs completed before step (fractional).
func (b *Batcher) Epoch(step int) float64 {
	return float64(step) * float64(b.opts.BatchSize) / float64(len(b.rows))
}

// BatchAt returns the batch of a step (0-based; a negative step is treated as 0). It depends only
// on the examples, the options and step.
func (b *Batcher) BatchAt(step int) Batch {
	step = max(step, 0)
	B, T := b.opts.BatchSize, b.opts.SeqLen
	out := newBatch(B, T)
	R := len(b.rows)
	for r := 0; r < B; r++ {
		g := step*B + r // the stream of rows over all epochs
		epoch, pos := g/R, g%R
		b.fillRow(&out, r, b.rows[b.perm(epoch)[pos]])
	}
	return out
}

func newBatch(B, T int) Batch {
	return Batch{
		Inputs:  make([]int32, B*T),
		Targets: make([]int32, B*T),
		Weights: make([]float32, B*T),
		B:       B, T: T,
	}
}

// fillRow writes row r of out from ref; positions past the sequence end get PadID and weight 0.
func (b *Batcher) fillRow(out *Batch, r int, ref rowRef) {
	T := out.T
	seq, loss := b.seqs[ref.seq], b.loss[ref.seq]
	pad := b.opts.PadID
	for t := 0; t < T; t++ {
		i := r*T + t
		in, tg := ref.off+t, ref.off+t+1
		out.Inputs[i], out.Targets[i], out.Weights[i] = pad, pad, 0
		if in < len(seq) {
			out.Inputs[i] = seq[in]
		}
		if tg < len(seq) {
			out.Targets[i] = seq[tg]
			if loss[tg] {
				out.Weights[i] = 1
			}
		}
	}
}

// WithSeed serves the same rows in the order another seed draws (a sweep's seeds share one tokenization).
func (b *Batcher) WithSeed(seed uint64) *Batcher {
	opts := b.opts
	opts.Seed = seed
	return &Batcher{opts: opts, seqs: b.seqs, loss: b.loss, rows: b.rows, stats: b.stats, perms: map[int][]int32{}}
}

func (b *Batcher) perm(epoch int) []int32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.perms[epoch]; ok {
		return p
	}
	p := permutation(len(b.rows), b.opts.Seed, uint64(epoch))
	for e := range b.perms {
		if e < epoch-1 || e > epoch+1 {
			delete(b.perms, e)
		}
	}
	b.perms[epoch] = p
	return p
}

// permutation is a Fisher–Yates shuffle of [0, n) driven only by PCG's raw 64-bit outputs
// (its algorithm is fixed), so orders do not change with Go's rand helper implementations.
func permutation(n int, seed, stream uint64) []int32 {
	src := rand.NewPCG(seed, stream^0x9e3779b97f4a7c15)
	p := make([]int32, n)
	for i := range p {
		p[i] = int32(i)
	}
	for i := n - 1; i > 0; i-- {
		j := boundedRand(src, uint64(i+1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// boundedRand is a uniform value in [0, n) (Lemire's multiply-and-reject).
func boundedRand(src *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(src.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(src.Uint64(), n)
		}
	}
	return hi
}

// EvalBatches builds the whole evaluation set as fixed batches: rows in order (no shuffling), the
// last batch completed with all-padding rows of weight 0.
func EvalBatches(examples []Example, opts BatchOptions) ([]Batch, BatchStats, error) {
	b, err := NewBatcher(examples, opts)
	if err != nil {
		return nil, BatchStats{}, err
	}
	B, T := opts.BatchSize, opts.SeqLen
	var out []Batch
	for start := 0; start < len(b.rows); start += B {
		batch := newBatch(B, T)
		for r := 0; r < B; r++ {
			if start+r < len(b.rows) {
				b.fillRow(&batch, r, b.rows[start+r])
				continue
			}
			for t := 0; t < T; t++ {
				batch.Inputs[r*T+t], batch.Targets[r*T+t] = opts.PadID, opts.PadID
			}
		}
		out = append(out, batch)
	}
	return out, b.stats, nil
}

// SplitEval moves round(fraction·n) examples (at least 1, leaving at least 1) chosen by seed into
// an evaluation set; both parts keep the original order.
func SplitEval(examples []Example, fraction float64, seed uint64) (train, eval []Example, err error) {
	n := len(examples)
	if !(fraction > 0 && fraction < 1) {
		return nil, nil, fmt.Errorf("eval fraction %g must be in (0, 1)", fraction)
	}
	if n < 2 {
		return nil, nil, fmt.Errorf("%d example(s) cannot be split into train and eval", n)
	}
	k := int(math.Round(fraction * float64(n)))
	k = min(max(k, 1), n-1)
	p := permutation(n, seed, 0x5eed_e7a1)
	isEval := make([]bool, n)
	for _, i := range p[:k] {
		isEval[i] = true
	}
	for i, ex := range examples {
		if isEval[i] {
			eval = append(eval, ex)
		} else {
			train = append(train, ex)
		}
	}
	return train, eval, nil
}
