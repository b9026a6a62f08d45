package model

import "github.com/saddle-ml/saddle/internal/gemm"

// TrainAdapter is a trainable low-rank addition to one linear module's output for the CPU trainer: the module computes
// y = x·Wᵀ (+ bias) + u·V with W frozen, where Forward gives u and V. The trainer adds u·V in the same product as
// x·Wᵀ (gemm.MulPair: the low-rank term's steps join the last block of the weight's), and likewise the adapter's
// share of the input gradient, so neither costs a pass over y or dx of its own. In one loss-and-gradient pass the
// trainer calls Forward once for each adapted module in forward order, then Backward once for each in reverse order.
type TrainAdapter interface {
	// Forward takes x [rows, In] and returns the adapter's output as the product u·V: u [rows, r] and V a view of
	// an [r, Out] matrix. It may keep the intermediates its Backward needs until that Backward; u and V stay valid
	// until then.
	Forward(x []float32, rows int) (u []float32, r int, v gemm.View)
	// Backward takes the x of the matching Forward and dy [rows, Out], adds the gradients of the adapter's own
	// parameters to its accumulators and returns the gradient through the adapter with respect to x as the product
	// g·V: g [rows, r] and V a view of an [r, In] matrix, valid until the next Forward.
	Backward(x, dy []float32, rows int) (g []float32, r int, v gemm.View)
}
