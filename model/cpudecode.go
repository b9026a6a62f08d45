package model

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"unsafe"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/gemv"
)

// LowRank is an adapter folded for decoding: the module's output gains Scale·B·(A·x), A [Rank, In], B [Out, Rank].
type LowRank struct {
	A, B      []float32
	Rank      int
	Scale     float32
	In, Out   int
	aMat, bMt *gemv.Matrix
}

// CPUDecoder decodes on the CPU without a graph: every matmul reads the frozen weight where the Go backend holds it,
// in its storage dtype (gemv), so a decoded token costs one pass over the weights. It serves several sequences at
// once (Batch slots, each with its own KV cache and position): StepBatch feeds one token to each of several slots
// and reads the weights once for all of them. Prompts are fed up to passRows positions per pass.
//
// It borrows the model's weight buffers: Close it before finalizing the model. It needs the Go backend and float32
// activations (NewCPUDecoder says why when it cannot be used); the graph Decoder serves every other case and is
// what the CPU decoder is tested against.
type CPUDecoder struct {
	cfg      Config
	capacity int
	layers   []cpuLayer
	embed    *gemv.Matrix
	head     *gemv.Matrix
	norm     []float32
	invFreq  []float32
	adapters map[string]*LowRank
	slots    []cpuSlot
	scratch  []float32
}

type cpuSlot struct {
	keys, values [][]float32 // per layer: [kvHeads, capacity, headDim]
	pos          int
}

type cpuLayer struct {
	inNorm, postNorm, qNorm, kNorm []float32
	q, k, v, o, gate, up, down     *gemv.Matrix
	qBias, kBias, vBias            []float32
	prefix                         string
}

// CPUDecodeSupported reports why the model cannot decode on the CPU path (nil when it can).
func (m *Model) CPUDecodeSupported() error {
	if !isGoBackend(m.Backend) {
		return fmt.Errorf("the CPU decoder needs the Go backend (this model is on %s)", m.Backend.Name())
	}
	if m.DType != dtypes.Float32 {
		return fmt.Errorf("the CPU decoder computes in float32 (the model's activations are %s)", m.DType)
	}
	return nil
}

