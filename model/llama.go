package model

import (
	"fmt"
	"math"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // GoMLX graph code reads best with the ops unqualified.
	"github.com/gomlx/gomlx/core/tensors"
)

// LinearHook lets an adapter add to a linear layer's output: given the module's HF path (e.g.
// "model.layers.0.self_attn.q_proj"), its input x [..., in] and the base output y [..., out], it returns the
// output to use. The model knows nothing else about adapters.
type LinearHook func(module string, x, y *Node) *Node

// Weights are the frozen base weights inside one graph: nodes by HF parameter name, held in their storage dtype
// (see Model.Params), and the dtype their matmuls take inputs in.
type Weights struct {
	Nodes map[string]*Node
	// Compute is the matmuls' input dtype; zero means the activations' dtype. Matmuls accumulate in float32.
	Compute dtypes.DType
}

// vector returns a norm weight or bias in x's dtype (nil when absent).
func (w Weights) vector(name string, x *Node) *Node {
	v := w.Nodes[name]
	if v != nil && v.DType() != x.DType() {
		v = ConvertDType(v, x.DType())
	}
	return v
}

// KVCache holds, per layer, keys and values [batch, kvHeads, capacity, headDim] for positions [0, capacity).
type KVCache struct {
	Keys, Values []*Node
}

// Forward runs the decoder on tokens [batch, seq] placed at absolute positions start..start+seq-1 (start is a
// scalar int32 node) and returns logits [batch, seq, vocab].
//
// Without a cache it attends causally within tokens. With a cache it first writes this chunk's keys/values at
// start and attends over the whole cache, masking positions after each query; it returns the updated cache.
func (c *Config) Forward(w Weights, tokens, start *Node, cache *KVCache, hook LinearHook) (*Node, *KVCache) {
	h := c.Hidden(w, tokens, start, cache, hook)
	return c.Logits(w, h), cache
}

// Hidden returns the final-normed hidden states [batch, seq, hidden]; with a cache, cache is updated in place.
func (c *Config) Hidden(w Weights, tokens, start *Node, cache *KVCache, hook LinearHook) *Node {
	x := c.Embed(w, tokens)
	for layer := range c.NumLayers {
		var layerCache *[2]*Node
		if cache != nil {
			layerCache = &[2]*Node{cache.Keys[layer], cache.Values[layer]}
		}
		x = c.Block(w, layer, x, start, layerCache, hook)
		if cache != nil {
			cache.Keys[layer], cache.Values[layer] = layerCache[0], layerCache[1]
		}
	}
	return c.FinalNorm(w, x)
}

// Embed looks up tokens [batch, seq] in the embedding: [batch, seq, hidden] in the activations' dtype.
func (c *Config) Embed(w Weights, tokens *Node) *Node {
	x := Gather(w.Nodes["model.embed_tokens.weight"], ExpandAxes(tokens, -1))
	if act := w.activation(); x.DType() != act {
		x = ConvertDType(x, act)
	}
	return x
}

// Block runs decoder layer `layer` on x [batch, seq, hidden]: attention and MLP, each with its residual. A
// non-nil cache ([2]{keys, values}) is updated in place.
func (c *Config) Block(w Weights, layer int, x, start *Node, cache *[2]*Node, hook LinearHook) *Node {
	p := fmt.Sprintf("model.layers.%d.", layer)
	x = Add(x, c.attention(w, p, c.rmsNorm(x, w.vector(p+"input_layernorm.weight", x)), start, cache, hook))
	return Add(x, c.mlp(w, p, c.rmsNorm(x, w.vector(p+"post_attention_layernorm.weight", x)), hook))
}

// FinalNorm applies the final RMSNorm to the last block's output.
func (c *Config) FinalNorm(w Weights, x *Node) *Node {
	return c.rmsNorm(x, w.vector("model.norm.weight", x))
}

// Logits projects hidden states [..., hidden] to the vocabulary [..., vocab].
func (c *Config) Logits(w Weights, h *Node) *Node {
	dims := h.Shape().Dimensions
	flat := Reshape(h, -1, dims[len(dims)-1])
	return Reshape(c.OutputHead(w, h.DType()).Logits(flat), append(dims[:len(dims)-1:len(dims)-1], c.Head(w).Shape().Dimensions[0])...)
}

