package model

import (
	"fmt"
	"math"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // GoMLX graph code reads best with the ops unqualified.
)

// LinearHook lets an adapter add to a linear layer's output: given the module's HF path (e.g.
// "model.layers.0.self_attn.q_proj"), its input x [..., in] and the base output y [..., out], it returns the
// output to use. The model knows nothing else about adapters.
type LinearHook func(module string, x, y *Node) *Node

// Weights maps HF parameter names to graph nodes (the frozen base weights inside one graph).
type Weights map[string]*Node

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
	embed := w["model.embed_tokens.weight"]
	x := Gather(embed, ExpandAxes(tokens, -1))
	for layer := range c.NumLayers {
		p := fmt.Sprintf("model.layers.%d.", layer)
		var layerCache *[2]*Node
		if cache != nil {
			layerCache = &[2]*Node{cache.Keys[layer], cache.Values[layer]}
		}
		x = Add(x, c.attention(w, p, c.rmsNorm(x, w[p+"input_layernorm.weight"]), start, layerCache, hook))
		if cache != nil {
			cache.Keys[layer], cache.Values[layer] = layerCache[0], layerCache[1]
		}
		x = Add(x, c.mlp(w, p, c.rmsNorm(x, w[p+"post_attention_layernorm.weight"]), hook))
	}
	return c.rmsNorm(x, w["model.norm.weight"])
}

// Logits projects hidden states [..., hidden] to the vocabulary [..., vocab].
func (c *Config) Logits(w Weights, h *Node) *Node {
	head := w["lm_head.weight"]
	if head == nil || c.TieEmbeddings {
		head = w["model.embed_tokens.weight"]
	}
	return linear(h, head)
}

// linear computes x·Wᵀ for an HF-layout weight W [out, in].
func linear(x, weight *Node) *Node {
	dims := x.Shape().Dimensions
	in, out := dims[len(dims)-1], weight.Shape().Dimensions[0]
	flat := Reshape(x, -1, in)
	y := DotGeneral(flat, []int{1}, nil, weight, []int{1}, nil)
	return Reshape(y, append(dims[:len(dims)-1:len(dims)-1], out)...)
}

func (c *Config) project(w Weights, module string, x *Node, hook LinearHook) *Node {
	y := linear(x, w[module+".weight"])
	if b := w[module+".bias"]; b != nil {
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
		q = c.rmsNorm(q, w[p+"self_attn.q_norm.weight"])
		k = c.rmsNorm(k, w[p+"self_attn.k_norm.weight"])
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

	// Grouped-query attention without copying K/V: query heads are grouped under the KV head they share.
	group := heads / kvHeads
	qg := Reshape(q, batch, kvHeads, group, seq, headDim)
	scores := Einsum("bkgqd,bksd->bkgqs", qg, k)
	scores = MulScalar(scores, 1/math.Sqrt(float64(headDim)))
	allowed := LessOrEqual(Reshape(keyPositions, 1, 1, 1, 1, keyLen), Reshape(positions, 1, 1, 1, seq, 1))
	if c.SlidingWindow > 0 { // Mistral-style: each query sees only the last SlidingWindow positions
		window := Sub(Reshape(positions, 1, 1, 1, seq, 1), Reshape(keyPositions, 1, 1, 1, 1, keyLen))
		allowed = LogicalAnd(allowed, LessThan(window, Scalar(x.Graph(), window.DType(), c.SlidingWindow)))
	}
	allowed = BroadcastToDims(allowed, batch, kvHeads, group, seq, keyLen)
	scores = Where(allowed, scores, BroadcastToDims(Infinity(x.Graph(), scores.DType(), -1), scores.Shape().Dimensions...))
	probs := Softmax(scores, -1)
	out := Einsum("bkgqs,bksd->bkgqd", probs, v)
	out = Reshape(out, batch, heads, seq, headDim)
	out = Reshape(Transpose(out, 1, 2), batch, seq, heads*headDim)
	return c.project(w, p+"self_attn.o_proj", out, hook)
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
	seq := angles.Shape().Dimensions[0]
	cos := Reshape(Cos(angles), 1, seq, 1, c.HeadDim)
	sin := Reshape(Sin(angles), 1, seq, 1, c.HeadDim)
	x1 := SliceAxis(x, -1, AxisRange(0, half))
	x2 := SliceAxis(x, -1, AxisRange(half, c.HeadDim))
	rotated := Concatenate([]*Node{Neg(x2), x1}, -1)
	return Add(Mul(x, cos), Mul(rotated, sin))
}
