package lora

import (
	"math"
	"math/rand/v2"
)

// The paper's escape init w₁ = 0, wᵢ = λ lifted to matrices: B = 0 exactly (ΔW sits on the saddle), inner factors
// λ·I, and A with entries N(0, λ²/in) so that each of A's r rows has norm ≈ λ — the matrix analogue of |wᵢ| = λ.
func init() {
	RegisterInit("saddle", func(rng *rand.Rand, a *Adapter, spec Spec) error {
		fillNormal(rng, a.Factors[0], spec.Scale/math.Sqrt(float64(a.In)))
		innerIdentity(a, spec, spec.Scale)
		return nil
	})
}
