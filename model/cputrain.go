package model

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gomlx/compute/dtypes"

	"github.com/saddle-ml/saddle/internal/gemm"
	"github.com/saddle-ml/saddle/internal/gemv"
	"github.com/saddle-ml/saddle/internal/team"
)

// CPUTrainer computes the training loss of a batch and the gradients of the adapters that join the frozen base, on
// the CPU without a graph: the forward pass of Config.Hidden (start 0, no cache) and the output head, the summed
// weighted token cross entropy (finetune's tokenLoss), and its backward pass written by hand. The frozen weights are
// read where the Go backend holds them, in their storage dtype; every large product goes through internal/gemm.
//
// It borrows the model's weight buffers (as the CPU decoder does): Close it before finalizing the model. It needs
// the Go backend and float32 activations; it supports every option the CPU decoder does (GQA, q/k/v biases, q/k
// norms, sliding windows, RoPE scaling, tied or untied heads, f32/bf16/f16 weights).
//
// The x an adapter's Backward gets holds the values its Forward got, but not necessarily in a buffer left alone in
// between (the norms' outputs are recomputed for the backward pass): an adapter keeps what it needs from x itself.
//
// Memory: per layer it keeps, for N = batch·seq tokens, the layer's input and the residual after attention
// [N, hidden] each, q, k and v after RoPE ([N, heads·headDim], [N, kvHeads·headDim] ×2), the attention output
// [N, heads·headDim], the MLP's gate and up projections [N, ffn] each, two inverse RMS values per token, with q/k
// norms also q and k before the norm, and the attention probabilities (batch·heads·seq² per layer) when all layers'
// fit in CPUTrainProbsBytes (else the backward pass recomputes them). Scratch shared by the layers is about as much
// as one layer's; the logits exist one chunk of token rows at a time (see Bytes).
type CPUTrainer struct {
	cfg                Config
	batch, seq, n      int
	dec                *CPUDecoder // the borrowed weights (its one-position cache is not used)
	adapters           [][numModuleKinds]TrainAdapter
	first              int // lowest layer with an adapter (NumLayers when none)
	cos, sin           []float32
	scale              float32
	storeProbs         bool
	workers            int
	block              int // query rows per attention block
	chunk              int // token rows per loss chunk
	acts               []trainActs
	xL, invL           []float32 // the last block's output and the final norm's inverse RMS
	rowLoss            []float64
	h, dx, dh          []float32 // [N, hidden]
	datt, dq, dkH, dvH []float32 // [N, heads·headDim]
	dk, dv             []float32 // [N, kvHeads·headDim]
	act, dact          []float32 // [N, ffn]
	logits, hc, dhc    []float32 // one loss chunk: [chunk, vocab], [chunk, hidden] ×2
	scratch            [][]float32
	times              [numPhases]time.Duration
	last               time.Time
	weighted           []int
}

// CPUTrainProbsBytes bounds the memory the CPU trainer spends on keeping every layer's attention probabilities for
// the backward pass; above it they are recomputed there (one more q·kᵀ product and softmax per head).
var CPUTrainProbsBytes int64 = 1 << 30

// CPUTrainLogitsBytes bounds the CPU trainer's logits buffer: the loss takes as many token rows at a time as fit
// (at least 16). Each chunk packs the whole output head twice (its products with the chunk's hidden states and
// with their logits' gradient), so small chunks cost: a Llama-3.2-1B step over 512 tokens took 4 chunks of 130
// rows with a 64 MB bound, one with this one, and its head's products ran at a lower rate with 130 rows.
const CPUTrainLogitsBytes = 256 << 20

// CPUTrainLossRows is how many token rows of n the CPU trainer's loss takes at a time for a vocabulary of vocab.
func CPUTrainLossRows(n, vocab int) int { return min(n, max(16, CPUTrainLogitsBytes/4/max(vocab, 1))) }

// cpuTrainBlock is how many query rows one block of attention takes (a variable so tests can make blocks small).
var cpuTrainBlock = 64

// trainActs are one layer's forward values that its backward pass reads.
type trainActs struct {
	x, xMid    []float32 // the layer's input and the residual stream after attention [N, hidden]
	inv1, inv2 []float32 // their RMS norms' inverse RMS [N]
	q, k, v    []float32 // q after its norm, RoPE and the 1/√headDim scale [N, heads·hd]; k after RoPE; v
	qRaw, kRaw []float32 // with q/k norms: the projections before the norm
	qInv, kInv []float32 // and the norms' inverse RMS per token and head
	gate, up   []float32 // [N, ffn]
	att        []float32 // the attention output, the o projection's input [N, heads·hd]
	probs      []float32 // [batch, heads, seq, seq] when kept
}