// Head is the output projection [vocab, hidden]: lm_head, or the embedding when they are tied.
func (c *Config) Head(w Weights) *Node {
	head := w.Nodes["lm_head.weight"]
	if head == nil || c.TieEmbeddings {
		head = w.Nodes["model.embed_tokens.weight"]
	}
	return head
}

// activation is the activations' dtype: that of the norm weights, which are held in it.
func (w Weights) activation() dtypes.DType {
	return w.Nodes["model.norm.weight"].DType()
}

// Linear computes x·Wᵀ for a frozen HF-layout weight W [out, in], in x's dtype.
//
// When W is held in another dtype than x (bf16 weights, f32 activations) the product runs in w.Compute: with
// Float32 each use converts W to float32 for that one matmul; with a half-precision type x is rounded to it and the
// kernel accumulates and returns float32. Its gradient with respect to x is written by hand so the backward pass
// converts W again instead of keeping the forward pass's converted copy alive until then: a float32 copy of every
// weight would otherwise live from the forward to the backward pass.
func (w Weights) Linear(x, weight *Node) *Node {
	dims := x.Shape().Dimensions
	in, out := dims[len(dims)-1], weight.Shape().Dimensions[0]
	flat := Reshape(x, -1, in)
	var y *Node
	if weight.DType() == x.DType() && w.computesIn(x.DType()) {
		y = frozenProduct(flat, weight)
	} else {
		y = mixedLinear(flat, weight, w.Compute)
	}
	return Reshape(y, append(dims[:len(dims)-1:len(dims)-1], out)...)
}

// frozenProduct is x·Wᵀ for x [n, in] and a frozen W [out, in] of x's dtype, with its gradient with respect to x,
// dy·W, written by hand: GoMLX's matmul gradient ends in an identity transpose that the Go backend runs as a full
// copy of dx, and W needs no gradient.
func frozenProduct(x, weight *Node) *Node {
	var upstream *Node
	xIn := IdentityWithCustomGradient(x, func(_, _ *Node) *Node {
		return DotGeneral(upstream, []int{1}, nil, weight, []int{0}, nil)
	})
	y := DotGeneral(xIn, []int{1}, nil, weight, []int{1}, nil)
	return IdentityWithCustomGradient(y, func(_, v *Node) *Node {
		upstream = v
		return v
	})
}

// computesIn reports whether the matmuls take their inputs in the activations' dtype act.
func (w Weights) computesIn(act dtypes.DType) bool { return w.Compute == 0 || w.Compute == act }

// LinearGrad computes dy·W for a frozen weight W [out, in] and dy [n, out]: the gradient of Linear with respect to
// its input, in the same compute dtype.
func (w Weights) LinearGrad(dy, weight *Node) *Node {
	if weight.DType() == dy.DType() && w.computesIn(dy.DType()) {
		return DotGeneral(dy, []int{1}, nil, weight, []int{0}, nil)
	}
	return computeProduct(dy, weight, 0, w.Compute)
}

// computeProduct multiplies a [n, k] by weight, contracting the weight's axis wAxis, in the compute dtype (zero:
// a's dtype), accumulating in float32 and returning a's dtype.
func computeProduct(a, weight *Node, wAxis int, compute dtypes.DType) *Node {
	act := a.DType()
	if compute == 0 || compute == act {
		return DotGeneral(a, []int{1}, nil, ConvertDType(weight, act), []int{wAxis}, nil)
	}
	if weight.DType() != compute {
		weight = ConvertDType(weight, compute)
	}
	y := Dot(ConvertDType(a, compute), weight).WithAccumulatorDType(dtypes.Float32).WithOutputDType(dtypes.Float32).
		General([]int{1}, nil, []int{wAxis}, nil)
	if y.DType() != act {
		y = ConvertDType(y, act)
	}
	return y
}

// mixedLinear is Linear's product for x [n, in] and a weight [out, in] held in another dtype; see Linear.
func mixedLinear(x, weight *Node, compute dtypes.DType) *Node {
	var upstream *Node
	xIn := IdentityWithCustomGradient(x, func(_, _ *Node) *Node {
		// dx = dy·W. The barrier makes this conversion of W a new one, run when dy exists (the backend would
		// otherwise merge it with the forward pass's and keep that alive).
		return computeProduct(upstream, SchedulingBarrier(weight, upstream), 0, compute)
	})
	y := computeProduct(xIn, weight, 1, compute)
	return IdentityWithCustomGradient(y, func(_, v *Node) *Node {
		upstream = v
		return v
	})
}

