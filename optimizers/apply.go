package optimizers

import (
	"errors"
	"fmt"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
)

// Apply updates every parameter with opt; slots[i] holds parameter i's opt.NumSlots() slots (slots may be nil
// when the rule has none). It checks what Update relies on (counts, matching shapes and dtypes, scalar step and
// lr) and returns an error instead of letting a graph op panic on a mismatch.
func Apply(opt Optimizer, params, grads []*Node, slots [][]*Node, step, lr *Node) (newParams []*Node, newSlots [][]*Node, err error) {
	if opt == nil {
		return nil, nil, errors.New("optimizers.Apply: no optimizer")
	}
	n := opt.NumSlots()
	switch {
	case step == nil || lr == nil:
		return nil, nil, errors.New("optimizers.Apply: step and lr are required")
	case step.Rank() != 0 || lr.Rank() != 0:
		return nil, nil, fmt.Errorf("optimizers.Apply: step and lr must be scalars, got shapes %s and %s", step.Shape(), lr.Shape())
	case !step.DType().IsFloat() || !lr.DType().IsFloat():
		return nil, nil, fmt.Errorf("optimizers.Apply: step and lr must be floating point, got %s and %s", step.DType(), lr.DType())
	case len(grads) != len(params):
		return nil, nil, fmt.Errorf("optimizers.Apply: %d parameters but %d gradients", len(params), len(grads))
	case len(slots) != len(params) && !(n == 0 && len(slots) == 0):
		return nil, nil, fmt.Errorf("optimizers.Apply: %d parameters but slots for %d", len(params), len(slots))
	}
	newParams = make([]*Node, len(params))
	newSlots = make([][]*Node, len(params))
	for i, p := range params {
		if !grads[i].Shape().Equal(p.Shape()) {
			return nil, nil, fmt.Errorf("optimizers.Apply: parameter %d has shape %s but its gradient %s", i, p.Shape(), grads[i].Shape())
		}
		var s []*Node
		if len(slots) > 0 {
			s = slots[i]
		}
		if len(s) != n {
			return nil, nil, fmt.Errorf("optimizers.Apply: %s needs %d slots per parameter, parameter %d has %d", opt.Name(), n, i, len(s))
		}
		for j, sj := range s {
			if !sj.Shape().Equal(p.Shape()) {
				return nil, nil, fmt.Errorf("optimizers.Apply: parameter %d has shape %s but its slot %d %s", i, p.Shape(), j, sj.Shape())
			}
		}
		newParams[i], newSlots[i] = opt.Update(p, grads[i], s, step, lr)
	}
	return newParams, newSlots, nil
}