// NewCPUDecoder prepares batch slots of capacity positions each; adapters (by module path, may be nil) join every
// product of their module.
func (m *Model) NewCPUDecoder(capacity, batch int, adapters map[string]*LowRank) (*CPUDecoder, error) {
	if err := m.CPUDecodeSupported(); err != nil {
		return nil, err
	}
	if capacity <= 0 || batch <= 0 {
		return nil, fmt.Errorf("CPU decoder capacity %d and batch %d must be positive", capacity, batch)
	}
	c := m.Config
	d := &CPUDecoder{cfg: c, capacity: capacity, adapters: map[string]*LowRank{}}
	inv, err := c.RopeInverseFrequencies()
	if err != nil {
		return nil, err
	}
	for _, f := range inv {
		d.invFreq = append(d.invFreq, float32(f))
	}
	var errs []error
	mat := func(name string) *gemv.Matrix {
		w, err := m.matrix(name)
		if err != nil {
			errs = append(errs, err)
		}
		return w
	}
	vec := func(name string) []float32 {
		v, err := m.vector(name)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	optVec := func(name string) []float32 {
		if _, ok := slices.BinarySearch(m.Names, name); !ok {
			return nil
		}
		return vec(name)
	}
	for l := range c.NumLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		layer := cpuLayer{
			prefix: p, inNorm: vec(p + "input_layernorm.weight"), postNorm: vec(p + "post_attention_layernorm.weight"),
			q: mat(p + "self_attn.q_proj.weight"), k: mat(p + "self_attn.k_proj.weight"),
			v: mat(p + "self_attn.v_proj.weight"), o: mat(p + "self_attn.o_proj.weight"),
			gate: mat(p + "mlp.gate_proj.weight"), up: mat(p + "mlp.up_proj.weight"), down: mat(p + "mlp.down_proj.weight"),
			qBias: optVec(p + "self_attn.q_proj.bias"), kBias: optVec(p + "self_attn.k_proj.bias"),
			vBias: optVec(p + "self_attn.v_proj.bias"),
		}
		if c.QKNorm {
			layer.qNorm, layer.kNorm = vec(p+"self_attn.q_norm.weight"), vec(p+"self_attn.k_norm.weight")
		}
		d.layers = append(d.layers, layer)
	}
	d.embed = mat("model.embed_tokens.weight")
	d.head = d.embed
	if _, ok := slices.BinarySearch(m.Names, "lm_head.weight"); ok && !c.TieEmbeddings {
		d.head = mat("lm_head.weight")
	}
	d.norm = vec("model.norm.weight")
	if err := joinErrs(errs); err != nil {
		return nil, err
	}
	for module, a := range adapters {
		if a.Rank <= 0 || len(a.A) != a.Rank*a.In || len(a.B) != a.Out*a.Rank {
			return nil, fmt.Errorf("adapter %s: factors of %d and %d values do not make a rank-%d [%d, %d] pair",
				module, len(a.A), len(a.B), a.Rank, a.Out, a.In)
		}
		a.aMat = &gemv.Matrix{Kind: gemv.F32, Rows: a.Rank, Cols: a.In, F32: a.A}
		a.bMt = &gemv.Matrix{Kind: gemv.F32, Rows: a.Out, Cols: a.Rank, F32: a.B}
		d.adapters[module] = a
	}
	d.slots = make([]cpuSlot, batch)
	for i := range d.slots {
		s := &d.slots[i]
		for range c.NumLayers {
			s.keys = append(s.keys, make([]float32, c.NumKVHeads*capacity*c.HeadDim))
			s.values = append(s.values, make([]float32, c.NumKVHeads*capacity*c.HeadDim))
		}
	}
	return d, nil
}

func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}

// matrix views a weight's backend memory as a gemv matrix (no copy).
func (m *Model) matrix(name string) (*gemv.Matrix, error) {
	t, err := m.param(name)
	if err != nil {
		return nil, err
	}
	dims := t.Shape().Dimensions
	if len(dims) != 2 {
		return nil, fmt.Errorf("weight %s has shape %v, want a matrix", name, dims)
	}
	w := &gemv.Matrix{Rows: dims[0], Cols: dims[1]}
	var bytes []byte
	if err := t.ConstBytes(func(b []byte) { bytes = b }); err != nil {
		return nil, fmt.Errorf("weight %s: %w", name, err)
	}
	switch t.DType() {
	case dtypes.Float32:
		w.Kind, w.F32 = gemv.F32, unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(bytes))), len(bytes)/4)
	case dtypes.BFloat16, dtypes.Float16:
		w.Kind, w.Bits = gemv.BF16, unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(bytes))), len(bytes)/2)
		if t.DType() == dtypes.Float16 {
			w.Kind = gemv.F16
		}
	default:
		return nil, fmt.Errorf("weight %s is held as %s; the CPU decoder reads f32, bf16 and f16", name, t.DType())
	}
	return w, w.Check()
}

// vector copies a norm weight or bias as float32.
func (m *Model) vector(name string) ([]float32, error) {
	t, err := m.param(name)
	if err != nil {
		return nil, err
	}
	if t.DType() != dtypes.Float32 {
		return nil, fmt.Errorf("vector %s is held as %s, want float32", name, t.DType())
	}
	var out []float32
	err = t.ConstFlatData(func(flat any) { out = slices.Clone(flat.([]float32)) })
	return out, err
}

func (m *Model) param(name string) (*tensors.Tensor, error) {
	i, ok := slices.BinarySearch(m.Names, name)
	if !ok {
		return nil, fmt.Errorf("model has no weight %s", name)
	}
	return m.Params[i], nil
}