func (c *Config) project(w Weights, module string, x *Node, hook LinearHook) *Node {
	y := w.Linear(x, w.Nodes[module+".weight"])
	if b := w.vector(module+".bias", y); b != nil {
		y = Add(y, alignTrailing(b, y))
	}
	if hook != nil {
		y = hook(module, x, y)
	}
	return y
}

// rmsNorm uses 1/Sqrt rather than Rsqrt: GoMLX has no gradient for Rsqrt.
func (c *Config) rmsNorm(x, weight *Node) *Node {
	meanSquare := ReduceAndKeep(Square(x), ReduceMean, -1)
	return Mul(Mul(x, Inverse(Sqrt(AddScalar(meanSquare, c.RMSNormEps)))), alignTrailing(weight, x))
}

// alignTrailing reshapes a vector to x's rank so it broadcasts over x's last axis (GoMLX needs equal ranks).
func alignTrailing(v, x *Node) *Node {
	dims := make([]int, x.Rank())
	for i := range dims {
		dims[i] = 1
	}
	dims[len(dims)-1] = v.Shape().Dimensions[0]
	return Reshape(v, dims...)
}

func (c *Config) mlp(w Weights, p string, x *Node, hook LinearHook) *Node {
	gate := c.project(w, p+"mlp.gate_proj", x, hook)
	up := c.project(w, p+"mlp.up_proj", x, hook)
	silu := Mul(gate, Sigmoid(gate))
	return c.project(w, p+"mlp.down_proj", Mul(silu, up), hook)
}

func (c *Config) attention(w Weights, p string, x, start *Node, cache *[2]*Node, hook LinearHook) *Node {
	batch, seq := x.Shape().Dimensions[0], x.Shape().Dimensions[1]
	heads, kvHeads, headDim := c.NumHeads, c.NumKVHeads, c.HeadDim
	q := Reshape(c.project(w, p+"self_attn.q_proj", x, hook), batch, seq, heads, headDim)
	k := Reshape(c.project(w, p+"self_attn.k_proj", x, hook), batch, seq, kvHeads, headDim)
	v := Reshape(c.project(w, p+"self_attn.v_proj", x, hook), batch, seq, kvHeads, headDim)
	if c.QKNorm {
		q = c.rmsNorm(q, w.vector(p+"self_attn.q_norm.weight", q))
		k = c.rmsNorm(k, w.vector(p+"self_attn.k_norm.weight", k))
	}
	positions := Add(Iota(x.Graph(), shapeInt32(seq), 0), start) // [seq]
	q = c.rope(q, positions)
	k = c.rope(k, positions)
	q = Transpose(q, 1, 2) // [batch, heads, seq, headDim]
	k = Transpose(k, 1, 2) // [batch, kvHeads, seq, headDim]
	v = Transpose(v, 1, 2)

	keyPositions := positions
	if cache != nil {
		zero := ScalarZero(x.Graph(), start.DType())
		idx := []*Node{zero, zero, start, zero}
		cache[0] = DynamicUpdateSlice(cache[0], k, idx)
		cache[1] = DynamicUpdateSlice(cache[1], v, idx)
		k, v = cache[0], cache[1]
		keyPositions = Iota(x.Graph(), shapeInt32(k.Shape().Dimensions[2]), 0)
	}
	keyLen := k.Shape().Dimensions[2]

	allowed := LessOrEqual(Reshape(keyPositions, 1, keyLen), Reshape(positions, seq, 1)) // [seq, keyLen]
	if c.SlidingWindow > 0 {
		// Mistral-style: each query sees only the last SlidingWindow positions.
		window := Sub(Reshape(positions, seq, 1), Reshape(keyPositions, 1, keyLen))
		allowed = LogicalAnd(allowed, LessThan(window, Scalar(x.Graph(), window.DType(), c.SlidingWindow)))
	}
	bias := Where(allowed, BroadcastToDims(ScalarZero(x.Graph(), q.DType()), seq, keyLen),
		BroadcastToDims(Infinity(x.Graph(), q.DType(), -1), seq, keyLen))

	// Grouped-query attention without copying K/V: the query heads that share a KV head are stacked as extra rows,
	// [batch, kvHeads, group·queries, headDim], so every product is one batched matmul in the Go backend's native
	// layouts (no operand transposed behind our back).
	//
	// Without a cache the queries go in causal chunks, each attending only to the keys up to its last position:
	// the fully masked blocks above the diagonal are skipped (62% of the seq² work with 4 chunks, 56% with 8).
	group := heads / kvHeads
	qg := Reshape(MulScalar(q, 1/math.Sqrt(float64(headDim))), batch, kvHeads, group, seq, headDim)
	chunk := seq
	if cache == nil && seq >= 128 {
		chunk = (seq + min(8, seq/64) - 1) / min(8, seq/64)
	}
	var outs []*Node
	for lo := 0; lo < seq; lo += chunk {
		hi, keys := min(lo+chunk, seq), keyLen
		if cache == nil {
			keys = hi // causal: no query of this chunk sees a later key
		}
		rows := Reshape(SliceAxis(qg, 3, AxisRange(lo, hi)), batch, kvHeads, group*(hi-lo), headDim)
		mask := Slice(bias, AxisRange(lo, hi), AxisRange(0, keys))
		mask = Reshape(BroadcastToDims(Reshape(mask, 1, hi-lo, keys), group, hi-lo, keys), group*(hi-lo), keys)
		o := attend(rows, SliceAxis(k, 2, AxisRange(0, keys)), SliceAxis(v, 2, AxisRange(0, keys)), mask)
		outs = append(outs, Reshape(o, batch, kvHeads, group, hi-lo, headDim))
	}
	out := outs[0]
	if len(outs) > 1 {
		out = Concatenate(outs, 3)
	}
	out = Reshape(out, batch, heads, seq, headDim)
	out = Reshape(Transpose(out, 1, 2), batch, seq, heads*headDim)
	return c.project(w, p+"self_attn.o_proj", out, hook)
}