// The module kinds an adapter can join, in forward order.
const (
	modQ = iota
	modK
	modV
	modO
	modGate
	modUp
	modDown
	numModuleKinds
)

var moduleSuffixes = [numModuleKinds]string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
	"self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

// CPUTrainTimes is where the CPU trainer's time went, summed over its calls.
type CPUTrainTimes struct {
	Matmul      time.Duration // the frozen projections' products, forward and backward
	Adapters    time.Duration // the adapters' Forward and Backward
	Attention   time.Duration // attention forward and backward (its products included)
	Elementwise time.Duration // embedding, norms, RoPE, SwiGLU, residuals, gradient reductions
	HeadMatmul  time.Duration // the output head's products (logits and their gradient)
	LossSoftmax time.Duration // log-sum-exp, the loss and the logits' gradient
}

const (
	phMatmul = iota
	phAdapters
	phAttention
	phElementwise
	phHeadMatmul
	phLossSoftmax
	numPhases
)

// CPUTrainSupported reports why the model cannot train on the CPU path (nil when it can).
func (m *Model) CPUTrainSupported() error {
	if !isGoBackend(m.Backend) {
		return fmt.Errorf("the CPU trainer needs the Go backend (this model is on %s)", m.Backend.Name())
	}
	if m.DType != dtypes.Float32 {
		return fmt.Errorf("the CPU trainer computes in float32 (the model's activations are %s)", m.DType)
	}
	if m.Compute != dtypes.Float32 {
		return fmt.Errorf("the CPU trainer multiplies in float32 (the model's compute dtype is %s)", m.Compute)
	}
	return nil
}

// NewCPUTrainer prepares a trainer for batches of batch sequences of seq tokens. adapters maps module paths (such
// as "model.layers.0.self_attn.q_proj"; q, k, v, o, gate, up and down projections) to the adapters that join them.
func (m *Model) NewCPUTrainer(adapters map[string]TrainAdapter, batch, seq int) (*CPUTrainer, error) {
	if err := m.CPUTrainSupported(); err != nil {
		return nil, err
	}
	if batch <= 0 || seq <= 0 {
		return nil, fmt.Errorf("CPU trainer batch %d and sequence length %d must be positive", batch, seq)
	}
	c := m.Config
	dec, err := m.NewCPUDecoder(1, 1, nil) // the weights as the decoder reads them; its one-position cache is unused
	if err != nil {
		return nil, fmt.Errorf("CPU trainer: %w", err)
	}
	n := batch * seq
	hidden, qDim, kvDim, ffn := c.HiddenSize, c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim, c.IntermediateSize
	t := &CPUTrainer{cfg: c, batch: batch, seq: seq, n: n, dec: dec, first: c.NumLayers,
		adapters: make([][numModuleKinds]TrainAdapter, c.NumLayers),
		scale:    float32(1 / math.Sqrt(float64(c.HeadDim))), workers: team.Workers()}
	for module, a := range adapters {
		layer, kind, ok := parseModule(module, c.NumLayers)
		if !ok {
			dec.Close()
			return nil, fmt.Errorf("adapter %q: not a q, k, v, o, gate, up or down projection of one of the %d layers",
				module, c.NumLayers)
		}
		if a == nil {
			dec.Close()
			return nil, fmt.Errorf("adapter %q is nil", module)
		}
		t.adapters[layer][kind] = a
		t.first = min(t.first, layer)
	}
	// RoPE tables for positions 0..seq-1, angles in float32 as the graph and the CPU decoder compute them.
	half := c.HeadDim / 2
	t.cos, t.sin = make([]float32, seq*half), make([]float32, seq*half)
	for p := range seq {
		for j, f := range dec.invFreq {
			angle := float32(p) * f
			t.cos[p*half+j], t.sin[p*half+j] = float32(math.Cos(float64(angle))), float32(math.Sin(float64(angle)))
		}
	}
	t.storeProbs = int64(batch)*int64(c.NumHeads)*int64(seq)*int64(seq)*4*int64(c.NumLayers) <= CPUTrainProbsBytes
	t.block = max(1, min(seq, cpuTrainBlock))
	f := func(size int) []float32 { return make([]float32, size) }
	t.acts = make([]trainActs, c.NumLayers)
	for l := range t.acts {
		a := &t.acts[l]
		a.x, a.xMid, a.inv1, a.inv2 = f(n*hidden), f(n*hidden), f(n), f(n)
		a.q, a.k, a.v = f(n*qDim), f(n*kvDim), f(n*kvDim)
		if c.QKNorm {
			a.qRaw, a.kRaw, a.qInv, a.kInv = f(n*qDim), f(n*kvDim), f(n*c.NumHeads), f(n*c.NumKVHeads)
		}
		a.gate, a.up, a.att = f(n*ffn), f(n*ffn), f(n*qDim)
		if t.storeProbs {
			a.probs = f(batch * c.NumHeads * seq * seq)
		}
	}
	t.xL, t.invL, t.rowLoss = f(n*hidden), f(n), make([]float64, n)
	t.h, t.dx, t.dh = f(n*hidden), f(n*hidden), f(n*hidden)
	t.datt, t.dq, t.dkH, t.dvH = f(n*qDim), f(n*qDim), f(n*qDim), f(n*qDim)
	t.dk, t.dv = f(n*kvDim), f(n*kvDim)
	t.act, t.dact = f(n*ffn), f(n*ffn)
	t.chunk = CPUTrainLossRows(n, c.VocabSize)
	t.logits, t.hc, t.dhc = f(t.chunk*c.VocabSize), f(t.chunk*hidden), f(t.chunk*hidden)
	t.scratch = make([][]float32, t.workers)
	for w := range t.scratch {
		t.scratch[w] = f(2 * t.block * seq)
	}
	t.weighted = make([]int, 0, n)
	return t, nil
}

