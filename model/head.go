package model

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
)

// HeadBlockElements bounds a block of a converted output head: rows × hidden ≤ 2²⁴ values (64 MB in float32).
// A variable so tests can make blocks small.
var HeadBlockElements = 1 << 24

// Head is the output projection [vocab, hidden] inside one graph (lm_head, or the embedding when tied).
//
// A head held in another dtype than the activations (bf16 weights, f32 compute) is multiplied a block of
// vocabulary rows at a time, each block converted just before its product: a float32 copy of the whole head would
// be the largest transient of a step or a decoding step (2.1 GB for Llama-3.1-8B). Each block's rows are gathered
// through an index that waits for the previous block's product, so the blocks run one after another (the backend
// would otherwise convert them all first) and no two conversions are the same node (the backend would merge them
// and keep the first alive until the last use).
type Head struct {
	w       Weights
	weight  *Node // in its storage dtype
	act     dtypes.DType
	rows    int // vocabulary rows per block, when blocked
	blocked bool
}

// OutputHead returns the output projection for activations of dtype act.
func (c *Config) OutputHead(w Weights, act dtypes.DType) *Head {
	head := &Head{w: w, weight: c.Head(w), act: act}
	if head.weight.DType() != act && w.computesIn(act) {
		head.blocked = true
		head.rows = max(1, HeadBlockElements/head.weight.Shape().Dimensions[1])
	}
	return head
}

// Logits returns x·headᵀ for x [rows, hidden]: [rows, vocab].
func (h *Head) Logits(x *Node) *Node {
	if !h.blocked {
		return h.w.Linear(x, h.weight)
	}
	vocab := h.weight.Shape().Dimensions[0]
	var parts []*Node
	prev := x
	for lo := 0; lo < vocab; lo += h.rows {
		p := DotGeneral(x, []int{1}, nil, h.block(lo, min(lo+h.rows, vocab), prev), []int{1}, nil)
		parts = append(parts, p)
		prev = p
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return Concatenate(parts, 1)
}

// Grad returns dy·head for dy [rows, vocab]: [rows, hidden], the gradient of Logits with respect to x.
func (h *Head) Grad(dy *Node) *Node {
	if !h.blocked {
		return h.w.LinearGrad(dy, h.weight)
	}
	vocab := h.weight.Shape().Dimensions[0]
	var sum *Node
	prev := dy
	for lo := 0; lo < vocab; lo += h.rows {
		hi := min(lo+h.rows, vocab)
		p := DotGeneral(Slice(dy, AxisRange(), AxisRange(lo, hi)), []int{1}, nil, h.block(lo, hi, prev), []int{0}, nil)
		if sum == nil {
			sum = p
		} else {
			sum = Add(sum, p)
		}
		prev = sum
	}
	return sum
}

// block returns rows [lo, hi) of the head in the activations' dtype, converted once after is computed.
func (h *Head) block(lo, hi int, after *Node) *Node {
	idx := AddScalar(Iota(h.weight.Graph(), shapes.Make(dtypes.Int32, hi-lo, 1), 0), float64(lo))
	return ConvertDType(Gather(h.weight, SchedulingBarrier(idx, after)), h.act)
}
