package optimizers

import (
	"fmt"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
)

func init() {
	Register("signum", func(cfg *Config) (Optimizer, error) {
		if err := cfg.allowOnly("momentum"); err != nil {
			return nil, err
		}
		cfg.Default(&cfg.Momentum, 0.9)
		if cfg.Momentum >= 1 {
			return nil, fmt.Errorf("momentum must be in [0, 1), got %g", cfg.Momentum)
		}
		return &signum{beta: cfg.Momentum}, nil
	})
}

// signum is sign descent on momentum (Bernstein et al. 2018): m ← β·m + (1−β)·g; x ← x − lr·sign(m).
type signum struct{ beta float64 }

func (o *signum) Name() string  { return "signum" }
func (o *signum) Q() float64    { return 1 }
func (o *signum) NumSlots() int { return 1 }

func (o *signum) Update(param, grad *Node, slots []*Node, _, lr *Node) (*Node, []*Node) {
	m := ema(slots[0], grad, o.beta)
	return descend(param, Sign(m), lr), []*Node{m}
}
