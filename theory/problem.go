package theory

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/gomlx/gomlx/core/tensors"
)

// problem is the sparse regression y = Z·x* with Z ∈ ℝ^{n×k} standard Gaussian and the loss
// f(x) = ‖Zx − y‖²/(2n).
type problem struct {
	k, n   int
	z      []float64 // row-major [n,k]
	xStar  []float64
	y      []float64
	zT, yT *tensors.Tensor
}

func newProblem(seed uint64, k, n, nonZeros int) (*problem, error) {
	if k < 1 || n < 1 || nonZeros < 1 || nonZeros > k {
		return nil, fmt.Errorf("theory: need k ≥ 1, n ≥ 1 and 1 ≤ non-zeros ≤ k, got k=%d n=%d non-zeros=%d", k, n, nonZeros)
	}
	r := rand.New(rand.NewPCG(seed, 0x5add1e))
	p := &problem{k: k, n: n, z: make([]float64, n*k), xStar: make([]float64, k), y: make([]float64, n)}
	for i := range p.z {
		p.z[i] = r.NormFloat64()
	}
	// Non-zeros of magnitude in [0.5, 1.5] with random signs: none so small that it hides among the others.
	for _, j := range r.Perm(k)[:nonZeros] {
		v := 0.5 + r.Float64()
		if r.IntN(2) == 0 {
			v = -v
		}
		p.xStar[j] = v
	}
	p.y = p.apply(p.xStar)
	p.zT = tensors.FromFlatDataAndDimensions(p.z, n, k)
	p.yT = tensors.FromFlatDataAndDimensions(p.y, n)
	return p, nil
}

// apply returns Z·x.
func (p *problem) apply(x []float64) []float64 {
	out := make([]float64, p.n)
	for i := range out {
		row := p.z[i*p.k : (i+1)*p.k]
		s := 0.0
		for j, v := range row {
			s += v * x[j]
		}
		out[i] = s
	}
	return out
}

// lossGrad returns f(x) and ∇f(x) = Zᵀ(Zx − y)/n, in plain Go: the reference the graph is checked against and
// the source of the theory's predicted constants.
func (p *problem) lossGrad(x []float64) (float64, []float64) {
	r := p.apply(x)
	loss := 0.0
	for i := range r {
		r[i] -= p.y[i]
		loss += r[i] * r[i]
	}
	g := make([]float64, p.k)
	for i, ri := range r {
		row := p.z[i*p.k : (i+1)*p.k]
		for j, v := range row {
			g[j] += v * ri / float64(p.n)
		}
	}
	return loss / (2 * float64(p.n)), g
}

// maxCurvature is the largest eigenvalue of ZᵀZ/n (power iteration): plain gradient descent on x is stable for
// lr < 2/maxCurvature, the scale against which a learning rate is "small".
func (p *problem) maxCurvature() float64 {
	v := make([]float64, p.k)
	for j := range v {
		v[j] = 1 / math.Sqrt(float64(p.k)) * (1 + 0.01*float64(j%7))
	}
	lambda := 0.0
	for range 500 {
		zv := p.apply(v)
		w := make([]float64, p.k)
		for i, zi := range zv {
			row := p.z[i*p.k : (i+1)*p.k]
			for j, zij := range row {
				w[j] += zij * zi / float64(p.n)
			}
		}
		norm := 0.0
		for _, wj := range w {
			norm += wj * wj
		}
		norm = math.Sqrt(norm)
		if norm == 0 {
			return 0
		}
		for j := range w {
			v[j] = w[j] / norm
		}
		if math.Abs(norm-lambda) <= 1e-12*norm {
			return norm
		}
		lambda = norm
	}
	return lambda
}
