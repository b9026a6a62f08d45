package optimizers_test

import (
	"math"
	"strings"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/optimizers"
)

func TestClipByGlobalNorm(t *testing.T) {
	a, b := []float32{3, -4}, []float32{0, 12, 0}
	norm := math.Sqrt(9 + 16 + 144) // 13
	for _, maxNorm := range []float64{6.5, 13.5, 0, -1} {
		exec, err := NewExec(newBackend(t), func(a, b *Node) (*Node, *Node, *Node) {
			c, n := optimizers.ClipByGlobalNorm([]*Node{a, b}, maxNorm)
			return c[0], c[1], n
		})
		if err != nil {
			t.Fatal(err)
		}
		outs, err := exec.Call(tensors.FromFlatDataAndDimensions(a, 2), tensors.FromFlatDataAndDimensions(b, 3))
		if err != nil {
			t.Fatal(err)
		}
		scale := 1.0
		if maxNorm > 0 {
			scale = math.Min(1, maxNorm/(norm+1e-6))
		}
		gotNorm := tensors.ToScalar[float32](outs[2])
		if math.Abs(float64(gotNorm)-norm) > 1e-5 {
			t.Errorf("maxNorm %g: norm %g, want %g", maxNorm, gotNorm, norm)
		}
		for k, in := range [][]float32{a, b} {
			got, _ := tensors.CopyFlatData[float32](outs[k])
			for i := range in {
				if want := float64(in[i]) * scale; math.Abs(float64(got[i])-want) > 1e-5 {
					t.Errorf("maxNorm %g: grad %d[%d] = %g, want %g", maxNorm, k, i, got[i], want)
				}
			}
		}
	}
}

func TestApplyChecksInputs(t *testing.T) {
	adam, err := optimizers.New("adam", optimizers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		fn   func(p, q *Node) error
		want string
	}{
		{"grad count", func(p, q *Node) error {
			_, _, err := optimizers.Apply(adam, []*Node{p}, nil, [][]*Node{{p, p}}, ScalarOne(p.Graph(), p.DType()), ScalarOne(p.Graph(), p.DType()))
			return err
		}, "1 parameters but 0 gradients"},
		{"slot count", func(p, q *Node) error {
			_, _, err := optimizers.Apply(adam, []*Node{p}, []*Node{p}, [][]*Node{{p}}, ScalarOne(p.Graph(), p.DType()), ScalarOne(p.Graph(), p.DType()))
			return err
		}, "adam needs 2 slots per parameter, parameter 0 has 1"},
		{"grad shape", func(p, q *Node) error {
			_, _, err := optimizers.Apply(adam, []*Node{p}, []*Node{q}, [][]*Node{{p, p}}, ScalarOne(p.Graph(), p.DType()), ScalarOne(p.Graph(), p.DType()))
			return err
		}, "parameter 0 has shape (Float32)[2] but its gradient (Float32)[3]"},
		{"integer step", func(p, q *Node) error {
			_, _, err := optimizers.Apply(adam, []*Node{p}, []*Node{p}, [][]*Node{{p, p}}, Const(p.Graph(), int32(1)), ScalarOne(p.Graph(), p.DType()))
			return err
		}, "step and lr must be floating point"},
		{"lr rank", func(p, q *Node) error {
			_, _, err := optimizers.Apply(adam, []*Node{p}, []*Node{p}, [][]*Node{{p, p}}, ScalarOne(p.Graph(), p.DType()), p)
			return err
		}, "step and lr must be scalars"},
	} {
		var got error
		exec, err := NewExec(newBackend(t), func(p, q *Node) *Node {
			got = c.fn(p, q)
			return p
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := exec.Call(tensors.FromFlatDataAndDimensions([]float32{1, 2}, 2), tensors.FromFlatDataAndDimensions([]float32{1, 2, 3}, 3)); err != nil {
			t.Fatal(err)
		}
		if got == nil || !strings.Contains(got.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, got, c.want)
		}
	}
}
