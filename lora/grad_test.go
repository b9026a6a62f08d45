package lora

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/testbackend"
)

// TestHookGradientsFiniteDifferences holds the hand-written factor gradients (factorProduct) to central finite
// differences in float64, for depths 2 and 3 and for a module that widens (out > in: B's gradient takes the
// transposed-h form) and one that narrows (out < in), and checks the input gradient too.
func TestHookGradientsFiniteDifferences(t *testing.T) {
	b := testbackend.Get(t)
	cfg := tinyConfig() // hidden 16, intermediate 24
	for _, depth := range []int{2, 3} {
		for _, module := range []string{"model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"} {
			t.Run(fmt.Sprintf("depth%d/%s", depth, module), func(t *testing.T) {
				s := spec("gaussian", depth)
				s.Targets, s.Rank = []string{module}, 3
				set, err := Attach(cfg, s)
				if err != nil {
					t.Fatal(err)
				}
				a := set.Adapters[0]
				rng := rand.New(rand.NewPCG(uint64(depth), 9))
				draw := func(n int) []float64 {
					v := make([]float64, n)
					for i := range v {
						v[i] = rng.NormFloat64()
					}
					return v
				}
				const rows = 5
				x, weights := draw(rows*a.In), draw(rows*a.Out)
				factors := make([][]float64, depth)
				for i := range factors {
					factors[i] = draw(len(a.Factors[i]))
				}
				exec := MustNewExec(b, func(inputs []*Node) []*Node {
					xn := inputs[0]
					y := set.Hook(inputs[2:], nil)(module, xn, ZerosLike(inputs[1]))
					loss := ReduceAllSum(Mul(y, inputs[1]))
					return append([]*Node{loss}, Gradient(loss, append([]*Node{xn}, inputs[2:]...)...)...)
				})
				defer exec.Finalize()
				args := func(x []float64, fs [][]float64) []any {
					out := []any{tensors.FromFlatDataAndDimensions(x, rows, a.In), tensors.FromFlatDataAndDimensions(weights, rows, a.Out)}
					for i, f := range fs {
						shape := a.FactorShape(i, depth, s.Rank)
						out = append(out, tensors.FromFlatDataAndDimensions(f, shape...))
					}
					return out
				}
				lossAt := func(x []float64, fs [][]float64) float64 {
					return exec.MustExec(args(x, fs)...)[0].Value().(float64)
				}
				res := exec.MustExec(args(x, factors)...)
				check := func(name string, v []float64, grad []float64, set func(i int, d float64) float64) {
					for i := range v {
						const h = 1e-5
						fd := (set(i, h) - set(i, -h)) / (2 * h)
						if math.Abs(fd-grad[i]) > 1e-6*(1+math.Abs(fd)) {
							t.Fatalf("%s[%d]: gradient %g, finite differences %g", name, i, grad[i], fd)
						}
					}
				}
				flat := func(k int) []float64 { return tensors.MustCopyFlatData[float64](res[k]) }
				check("x", x, flat(1), func(i int, d float64) float64 {
					old := x[i]
					x[i] += d
					defer func() { x[i] = old }()
					return lossAt(x, factors)
				})
				for f := range factors {
					check(fmt.Sprintf("factor%d", f), factors[f], flat(2+f), func(i int, d float64) float64 {
						old := factors[f][i]
						factors[f][i] += d
						defer func() { factors[f][i] = old }()
						return lossAt(x, factors)
					})
				}
			})
		}
	}
}
