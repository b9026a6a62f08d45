package optimizers

import . "github.com/gomlx/gomlx/core/graph" //nolint:revive

func init() {
	Register("lion", func(cfg *Config) (Optimizer, error) {
		if err := cfg.allowOnly("beta1", "beta2"); err != nil {
			return nil, err
		}
		cfg.Default(&cfg.Beta1, 0.9)
		cfg.Default(&cfg.Beta2, 0.99)
		return &lion{beta1: cfg.Beta1, beta2: cfg.Beta2}, nil
	})
}

// lion is Lion (Chen et al. 2023): x ← x − lr·sign(β1·m + (1−β1)·g); then m ← β2·m + (1−β2)·g.
type lion struct{ beta1, beta2 float64 }

func (o *lion) Name() string  { return "lion" }
func (o *lion) Q() float64    { return 1 }
func (o *lion) NumSlots() int { return 1 }

func (o *lion) Update(param, grad *Node, slots []*Node, _, lr *Node) (*Node, []*Node) {
	update := Sign(ema(slots[0], grad, o.beta1))
	return descend(param, update, lr), []*Node{ema(slots[0], grad, o.beta2)}
}
