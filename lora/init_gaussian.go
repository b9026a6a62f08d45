package lora

import "math/rand/v2"

// PEFT's "gaussian": A with standard deviation 1/r, B = 0, inner factors identity.
func init() {
	RegisterInit("gaussian", func(rng *rand.Rand, a *Adapter, spec Spec) error {
		fillNormal(rng, a.Factors[0], 1/float64(spec.Rank))
		innerIdentity(a, spec, 1)
		return nil
	})
}
