package optimizers

import (
	"errors"
	"fmt"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
)

func init() { Register("adam", newAdamFactory("adam", 0, "")) }

// adam is PyTorch's Adam with bias correction and eps added after the square root:
// m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; x ← x − lr/(1−β1^t) · m / (√v/√(1−β2^t) + eps).
// Near a saddle (tiny, consistent gradients) m/√v ≈ sign(g), which is why its geometry is q=1.
type adam struct {
	name              string
	beta1, beta2, eps float64
}

// newAdamFactory returns the factory for an Adam variant with the given weight decay defaults; a non-empty
// mode is the only mode the variant accepts.
func newAdamFactory(name string, defaultWD float64, mode string) Factory {
	return func(cfg *Config) (Optimizer, error) {
		if err := cfg.allowOnly("beta1", "beta2", "eps"); err != nil {
			return nil, err
		}
		cfg.Default(&cfg.Beta1, 0.9)
		cfg.Default(&cfg.Beta2, 0.999)
		cfg.Default(&cfg.Eps, 1e-8)
		cfg.Default(&cfg.WeightDecay, defaultWD)
		if cfg.Eps <= 0 {
			return nil, errors.New("eps must be > 0")
		}
		if float32(cfg.Eps) < 0x1p-126 { // the update runs in float32: ε rounds to 0 (or a subnormal) and 0/0 is NaN
			return nil, fmt.Errorf("eps %g is below float32's smallest normal number (%g), where the update computes: "+
				"a zero gradient would divide 0 by 0; give eps >= 1e-30 (the default is 1e-8)", cfg.Eps, float32(0x1p-126))
		}
		if mode != "" {
			if cfg.WDMode == "" {
				cfg.WDMode = mode
			}
			if cfg.WDMode != mode {
				return nil, fmt.Errorf("%s has %s weight decay by definition; for %s decay use adamw (decoupled) or adam-l2 (coupled)", name, mode, cfg.WDMode)
			}
		}
		return &adam{name: name, beta1: cfg.Beta1, beta2: cfg.Beta2, eps: cfg.Eps}, nil
	}
}

func (o *adam) Name() string  { return o.name }
func (o *adam) Q() float64    { return 1 }
func (o *adam) NumSlots() int { return 2 }

func (o *adam) Update(param, grad *Node, slots []*Node, step, lr *Node) (*Node, []*Node) {
	m := ema(slots[0], grad, o.beta1)
	v := ema(slots[1], Square(grad), o.beta2)
	// Bias corrections in the step's dtype (float32), then cast: β^t in a 16-bit dtype would be too coarse.
	bc1 := OneMinus(Pow(ConstAs(step, o.beta1), step))
	bc2 := OneMinus(Pow(ConstAs(step, o.beta2), step))
	stepSize := asDType(Div(ConvertDType(lr, step.DType()), bc1), param)
	denom := AddScalar(Div(Sqrt(v), asDType(Sqrt(bc2), param)), o.eps)
	return Sub(param, Mul(stepSize, Div(m, denom))), []*Node{m, v}
}