// parseModule splits "model.layers.<l>.<suffix>" into the layer and module kind.
func parseModule(module string, layers int) (layer, kind int, ok bool) {
	rest, found := strings.CutPrefix(module, "model.layers.")
	if !found {
		return 0, 0, false
	}
	num, suffix, found := strings.Cut(rest, ".")
	l, err := strconv.Atoi(num)
	if !found || err != nil || l < 0 || l >= layers || strconv.Itoa(l) != num {
		return 0, 0, false
	}
	k := slices.Index(moduleSuffixes[:], suffix)
	return l, k, k >= 0
}

// Bytes is the memory the trainer allocated (its buffers; the weights are the model's).
func (t *CPUTrainer) Bytes() int64 {
	n := 0
	for _, a := range t.acts {
		for _, b := range [][]float32{a.x, a.xMid, a.inv1, a.inv2, a.q, a.k, a.v, a.qRaw, a.kRaw, a.qInv, a.kInv,
			a.gate, a.up, a.att, a.probs} {
			n += len(b)
		}
	}
	for _, b := range [][]float32{t.cos, t.sin, t.xL, t.invL, t.h, t.dx, t.dh, t.datt, t.dq, t.dkH, t.dvH, t.dk, t.dv,
		t.act, t.dact, t.logits, t.hc, t.dhc} {
		n += len(b)
	}
	for _, b := range t.scratch {
		n += len(b)
	}
	return int64(n)*4 + int64(len(t.rowLoss))*8
}

// Close drops the trainer's view of the weights and its buffers.
func (t *CPUTrainer) Close() {
	if t.dec != nil {
		t.dec.Close()
	}
	*t = CPUTrainer{}
}

// Times returns where the trainer's time went since it was made (or since ResetTimes).
func (t *CPUTrainer) Times() CPUTrainTimes {
	return CPUTrainTimes{Matmul: t.times[phMatmul], Adapters: t.times[phAdapters], Attention: t.times[phAttention],
		Elementwise: t.times[phElementwise], HeadMatmul: t.times[phHeadMatmul], LossSoftmax: t.times[phLossSoftmax]}
}

// ResetTimes zeroes Times.
func (t *CPUTrainer) ResetTimes() { t.times = [numPhases]time.Duration{} }

// lap charges the time since the previous lap to phase p.
func (t *CPUTrainer) lap(p int) {
	now := time.Now()
	t.times[p] += now.Sub(t.last)
	t.last = now
}

// Loss runs the forward pass on a batch of tokens [batch, seq] (row-major, each row a sequence from position 0) and
// returns the summed weighted cross entropy of targets, Σ weight·(logsumexp(logits) − logits[target]), and the sum
// of the weights. It calls each adapter's Forward once and no Backward.
func (t *CPUTrainer) Loss(tokens, targets []int32, weights []float32) (sum, weightSum float64, err error) {
	return t.run(tokens, targets, weights, false)
}

// LossAndGrad is Loss that then runs the backward pass: each adapter's Backward is called once, in reverse order,
// so the adapters accumulate the gradient of sum (summed over tokens, not averaged).
func (t *CPUTrainer) LossAndGrad(tokens, targets []int32, weights []float32) (sum, weightSum float64, err error) {
	return t.run(tokens, targets, weights, true)
}