// Batch is the number of sequences the decoder holds.
func (d *CPUDecoder) Batch() int { return len(d.slots) }

// Capacity is the most positions each sequence holds.
func (d *CPUDecoder) Capacity() int { return d.capacity }

// PosOf is the number of positions sequence slot has consumed.
func (d *CPUDecoder) PosOf(slot int) int { return d.slots[slot].pos }

// ResetSlot empties one sequence's cache.
func (d *CPUDecoder) ResetSlot(slot int) { d.slots[slot].pos = 0 }

// Prefill feeds tokens to slot 0 (TokenDecoder).
func (d *CPUDecoder) Prefill(tokens []int) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("prefill needs at least one token")
	}
	out, err := d.Feed([]int{0}, [][]int{tokens})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// Step feeds one token to slot 0 (TokenDecoder).
func (d *CPUDecoder) Step(token int) ([]float32, error) { return d.Prefill([]int{token}) }

// Pos is the number of positions slot 0 has consumed (TokenDecoder).
func (d *CPUDecoder) Pos() int { return d.slots[0].pos }

// Close drops the decoder's view of the weights and its caches.
func (d *CPUDecoder) Close() { *d = CPUDecoder{} }

// passRows is the most positions one pass feeds: a prompt's positions share each read of the weights (gemv serves up
// to 32 rows per pass over a matrix from the L2 cache).
const passRows = 64

// Feed appends tokens[i] to slot slots[i]'s sequence (several tokens per slot for a prompt) in passes of up to
// passRows positions, and returns the logits after each slot's last token.
func (d *CPUDecoder) Feed(slots []int, tokens [][]int) ([][]float32, error) {
	if len(slots) != len(tokens) {
		return nil, fmt.Errorf("feed: %d slots and %d token lists", len(slots), len(tokens))
	}
	seen := map[int]bool{}
	for i, s := range slots {
		if s < 0 || s >= len(d.slots) || seen[s] {
			return nil, fmt.Errorf("feed: slot %d is not one of %d distinct slots", s, len(d.slots))
		}
		seen[s] = true
		if len(tokens[i]) == 0 {
			return nil, fmt.Errorf("feed: slot %d gets no tokens", s)
		}
		if p := d.slots[s].pos; p+len(tokens[i]) > d.capacity {
			return nil, fmt.Errorf("context full: %d positions used + %d new > capacity %d", p, len(tokens[i]), d.capacity)
		}
		for _, t := range tokens[i] {
			if t < 0 || t >= d.cfg.VocabSize {
				return nil, fmt.Errorf("token %d is outside the vocabulary (0..%d)", t, d.cfg.VocabSize-1)
			}
		}
	}
	logits := make([][]float32, len(slots))
	// Each pass takes up to passRows rows: the next tokens of the slots in order.
	next, base := make([]int, len(slots)), make([]int, len(slots))
	for i, s := range slots {
		base[i] = d.slots[s].pos
	}
	for {
		var rows []cpuRow
		for i, s := range slots {
			for next[i] < len(tokens[i]) && len(rows) < passRows {
				rows = append(rows, cpuRow{slot: s, pos: base[i] + next[i], token: tokens[i][next[i]],
					last: next[i] == len(tokens[i])-1, out: i})
				next[i]++
			}
		}
		if len(rows) == 0 {
			return logits, nil
		}
		for i, l := range d.forward(rows) {
			if l != nil {
				logits[rows[i].out] = l
			}
		}
		for _, r := range rows {
			d.slots[r.slot].pos = r.pos + 1
		}
	}
}

// cpuRow is one position of one sequence in a pass.
type cpuRow struct {
	slot, pos, token, out int
	last                  bool // its logits are wanted
}

