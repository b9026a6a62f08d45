package optimizers

import (
	"errors"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
)

func init() {
	RegisterWithQ("steepest", func(cfg *Config) (Optimizer, error) {
		if err := cfg.allowOnly("q"); err != nil {
			return nil, err
		}
		if cfg.Q == 0 {
			return nil, errors.New("set q in [1, 2] (2 is gradient descent, 1 is sign descent)")
		}
		return &steepest{q: cfg.Q}, nil
	})
}

// steepest is the paper's steepest descent for the q-geometry, elementwise: x ← x − lr·sign(g)·|g|^(q−1).
// q=2 is gradient descent, q=1 is sign descent.
type steepest struct{ q float64 }

func (o *steepest) Name() string  { return "steepest" }
func (o *steepest) Q() float64    { return o.q }
func (o *steepest) NumSlots() int { return 0 }

func (o *steepest) Update(param, grad *Node, _ []*Node, _, lr *Node) (*Node, []*Node) {
	// Where g = 0 the update must be 0 (sign(0) = 0): raise 1 instead of 0 to the power q−1, so that neither
	// 0^0 nor the infinite derivative of |g|^(q−1) at 0 (for q < 2) ever appears.
	safe := Where(IsZero(grad), OnesLike(grad), Abs(grad))
	update := Mul(Sign(grad), Pow(safe, Scalar(grad.Graph(), grad.DType(), o.q-1)))
	return descend(param, update, lr), nil
}