func (t *CPUTrainer) run(tokens, targets []int32, weights []float32, grad bool) (sum, weightSum float64, err error) {
	if t.dec == nil {
		return 0, 0, fmt.Errorf("the CPU trainer is closed")
	}
	if len(tokens) != t.n || len(targets) != t.n || len(weights) != t.n {
		return 0, 0, fmt.Errorf("CPU trainer: %d tokens, %d targets and %d weights for a batch of %d×%d = %d",
			len(tokens), len(targets), len(weights), t.batch, t.seq, t.n)
	}
	vocab := int32(t.cfg.VocabSize)
	for i := range t.n {
		if tokens[i] < 0 || tokens[i] >= vocab {
			return 0, 0, fmt.Errorf("CPU trainer: token %d at %d is outside the vocabulary (0..%d)", tokens[i], i, vocab-1)
		}
		if targets[i] < 0 || targets[i] >= vocab {
			return 0, 0, fmt.Errorf("CPU trainer: target %d at %d is outside the vocabulary (0..%d)", targets[i], i, vocab-1)
		}
	}
	t.last = time.Now()
	t.forward(tokens)
	grad = grad && t.first < t.cfg.NumLayers
	sum, weightSum = t.loss(targets, weights, grad)
	if grad {
		t.backward()
	}
	return sum, weightSum, nil
}

// parallel runs fn over [0, n) in contiguous ranges, one per worker, when the work (n·cost) is worth it.
func (t *CPUTrainer) parallel(n, cost int, fn func(lo, hi int)) {
	workers := min(t.workers, n)
	if workers <= 1 || n*cost < 1<<14 {
		fn(0, n)
		return
	}
	team.For(n, (n+workers-1)/workers, workers, func(_, lo, hi int) { fn(lo, hi) })
}

// each runs fn(worker, i) for i in [0, n), the workers taking tasks in turn.
func (t *CPUTrainer) each(n int, fn func(w, i int)) {
	team.For(n, 1, t.workers, func(w, i, _ int) { fn(w, i) })
}

// project computes y = x·Wᵀ (+ bias) + the adapter's output for all N rows, adding to y when accumulate is set; the
// adapter's low-rank term goes into the weight's product.
func (t *CPUTrainer) project(a TrainAdapter, w *gemv.Matrix, bias, y, x []float32, accumulate bool) {
	n := t.n
	var u []float32
	var r int
	var v gemm.View
	if a != nil {
		u, r, v = a.Forward(x, n)
		t.lap(phAdapters)
	}
	gemm.MulPair(y, w.Rows, n, w.Rows, w.Cols, gemm.RowMajor(x, w.Cols), gemm.Weight(w).T(), r, gemm.RowMajor(u, r), v,
		accumulate)
	t.lap(phMatmul)
	if bias != nil {
		t.parallel(n, w.Rows, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				addInto(y[i*w.Rows:(i+1)*w.Rows], bias)
			}
		})
		t.lap(phElementwise)
	}
}

// projectBack runs the adapter's Backward, then adds (or, unless accumulate, sets) dx = dy·W + the adapter's input
// gradient when dx is wanted.
func (t *CPUTrainer) projectBack(a TrainAdapter, w *gemv.Matrix, x, dy, dx []float32, accumulate bool) {
	var g []float32
	var r int
	var v gemm.View
	if a != nil {
		g, r, v = a.Backward(x, dy, t.n)
		t.lap(phAdapters)
	}
	if dx != nil {
		gemm.MulPair(dx, w.Cols, t.n, w.Cols, w.Rows, gemm.RowMajor(dy, w.Rows), gemm.Weight(w), r, gemm.RowMajor(g, r), v,
			accumulate)
		t.lap(phMatmul)
	}
}

func (t *CPUTrainer) forward(tokens []int32) {
	c := t.cfg
	hidden, hd := c.HiddenSize, c.HeadDim
	qDim, kvDim := c.NumHeads*hd, c.NumKVHeads*hd
	x0 := t.acts[0].x
	t.parallel(t.n, hidden, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			t.dec.embed.Row(int(tokens[i]), x0[i*hidden:(i+1)*hidden])
		}
	})
	t.lap(phElementwise)
	for li := range c.NumLayers {
		l, a, ad := &t.dec.layers[li], &t.acts[li], &t.adapters[li]
		next := t.xL
		if li+1 < c.NumLayers {
			next = t.acts[li+1].x
		}
		t.normRows(t.h, a.inv1, a.x, l.inNorm, hidden)
		q, k := a.q, a.k
		if c.QKNorm {
			q, k = a.qRaw, a.kRaw
		}
		t.project(ad[modQ], l.q, l.qBias, q, t.h, false)
		t.project(ad[modK], l.k, l.kBias, k, t.h, false)
		t.project(ad[modV], l.v, l.vBias, a.v, t.h, false)
		if c.QKNorm {
			t.normRows(a.q, a.qInv, a.qRaw, l.qNorm, hd)
			t.normRows(a.k, a.kInv, a.kRaw, l.kNorm, hd)
		}
		t.rope(a.q, qDim, t.scale, false)
		t.rope(a.k, kvDim, 1, false)
		t.attention(a, a.att)
		copy(a.xMid, a.x)
		t.lap(phElementwise)
		t.project(ad[modO], l.o, nil, a.xMid, a.att, true)
		t.normRows(t.h, a.inv2, a.xMid, l.postNorm, hidden)
		t.project(ad[modGate], l.gate, nil, a.gate, t.h, false)
		t.project(ad[modUp], l.up, nil, a.up, t.h, false)
		t.swiglu(t.act, a.gate, a.up)
		copy(next, a.xMid)
		t.lap(phElementwise)
		t.project(ad[modDown], l.down, nil, next, t.act, true)
	}
}