// forward runs one pass; it returns logits for the rows marked last (nil for the others).
func (d *CPUDecoder) forward(rows []cpuRow) [][]float32 {
	c := d.cfg
	n, hidden := len(rows), c.HiddenSize
	qDim, kvDim := c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim
	// Scratch for this pass, reused across passes: decoding allocates nothing per token.
	d.scratch = slices.Grow(d.scratch[:0], n*(3*hidden+2*qDim+2*kvDim+2*c.IntermediateSize))
	buf := d.scratch[:cap(d.scratch)]
	take := func(size int) []float32 {
		b := buf[:size:size]
		buf = buf[size:]
		return b
	}
	x, h, tmp := take(n*hidden), take(n*hidden), take(n*hidden)
	q, k, v, att := take(n*qDim), take(n*kvDim), take(n*kvDim), take(n*qDim)
	gate, up := take(n*c.IntermediateSize), take(n*c.IntermediateSize)
	for i, r := range rows {
		d.embed.Row(r.token, x[i*hidden:(i+1)*hidden])
	}
	for li := range d.layers {
		l := &d.layers[li]
		rmsNormRows(h, x, l.inNorm, hidden, c.RMSNormEps)
		d.project(l.prefix+"self_attn.q_proj", l.q, l.qBias, q, h, n)
		d.project(l.prefix+"self_attn.k_proj", l.k, l.kBias, k, h, n)
		d.project(l.prefix+"self_attn.v_proj", l.v, l.vBias, v, h, n)
		if l.qNorm != nil {
			rmsNormRows(q, q, l.qNorm, c.HeadDim, c.RMSNormEps)
			rmsNormRows(k, k, l.kNorm, c.HeadDim, c.RMSNormEps)
		}
		for i, r := range rows {
			d.rope(q[i*qDim:(i+1)*qDim], r.pos)
			d.rope(k[i*kvDim:(i+1)*kvDim], r.pos)
			s := &d.slots[r.slot]
			for kh := range c.NumKVHeads {
				off := (kh*d.capacity + r.pos) * c.HeadDim
				copy(s.keys[li][off:off+c.HeadDim], k[i*kvDim+kh*c.HeadDim:])
				copy(s.values[li][off:off+c.HeadDim], v[i*kvDim+kh*c.HeadDim:])
			}
		}
		d.attention(li, rows, q, att)
		d.project(l.prefix+"self_attn.o_proj", l.o, nil, tmp, att, n)
		addInto(x, tmp)
		rmsNormRows(h, x, l.postNorm, hidden, c.RMSNormEps)
		d.project(l.prefix+"mlp.gate_proj", l.gate, nil, gate, h, n)
		d.project(l.prefix+"mlp.up_proj", l.up, nil, up, h, n)
		for j, g := range gate {
			gate[j] = g / (1 + float32(math.Exp(float64(-g)))) * up[j]
		}
		d.project(l.prefix+"mlp.down_proj", l.down, nil, tmp, gate, n)
		addInto(x, tmp)
	}
	var want []int
	for i, r := range rows {
		if r.last {
			want = append(want, i)
		}
	}
	out := make([][]float32, n)
	if len(want) == 0 {
		return out
	}
	last := make([]float32, len(want)*hidden)
	for j, i := range want {
		copy(last[j*hidden:], x[i*hidden:(i+1)*hidden])
	}
	rmsNormRows(last, last, d.norm, hidden, c.RMSNormEps)
	logits := make([]float32, len(want)*c.VocabSize)
	d.head.MulT(logits, c.VocabSize, last, len(want))
	for j, i := range want {
		out[i] = logits[j*c.VocabSize : (j+1)*c.VocabSize : (j+1)*c.VocabSize]
	}
	return out
}

// project computes dst = x·Wᵀ (+ bias) (+ the module's adapter) for n rows.
func (d *CPUDecoder) project(module string, w *gemv.Matrix, bias, dst, x []float32, n int) {
	w.MulT(dst, w.Rows, x, n)
	if bias != nil {
		for i := range n {
			addInto(dst[i*w.Rows:(i+1)*w.Rows], bias)
		}
	}
	a := d.adapters[module]
	if a == nil {
		return
	}
	mid := make([]float32, n*a.Rank)
	a.aMat.MulT(mid, a.Rank, x, n)
	delta := make([]float32, n*a.Out)
	a.bMt.MulT(delta, a.Out, mid, n)
	for j, v := range delta {
		dst[j] += a.Scale * v
	}
}

