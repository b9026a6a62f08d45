package optimizers_test

import (
	"fmt"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/backend"
	"github.com/saddle-ml/saddle/optimizers"
)

// A third party adds a rule with one file like this: an init function that registers a factory, and a type that
// implements Optimizer. New then validates the common fields and adds weight decay (--weight-decay, --wd-mode)
// for free. This one is normalized gradient descent: x ← x − lr·g/(‖g‖ + eps), per parameter.

func init() {
	optimizers.Register("normalized", func(cfg *optimizers.Config) (optimizers.Optimizer, error) {
		cfg.Default(&cfg.Eps, 1e-12) // fields the rule uses get their defaults here; Resolve reports them
		return normalized{eps: cfg.Eps}, nil
	})
}

type normalized struct{ eps float64 }

func (normalized) Name() string  { return "normalized" }
func (normalized) Q() float64    { return 2 }
func (normalized) NumSlots() int { return 0 }

func (o normalized) Update(param, grad *Node, _ []*Node, _, lr *Node) (*Node, []*Node) {
	norm := AddScalar(Sqrt(ReduceAllSum(Square(grad))), o.eps)
	return Sub(param, Mul(lr, Div(grad, norm))), nil
}

func Example_register() {
	opt, err := optimizers.New("normalized", optimizers.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	b, _, err := backend.New("") // $GOMLX_BACKEND, or the Go backend
	if err != nil {
		fmt.Println(err)
		return
	}
	exec, err := NewExec(b, func(x, g, step, lr *Node) *Node {
		newParams, _, err := optimizers.Apply(opt, []*Node{x}, []*Node{g}, nil, step, lr)
		if err != nil {
			panic(err) // Exec.Call turns it into an error
		}
		return newParams[0]
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// g = (3, 4) has norm 5, so with lr 0.5 the step is 0.5·(0.6, 0.8) = (0.3, 0.4).
	out, err := exec.Call(tensors.FromValue([]float32{3, 4}), tensors.FromValue([]float32{3, 4}), float32(1), float32(0.5))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(opt.Name(), out[0].Value())
	// Output: normalized [2.7 3.6]
}