// normRows writes dst = RMSNorm(x)·weight for rows of width values, keeping each row's inverse RMS in inv, with the
// arithmetic of rmsNormRows.
func (t *CPUTrainer) normRows(dst, inv, x, weight []float32, width int) {
	rows := len(inv)
	t.parallel(rows, width, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := x[r*width : (r+1)*width]
			iv := 1 / float32(math.Sqrt(float64(sumSquares(row)/float32(width)+float32(t.cfg.RMSNormEps))))
			inv[r] = iv
			mulScaled(dst[r*width:(r+1)*width], row, weight, iv)
		}
	})
	t.lap(phElementwise)
}

// applyNorm recomputes dst = RMSNorm(x)·weight from the kept inverse RMS.
func (t *CPUTrainer) applyNorm(dst, inv, x, weight []float32, width int) {
	t.parallel(len(inv), width, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			mulScaled(dst[r*width:(r+1)*width], x[r*width:(r+1)*width], weight, inv[r])
		}
	})
	t.lap(phElementwise)
}

// normBack computes the gradient through y = x·inv·weight (inv = 1/√(mean x² + eps)) for dy: adds it to dx, or
// with set writes it (dx may then be dy).
//
//	dx = inv·g − x·inv³·(Σ g·x)/width,  g = dy·weight
func (t *CPUTrainer) normBack(dx, dy, x, inv, weight []float32, width int, set bool) {
	t.parallel(len(inv), width, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			iv := inv[r]
			xr, dyr, dxr := x[r*width:(r+1)*width], dy[r*width:(r+1)*width], dx[r*width:(r+1)*width]
			c := iv * iv * iv * dot3(dyr, weight, xr) / float32(width)
			normGrad(dxr, dyr, weight, xr, iv, c, set)
		}
	})
	t.lap(phElementwise)
}

// rope rotates every head of each row of x (width values; row r at position r mod seq) in HF's rotate-half layout,
// times scale; inverse rotates by −θ (the backward pass).
func (t *CPUTrainer) rope(x []float32, width int, scale float32, inverse bool) {
	hd := t.cfg.HeadDim
	half := hd / 2
	t.parallel(t.n, width, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			pos := r % t.seq
			cs, sn := t.cos[pos*half:(pos+1)*half], t.sin[pos*half:(pos+1)*half]
			row := x[r*width : (r+1)*width]
			for h := 0; h+hd <= width; h += hd {
				ropeHalves(row[h:h+half], row[h+half:h+hd], cs, sn, scale, inverse)
			}
		}
	})
	t.lap(phElementwise)
}

// swiglu writes act = silu(gate)·up.
func (t *CPUTrainer) swiglu(act, gate, up []float32) {
	ffn := t.cfg.IntermediateSize
	t.parallel(t.n, ffn, func(lo, hi int) { swiglu(act[lo*ffn:hi*ffn], gate[lo*ffn:hi*ffn], up[lo*ffn:hi*ffn]) })
	t.lap(phElementwise)
}

// winLo is the first key position query position p attends to.
func (t *CPUTrainer) winLo(p int) int {
	if w := t.cfg.SlidingWindow; w > 0 {
		return max(0, p-w+1)
	}
	return 0
}