// attend returns softmax(q·kᵀ + bias)·v for q [batch, kvHeads, rows, headDim] (already scaled), k and v
// [batch, kvHeads, keys, headDim] and an additive mask bias [rows, keys] (0 or −∞).
//
// Its gradient is written by hand (attentionGrad): autodiff takes dK = dScoresᵀ·q with the score gradient as the
// left operand, which makes the Go backend transpose the [rows, keys] score gradient of every head with its slowest
// (generic) transpose, ~⅓ of a training step, and it runs softmax's backward through a dozen full-size ops.
func attend(q, k, v, bias *Node) *Node {
	a := &attentionGrad{}
	// The custom gradients of q, k and v ignore what autodiff computed for them (it becomes dead code, never run)
	// and use the upstream gradient that the output's custom gradient stored: autodiff visits the output first.
	q = IdentityWithCustomGradient(q, func(_, _ *Node) *Node { return a.grads().dq })
	k = IdentityWithCustomGradient(k, func(_, _ *Node) *Node { return a.grads().dk })
	v = IdentityWithCustomGradient(v, func(_, _ *Node) *Node { return a.grads().dv })
	scores := DotGeneral(q, []int{3}, []int{0, 1}, k, []int{3}, []int{0, 1})
	scores = Add(scores, Reshape(bias, append([]int{1, 1}, bias.Shape().Dimensions...)...))
	probs := Softmax(scores, -1)
	out := DotGeneral(probs, []int{3}, []int{0, 1}, v, []int{2}, []int{0, 1})
	a.q, a.k, a.v, a.probs = q, k, v, probs
	return IdentityWithCustomGradient(out, func(_, upstream *Node) *Node {
		a.upstream, a.dq, a.dk, a.dv = upstream, nil, nil, nil
		return upstream
	})
}

// attentionGrad holds attend's forward values and, once autodiff reaches them, its input gradients.
type attentionGrad struct {
	q, k, v, probs       *Node
	upstream, dq, dk, dv *Node
}

