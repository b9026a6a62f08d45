package finetune

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/backend"
)

// TestBatchLossGradient compares batchLoss (hand-written gradient) with autodiff of LogSoftmax + Gather in float64,
// with large logits (a stable log-sum-exp is needed) and some zero weights.
func TestBatchLossGradient(t *testing.T) {
	const batch, seq, vocab = 2, 5, 7
	rng := rand.New(rand.NewPCG(3, 4))
	logits := make([]float64, batch*seq*vocab)
	for i := range logits {
		logits[i] = rng.NormFloat64() * 30
	}
	targets := make([]int32, batch*seq)
	weights := make([]float64, batch*seq)
	for i := range targets {
		targets[i] = int32(rng.IntN(vocab))
		weights[i] = float64(i % 3 % 2) // 0, 1, 0, 0, 1, 0, ...
	}
	b, _, err := backend.New("") // $GOMLX_BACKEND, which TestMain sets to the test backend
	if err != nil {
		t.Fatal(err)
	}
	reference := func(x, tg, w *Node) *Node {
		flat := Reshape(x, -1, vocab)
		n := flat.Shape().Dimensions[0]
		idx := Concatenate([]*Node{Iota(x.Graph(), shapeOf(n), 0), Reshape(tg, n, 1)}, 1)
		return Neg(ReduceAllSum(Mul(Gather(LogSoftmax(flat, -1), idx), Reshape(w, n))))
	}
	exec := MustNewExec(b, func(x, tg, w *Node) []*Node {
		mean, sum := batchLoss(x, tg, w)
		got := Mul(mean, sum)
		want := reference(x, tg, w)
		return append([]*Node{got, want}, append(Gradient(got, x), Gradient(want, x)...)...)
	})
	out := exec.MustExec(tensors.FromFlatDataAndDimensions(logits, batch, seq, vocab),
		tensors.FromFlatDataAndDimensions(targets, batch, seq), tensors.FromFlatDataAndDimensions(weights, batch, seq))
	if got, want := out[0].Value().(float64), out[1].Value().(float64); math.Abs(got-want) > 1e-9*math.Abs(want) {
		t.Fatalf("loss %g, reference %g", got, want)
	}
	got, want := tensors.MustCopyFlatData[float64](out[2]), tensors.MustCopyFlatData[float64](out[3])
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("gradient[%d] = %g, reference %g", i, got[i], want[i])
		}
	}
}

func shapeOf(n int) shapes.Shape { return shapes.Make(dtypes.Int32, n, 1) }
