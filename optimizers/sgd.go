package optimizers

import (
	"errors"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
)

func init() { Register("sgd", newSGD) }

// sgd is gradient descent with optional heavy-ball or Nesterov momentum, with PyTorch's semantics (no dampening):
// buf ← μ·buf + g; step = g + μ·buf with Nesterov, else buf.
type sgd struct {
	momentum float64
	nesterov bool
}

func newSGD(cfg *Config) (Optimizer, error) {
	if err := cfg.allowOnly("momentum", "nesterov"); err != nil {
		return nil, err
	}
	if cfg.Nesterov && cfg.Momentum == 0 {
		return nil, errors.New("nesterov needs momentum > 0")
	}
	return &sgd{momentum: cfg.Momentum, nesterov: cfg.Nesterov}, nil
}

func (o *sgd) Name() string { return "sgd" }
func (o *sgd) Q() float64   { return 2 }

func (o *sgd) NumSlots() int {
	if o.momentum == 0 {
		return 0
	}
	return 1
}

func (o *sgd) Update(param, grad *Node, slots []*Node, _, lr *Node) (*Node, []*Node) {
	if o.momentum == 0 {
		return descend(param, grad, lr), nil
	}
	mu := Scalar(param.Graph(), param.DType(), o.momentum)
	buf := Add(Mul(mu, slots[0]), grad)
	step := buf
	if o.nesterov {
		step = Add(grad, Mul(mu, buf))
	}
	return descend(param, step, lr), []*Node{buf}
}
