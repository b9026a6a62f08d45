package optimizers

import . "github.com/gomlx/gomlx/core/graph" //nolint:revive

func init() {
	Register("sign", func(cfg *Config) (Optimizer, error) {
		if err := cfg.allowOnly(); err != nil {
			return nil, err
		}
		return signSGD{}, nil
	})
}

// signSGD is sign descent (Bernstein et al. 2018), steepest descent for the ∞-norm (q=1): x ← x − lr·sign(g),
// with sign(0) = 0.
type signSGD struct{}

func (signSGD) Name() string  { return "sign" }
func (signSGD) Q() float64    { return 1 }
func (signSGD) NumSlots() int { return 0 }

func (signSGD) Update(param, grad *Node, _ []*Node, _, lr *Node) (*Node, []*Node) {
	return descend(param, Sign(grad), lr), nil
}
