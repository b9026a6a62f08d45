package lora

import (
	"math"
	"math/rand/v2"
)

// Every factor at scale λ: like saddle, but B has entries N(0, λ²/r) too, so ΔW ≠ 0 is tiny — near, not on, the saddle.
func init() {
	RegisterInit("small", func(rng *rand.Rand, a *Adapter, spec Spec) error {
		fillNormal(rng, a.Factors[0], spec.Scale/math.Sqrt(float64(a.In)))
		fillNormal(rng, a.Factors[spec.Depth-1], spec.Scale/math.Sqrt(float64(spec.Rank)))
		innerIdentity(a, spec, spec.Scale)
		return nil
	})
}