// probsBlock computes the attention probabilities of query rows [r0, r1) of head h of sequence b over keys
// [kLo, r1): entry (i, j) at p[i*seq+j]; keys outside a row's causal window get 0.
func (t *CPUTrainer) probsBlock(a *trainActs, b, h, r0, r1, kLo int, p []float32) {
	c := t.cfg
	hd, seq := c.HeadDim, t.seq
	qDim, kvDim := c.NumHeads*hd, c.NumKVHeads*hd
	kh := h / (c.NumHeads / c.NumKVHeads)
	rows, nk := r1-r0, r1-kLo
	qv := gemm.View{Kind: gemv.F32, F32: a.q, Off: (b*seq+r0)*qDim + h*hd, RS: qDim, CS: 1}
	kv := gemm.View{Kind: gemv.F32, F32: a.k, Off: (b*seq+kLo)*kvDim + kh*hd, RS: kvDim, CS: 1}
	gemm.MulSerial(p, seq, rows, nk, hd, qv, kv.T(), false)
	for i := range rows {
		pos := r0 + i
		row := p[i*seq : i*seq+nk]
		lo, hi := t.winLo(pos)-kLo, pos-kLo+1
		clear(row[:lo])
		clear(row[hi:])
		sum := expSum(row[lo:hi], maxOf(row[lo:hi]))
		scaleBy(row[lo:hi], float32(1/sum))
	}
}

// probsAt returns where head (b, h)'s kept probabilities for the block at r0 begin, or the worker's scratch.
func (t *CPUTrainer) probsAt(a *trainActs, w, b, h, r0, kLo int) []float32 {
	if a.probs != nil {
		return a.probs[((b*t.cfg.NumHeads+h)*t.seq+r0)*t.seq+kLo:]
	}
	return t.scratch[w][:t.block*t.seq]
}

// attention computes out [N, heads·hd] = softmax(q·kᵀ + mask)·v for every sequence and head, heads in parallel,
// query rows in blocks that skip the keys after the block (and before its window).
func (t *CPUTrainer) attention(a *trainActs, out []float32) {
	c := t.cfg
	hd, seq, heads := c.HeadDim, t.seq, c.NumHeads
	qDim, kvDim := heads*hd, c.NumKVHeads*hd
	group := heads / c.NumKVHeads
	t.each(t.batch*heads, func(w, task int) {
		b, h := task/heads, task%heads
		kh := h / group
		for r0 := 0; r0 < seq; r0 += t.block {
			r1 := min(r0+t.block, seq)
			kLo := t.winLo(r0)
			p := t.probsAt(a, w, b, h, r0, kLo)
			t.probsBlock(a, b, h, r0, r1, kLo, p)
			vv := gemm.View{Kind: gemv.F32, F32: a.v, Off: (b*seq+kLo)*kvDim + kh*hd, RS: kvDim, CS: 1}
			gemm.MulSerial(out[(b*seq+r0)*qDim+h*hd:], qDim, r1-r0, hd, r1-kLo, gemm.RowMajor(p, seq), vv, false)
		}
	})
	t.lap(phAttention)
}

// attentionBack computes, from the gradient datt of the attention output, the gradients of the scaled q (into dq) and of k and v
// (into dk, dv), with P the probabilities and G = dOut:
//
//	dP = G·Vᵀ;  dS = P ⊙ (dP − rowsum(P ⊙ dP));  dQ = dS·K;  dK = dSᵀ·Q;  dV = Pᵀ·G.
//
// Each query head accumulates its dK and dV in its own columns of dkH and dvH; the heads that share a KV head are
// then summed.
func (t *CPUTrainer) attentionBack(a *trainActs, datt, dq, dk, dv []float32) {
	c := t.cfg
	hd, seq, heads := c.HeadDim, t.seq, c.NumHeads
	qDim, kvDim := heads*hd, c.NumKVHeads*hd
	group := heads / c.NumKVHeads
	t.each(t.batch*heads, func(w, task int) {
		b, h := task/heads, task%heads
		kh := h / group
		for r := b * seq; r < (b+1)*seq; r++ {
			clear(t.dkH[r*qDim+h*hd : r*qDim+(h+1)*hd])
			clear(t.dvH[r*qDim+h*hd : r*qDim+(h+1)*hd])
		}
		dp := t.scratch[w][t.block*seq:]
		for r0 := 0; r0 < seq; r0 += t.block {
			r1 := min(r0+t.block, seq)
			rows, kLo := r1-r0, t.winLo(r0)
			nk := r1 - kLo
			p := t.probsAt(a, w, b, h, r0, kLo)
			if a.probs == nil {
				t.probsBlock(a, b, h, r0, r1, kLo, p)
			}
			g := gemm.View{Kind: gemv.F32, F32: datt, Off: (b*seq+r0)*qDim + h*hd, RS: qDim, CS: 1}
			qv := gemm.View{Kind: gemv.F32, F32: a.q, Off: (b*seq+r0)*qDim + h*hd, RS: qDim, CS: 1}
			kv := gemm.View{Kind: gemv.F32, F32: a.k, Off: (b*seq+kLo)*kvDim + kh*hd, RS: kvDim, CS: 1}
			vv := gemm.View{Kind: gemv.F32, F32: a.v, Off: (b*seq+kLo)*kvDim + kh*hd, RS: kvDim, CS: 1}
			gemm.MulSerial(dp, seq, rows, nk, hd, g, vv.T(), false)
			for i := range rows {
				pos := r0 + i
				lo, hi := t.winLo(pos)-kLo, pos-kLo+1
				dr := dp[i*seq : i*seq+nk]
				clear(dr[:lo])
				clear(dr[hi:])
				softmaxBack(p[i*seq+lo:i*seq+hi], dr[lo:hi])
			}
			ds := gemm.RowMajor(dp, seq)
			gemm.MulSerial(dq[(b*seq+r0)*qDim+h*hd:], qDim, rows, hd, nk, ds, kv, false)
			gemm.MulSerial(t.dkH[(b*seq+kLo)*qDim+h*hd:], qDim, nk, hd, rows, ds.T(), qv, true)
			gemm.MulSerial(t.dvH[(b*seq+kLo)*qDim+h*hd:], qDim, nk, hd, rows, gemm.RowMajor(p, seq).T(), g, true)
		}
	})
	t.lap(phAttention)
	t.parallel(t.n, qDim, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for kh := range c.NumKVHeads {
				k, v := dk[r*kvDim+kh*hd:r*kvDim+(kh+1)*hd], dv[r*kvDim+kh*hd:r*kvDim+(kh+1)*hd]
				for g := range group {
					h := kh*group + g
					src, srcV := t.dkH[r*qDim+h*hd:r*qDim+(h+1)*hd], t.dvH[r*qDim+h*hd:r*qDim+(h+1)*hd]
					if g == 0 {
						copy(k, src)
						copy(v, srcV)
					} else {
						addInto(k, src)
						addInto(v, srcV)
					}
				}
			}
		}
	})
	t.lap(phElementwise)
}

