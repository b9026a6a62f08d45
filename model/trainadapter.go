package model

// TrainAdapter is a trainable addition to one linear module's output for the CPU trainer: the module computes
// y = x·Wᵀ (+ bias) + adapter(x) with W frozen. In one loss-and-gradient pass the trainer calls Forward once for
// each adapted module in forward order, then Backward once for each in reverse order.
type TrainAdapter interface {
	// Forward adds the adapter's output for x [rows, In] to y [rows, Out]. It may keep the intermediates its
	// Backward needs until that Backward.
	Forward(x []float32, rows int, y []float32)
	// Backward takes the x of the matching Forward and dy [rows, Out], adds the gradient through the adapter with
	// respect to x to dx [rows, In] (dx nil: not needed) and adds the gradients of the adapter's own parameters to
	// its accumulators.
	Backward(x, dy []float32, rows int, dx []float32)
}