// grads computes the input gradients from the upstream gradient G = dL/dout, with P = probs:
//
//	dP = G·Vᵀ;  dS = P ⊙ (dP − rowsum(P ⊙ dP));  dQ = dS·K;  dK = dSᵀ·Q;  dV = Pᵀ·G.
//
// dK and dV are computed as (Qᵀ·dS)ᵀ and (Gᵀ·P)ᵀ: the [rows, keys] operands then sit on the right, in a layout the
// backend multiplies directly, and only the small [rows, headDim] ones are transposed.
func (a *attentionGrad) grads() *attentionGrad {
	if a.dq != nil {
		return a
	}
	batch := []int{0, 1}
	dProbs := DotGeneral(a.upstream, []int{3}, batch, a.v, []int{3}, batch)
	// δ from P ⊙ dP, not from G ⊙ out: in a saturated row (P one-hot) the two terms of dP − δ then cancel exactly.
	delta := ReduceAndKeep(Mul(a.probs, dProbs), ReduceSum, -1)
	dScores := Mul(a.probs, Sub(dProbs, delta))
	a.dq = DotGeneral(dScores, []int{3}, batch, a.k, []int{2}, batch)
	a.dk = swapLastAxes(DotGeneral(swapLastAxes(a.q), []int{3}, batch, dScores, []int{2}, batch))
	a.dv = swapLastAxes(DotGeneral(swapLastAxes(a.upstream), []int{3}, batch, a.probs, []int{2}, batch))
	return a
}

// swapLastAxes transposes the last two axes of a rank-4 x, written as the [n, a, b, 1] → [n, b, a, 1] permutation
// that the Go backend has a fast kernel for (it has none for a plain batched matrix transpose).
func swapLastAxes(x *Node) *Node {
	d := x.Shape().Dimensions
	t := Transpose(Reshape(x, d[0]*d[1], d[2], d[3], 1), 1, 2)
	return Reshape(t, d[0], d[1], d[3], d[2])
}

// rope applies rotary embeddings in HF's rotate-half layout to x [batch, seq, heads, headDim].
func (c *Config) rope(x, positions *Node) *Node {
	g := x.Graph()
	half := c.HeadDim / 2
	invFreq, err := c.RopeInverseFrequencies()
	if err != nil {
		panic(err) // Validate ran before any graph was built; inside a graph this becomes the Exec's error
	}
	freqs := ConvertDType(Const(g, invFreq), x.DType())
	angles := Mul(Reshape(ConvertDType(positions, x.DType()), -1, 1), Reshape(freqs, 1, half)) // [seq, half]
	angles = Concatenate([]*Node{angles, angles}, -1)                                          // [seq, headDim]
	dims := x.Shape().Dimensions
	// x is [batch, seq, heads, headDim]. cos and sin are spelled out over the heads and everything is flattened to
	// [batch, seq·heads·headDim]: the Go backend multiplies a [1, n] operand into a [batch, n] one with its SIMD
	// kernels, but falls back to a generic element-by-element loop for a [1, seq, 1, headDim] broadcast.
	perBatch := dims[1] * dims[2] * dims[3]
	spread := func(t *Node) *Node {
		return Reshape(BroadcastToDims(Reshape(t, dims[1], 1, c.HeadDim), dims[1], dims[2], c.HeadDim), 1, perBatch)
	}
	cos, sin := spread(Cos(angles)), spread(Sin(angles))
	// rotate-half, (x1, x2) → (−x2, x1), as a product with a signed permutation matrix: one matmul forward and one
	// backward instead of slices, a concatenation and their gradients' pads.
	rot := make([]float64, c.HeadDim*c.HeadDim) // rotated[j] = Σ_i x[i]·rot[i][j]
	for j := range half {
		rot[(j+half)*c.HeadDim+j] = -1 // rotated[j] = −x[j+half]
		rot[j*c.HeadDim+j+half] = 1    // rotated[j+half] = x[j]
	}
	rotM := ConvertDType(Const(g, tensors.FromFlatDataAndDimensions(rot, c.HeadDim, c.HeadDim)), x.DType())
	rotated := DotGeneral(Reshape(x, -1, c.HeadDim), []int{1}, nil, rotM, []int{0}, nil)
	flat := func(t *Node) *Node { return Reshape(t, dims[0], perBatch) }
	return Reshape(Add(Mul(flat(x), cos), Mul(flat(rotated), sin)), dims...)
}