// loss computes the summed weighted cross entropy over the final-normed last hidden states, in chunks of the rows
// whose weight is not 0; with grad it leaves dL/dx_L in t.dx.
func (t *CPUTrainer) loss(targets []int32, weights []float32, grad bool) (sum, weightSum float64) {
	c := t.cfg
	hidden, vocab := c.HiddenSize, c.VocabSize
	t.weighted = t.weighted[:0]
	for i, w := range weights {
		weightSum += float64(w)
		if w != 0 {
			t.weighted = append(t.weighted, i)
		}
	}
	if grad {
		clear(t.dx)
	}
	head := gemm.Weight(t.dec.head)
	for lo := 0; lo < len(t.weighted); lo += t.chunk {
		idx := t.weighted[lo:min(lo+t.chunk, len(t.weighted))]
		rows := len(idx)
		t.parallel(rows, hidden, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				r := idx[i]
				t.finalNormRow(t.hc[i*hidden:(i+1)*hidden], r)
			}
		})
		t.lap(phElementwise)
		gemm.Mul(t.logits, vocab, rows, vocab, hidden, gemm.RowMajor(t.hc, hidden), head.T(), false)
		t.lap(phHeadMatmul)
		t.parallel(rows, vocab, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				r := idx[i]
				t.rowLoss[r] = rowLoss(t.logits[i*vocab:(i+1)*vocab], int(targets[r]), weights[r], grad)
			}
		})
		t.lap(phLossSoftmax)
		if !grad {
			continue
		}
		gemm.Mul(t.dhc, hidden, rows, hidden, vocab, gemm.RowMajor(t.logits, vocab), head, false)
		t.lap(phHeadMatmul)
		t.parallel(rows, hidden, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				r := idx[i]
				normBackRow(t.dx[r*hidden:(r+1)*hidden], t.dhc[i*hidden:(i+1)*hidden], t.xL[r*hidden:(r+1)*hidden],
					t.invL[r], t.dec.norm)
			}
		})
		t.lap(phElementwise)
	}
	for _, r := range t.weighted {
		sum += t.rowLoss[r]
	}
	return sum, weightSum
}

// finalNormRow writes the final RMSNorm of token row r of x_L into dst, keeping its inverse RMS.
func (t *CPUTrainer) finalNormRow(dst []float32, r int) {
	hidden := t.cfg.HiddenSize
	row := t.xL[r*hidden : (r+1)*hidden]
	iv := 1 / float32(math.Sqrt(float64(sumSquares(row)/float32(hidden)+float32(t.cfg.RMSNormEps))))
	t.invL[r] = iv
	mulScaled(dst, row, t.dec.norm, iv)
}