// attention computes each row's attention output over its slot's cache, positions 0..pos (within the sliding
// window), for every head; heads and rows are split over the cores when the work is large.
func (d *CPUDecoder) attention(layer int, rows []cpuRow, q, out []float32) {
	c := d.cfg
	heads, hd := c.NumHeads, c.HeadDim
	group := heads / c.NumKVHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	one := func(task int, scores []float32) {
		i, h := task/heads, task%heads
		r := rows[i]
		s := &d.slots[r.slot]
		kh := h / group
		lo := 0
		if c.SlidingWindow > 0 {
			lo = max(0, r.pos-c.SlidingWindow+1)
		}
		qv := q[(i*heads+h)*hd : (i*heads+h+1)*hd]
		keys, values := s.keys[layer][kh*d.capacity*hd:], s.values[layer][kh*d.capacity*hd:]
		scores = scores[:r.pos+1-lo]
		best := float32(math.Inf(-1))
		for p := lo; p <= r.pos; p++ {
			var dot float32
			kv := keys[p*hd : (p+1)*hd]
			for j, qj := range qv {
				dot += qj * scale * kv[j]
			}
			scores[p-lo] = dot
			best = max(best, dot)
		}
		var sum float32
		for j, sc := range scores {
			e := float32(math.Exp(float64(sc - best)))
			scores[j] = e
			sum += e
		}
		o := out[(i*heads+h)*hd : (i*heads+h+1)*hd]
		clear(o)
		for p := lo; p <= r.pos; p++ {
			wgt := scores[p-lo] / sum
			vv := values[p*hd : (p+1)*hd]
			for j := range o {
				o[j] += wgt * vv[j]
			}
		}
	}
	tasks := len(rows) * heads
	work := 0
	for _, r := range rows {
		work += (r.pos + 1) * heads * hd
	}
	workers := runtime.GOMAXPROCS(0)
	if workers == 1 || work < 1<<16 {
		scores := make([]float32, d.capacity)
		for t := range tasks {
			one(t, scores)
		}
		return
	}
	var wg sync.WaitGroup
	per := (tasks + workers - 1) / workers
	for lo := 0; lo < tasks; lo += per {
		wg.Go(func() {
			scores := make([]float32, d.capacity)
			for t := lo; t < min(lo+per, tasks); t++ {
				one(t, scores)
			}
		})
	}
	wg.Wait()
}

// rope rotates every head of x (heads·headDim values) to position pos, in HF's rotate-half layout, computing the
// angles in float32 as the graph does.
func (d *CPUDecoder) rope(x []float32, pos int) {
	hd := d.cfg.HeadDim
	half := hd / 2
	for j, f := range d.invFreq {
		angle := float32(pos) * f
		cos, sin := float32(math.Cos(float64(angle))), float32(math.Sin(float64(angle)))
		for h := 0; h+hd <= len(x); h += hd {
			a, b := x[h+j], x[h+j+half]
			x[h+j] = a*cos - b*sin
			x[h+j+half] = b*cos + a*sin
		}
	}
}

// rmsNormRows normalizes each width-long row of x into dst (may alias) and scales by weight.
func rmsNormRows(dst, x, weight []float32, width int, eps float64) {
	for lo := 0; lo < len(x); lo += width {
		row := x[lo : lo+width]
		var ss float32
		for _, v := range row {
			ss += v * v
		}
		inv := 1 / float32(math.Sqrt(float64(ss/float32(width)+float32(eps))))
		for j, v := range row {
			dst[lo+j] = v * inv * weight[j]
		}
	}
}

func addInto(dst, x []float32) {
	for j, v := range x {
		dst[j] += v
	}
}
