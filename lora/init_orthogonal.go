package lora

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// PEFT's "orthogonal": a random orthogonal r×r matrix Q; A's rows span Q's even rows and B's columns pair with Q's odd
// rows, so both are non-zero while B·A = 0 exactly (B·Aᵀ… = R₂·Q_odd·Q_evenᵀ·R₁ = 0). Needs an even rank. Scaled by
// λ like the other small inits (λ = 0 falls back to 1 so the factors stay non-zero).
func init() {
	RegisterInit("orthogonal", func(rng *rand.Rand, a *Adapter, spec Spec) error {
		r := spec.Rank
		if r%2 != 0 {
			return fmt.Errorf("the orthogonal init needs an even rank, got %d", r)
		}
		scale := spec.Scale
		if scale == 0 {
			scale = 1
		}
		q := randomOrthogonal(rng, r)
		half := r / 2
		// A [r, in] = Σ_k Q[2k,:]ᵀ ⊗ R1[k,:]  (column space of A ⊂ span of even rows of Q).
		r1 := make([]float64, half*a.In)
		for i := range r1 {
			r1[i] = rng.NormFloat64() * scale / math.Sqrt(float64(a.In))
		}
		for i := range r {
			for j := range a.In {
				var v float64
				for k := range half {
					v += q[(2*k)*r+i] * r1[k*a.In+j]
				}
				a.Factors[0][i*a.In+j] = float32(v)
			}
		}
		// B [out, r] = R2 [out, half] · Q_odd [half, r].
		b := a.Factors[spec.Depth-1]
		for o := range a.Out {
			for k := range half {
				w := rng.NormFloat64() * scale / math.Sqrt(float64(half))
				for j := range r {
					b[o*r+j] += float32(w * q[(2*k+1)*r+j])
				}
			}
		}
		innerIdentity(a, spec, 1)
		return nil
	})
}

// randomOrthogonal returns an n×n orthogonal matrix (row-major) by Gram–Schmidt on Gaussian rows.
func randomOrthogonal(rng *rand.Rand, n int) []float64 {
	q := make([]float64, n*n)
	for i := range n {
		row := q[i*n : (i+1)*n]
		for {
			for j := range row {
				row[j] = rng.NormFloat64()
			}
			for pass := 0; pass < 2; pass++ { // twice for numerical orthogonality
				for k := range i {
					prev := q[k*n : (k+1)*n]
					var dot float64
					for j := range row {
						dot += row[j] * prev[j]
					}
					for j := range row {
						row[j] -= dot * prev[j]
					}
				}
			}
			var norm float64
			for _, v := range row {
				norm += v * v
			}
			if norm = math.Sqrt(norm); norm > 1e-6 {
				for j := range row {
					row[j] /= norm
				}
				break
			}
		}
	}
	return q
}