// normBackRow writes into dx the gradient of one row's RMSNorm (see normBack).
func normBackRow(dx, dy, x []float32, iv float32, weight []float32) {
	c := iv * iv * iv * dot3(dy, weight, x) / float32(len(x))
	normGrad(dx, dy, weight, x, iv, c, true)
}

// rowLoss returns w·(logsumexp(logits) − logits[target]) and overwrites logits: with grad, with their gradient
// w·(softmax − one-hot(target)).
func rowLoss(logits []float32, target int, w float32, grad bool) float64 {
	best, at := maxOf(logits), logits[target]
	sum := expSum(logits, best) // logits now hold e^(logit − best)
	if grad {
		scaleBy(logits, float32(float64(w)/sum))
		logits[target] -= w
	}
	return float64(w) * (float64(best) + math.Log(sum) - float64(at))
}

// backward runs the blocks backward from dL/dx_L in t.dx down to the lowest adapted layer, calling the adapters'
// Backward in reverse order. Work whose result nobody reads is skipped: the layers below the lowest adapter, and
// in that layer the gradients that only lower layers or no adapter would read (e.g. the frozen q/k/v products' dX).
func (t *CPUTrainer) backward() {
	c := t.cfg
	hidden, hd := c.HiddenSize, c.HeadDim
	qDim, kvDim := c.NumHeads*hd, c.NumKVHeads*hd
	ffn := c.IntermediateSize
	for li := c.NumLayers - 1; li >= t.first; li-- {
		l, a, ad := &t.dec.layers[li], &t.acts[li], &t.adapters[li]
		needIn := li > t.first // dL/dx_l: read by the layers below
		needQKV := needIn || ad[modQ] != nil || ad[modK] != nil || ad[modV] != nil
		needMid := needQKV || ad[modO] != nil // dL/dxMid
		needGU := needMid || ad[modGate] != nil || ad[modUp] != nil
		// MLP: x_{l+1} = xMid + down(silu(gate)·up); t.dx holds dL/dx_{l+1}.
		if ad[modDown] != nil {
			t.swiglu(t.act, a.gate, a.up)
		}
		var dact []float32
		if needGU {
			dact = t.dact
		}
		t.projectBack(ad[modDown], l.down, t.act, t.dx, dact, false)
		if !needGU {
			continue
		}
		dup, dgate := t.act, t.dact // act is not read again
		t.parallel(t.n, ffn, func(lo, hi int) {
			r := func(x []float32) []float32 { return x[lo*ffn : hi*ffn] }
			swigluBack(r(dup), r(dgate), r(a.gate), r(a.up), r(dact))
		})
		t.lap(phElementwise)
		if ad[modGate] != nil || ad[modUp] != nil {
			t.applyNorm(t.h, a.inv2, a.xMid, l.postNorm, hidden)
		}
		var dh []float32
		if needMid {
			dh = t.dh
		}
		t.projectBack(ad[modUp], l.up, t.h, dup, dh, false)
		t.projectBack(ad[modGate], l.gate, t.h, dgate, dh, true)
		if !needMid {
			continue
		}
		t.normBack(t.dx, t.dh, a.xMid, a.inv2, l.postNorm, hidden, false) // t.dx: dL/dxMid
		// Attention: xMid = x + o(att).
		var datt []float32
		if needQKV {
			datt = t.datt
		}
		t.projectBack(ad[modO], l.o, a.att, t.dx, datt, false)
		if !needQKV {
			continue
		}
		t.attentionBack(a, datt, t.dq, t.dk, t.dv)
		// dq is the gradient of q after RoPE and the scale; undo both, then the q/k norms.
		t.rope(t.dq, qDim, t.scale, true)
		t.rope(t.dk, kvDim, 1, true)
		if c.QKNorm {
			t.normBack(t.dq, t.dq, a.qRaw, a.qInv, l.qNorm, hd, true)
			t.normBack(t.dk, t.dk, a.kRaw, a.kInv, l.kNorm, hd, true)
		}
		if ad[modQ] != nil || ad[modK] != nil || ad[modV] != nil {
			t.applyNorm(t.h, a.inv1, a.x, l.inNorm, hidden)
		}
		dh = nil
		if needIn {
			dh = t.dh
		}
		t.projectBack(ad[modV], l.v, t.h, t.dv, dh, false)
		t.projectBack(ad[modK], l.k, t.h, t.dk, dh, true)
		t.projectBack(ad[modQ], l.q, t.h, t.dq, dh, true)
		if needIn {
			t.normBack(t.dx, t.dh, a.x, a.inv1, l.inNorm, hidden, false) // t.dx: dL/dx_l
		}
	}
}
