package optimizers

import (
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
)

// ClipByGlobalNorm scales all gradients by min(1, maxNorm/(‖g‖+1e-6)), where ‖g‖ is the L2 norm of all of them
// together (PyTorch's clip_grad_norm_). It returns the clipped gradients and ‖g‖ before clipping, a scalar
// (float64 if every gradient is float64, else float32) to log. maxNorm ≤ 0 turns clipping off; the norm is still
// computed. With no gradients it returns nil, nil.
func ClipByGlobalNorm(grads []*Node, maxNorm float64) (clipped []*Node, norm *Node) {
	if len(grads) == 0 {
		return nil, nil
	}
	dtype := dtypes.Float64
	for _, g := range grads {
		if g.DType() != dtypes.Float64 {
			dtype = dtypes.Float32
		}
	}
	var sumSq *Node
	for _, g := range grads {
		s := ReduceAllSum(Square(ConvertDType(g, dtype)))
		if sumSq == nil {
			sumSq = s
		} else {
			sumSq = Add(sumSq, s)
		}
	}
	norm = Sqrt(sumSq)
	if !(maxNorm > 0) { // also catches NaN
		return grads, norm
	}
	scale := MinScalar(Div(Scalar(norm.Graph(), dtype, maxNorm), AddScalar(norm, 1e-6)), 1.0)
	clipped = make([]*Node, len(grads))
	for i, g := range grads {
		clipped[i] = Mul(g, asDType(scale, g))
	}
	return clipped, norm
}
