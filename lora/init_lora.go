package lora

import (
	"math"
	"math/rand/v2"
)

// PEFT's default: A ~ Kaiming-uniform with a = √5 (bound 1/√in), B = 0, inner factors identity.
func init() {
	RegisterInit("lora", func(rng *rand.Rand, a *Adapter, spec Spec) error {
		bound := 1 / math.Sqrt(float64(a.In))
		for i := range a.Factors[0] {
			a.Factors[0][i] = float32((2*rng.Float64() - 1) * bound)
		}
		innerIdentity(a, spec, 1)
		return nil
	})
}
