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
	"github.com/saddle-ml/saddle/model"
)

// TestTokenLossGradient compares tokenLoss (chunked, gradient computed in the forward pass) with autodiff of
// LogSoftmax + Gather over the full logits, in float64, with large logits (a stable log-sum-exp is needed), some
// zero weights, and chunk sizes that divide the rows evenly, unevenly, and not at all.
func TestTokenLossGradient(t *testing.T) {
	const batch, seq, hidden, vocab = 2, 5, 4, 7
	rng := rand.New(rand.NewPCG(3, 4))
	h := make([]float64, batch*seq*hidden)
	for i := range h {
		h[i] = rng.NormFloat64() * 6
	}
	head := make([]float64, vocab*hidden)
	for i := range head {
		head[i] = rng.NormFloat64() * 2
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
	cfg := &model.Config{VocabSize: vocab, TieEmbeddings: true}
	reference := func(x, head, tg, w *Node) *Node {
		flat := DotGeneral(Reshape(x, -1, hidden), []int{1}, nil, head, []int{1}, nil)
		n := flat.Shape().Dimensions[0]
		idx := Concatenate([]*Node{Iota(x.Graph(), shapeOf(n), 0), Reshape(tg, n, 1)}, 1)
		return Neg(ReduceAllSum(Mul(Gather(LogSoftmax(flat, -1), idx), Reshape(w, n))))
	}
	// The head held in float32 under float64 activations takes the blocked path (blockedHead), 3 vocabulary rows a
	// block: 7 rows are blocks of 3, 3 and 1.
	defer func(e int) { model.HeadBlockElements = e }(model.HeadBlockElements)
	model.HeadBlockElements = 3 * hidden
	for _, c := range []struct {
		chunk int
		f32   bool
	}{{1, false}, {3, false}, {5, false}, {10, false}, {64, false}, {3, true}, {64, true}} {
		chunk := c.chunk
		exec := MustNewExec(b, func(x, head, tg, w *Node) []*Node {
			stored := head
			if c.f32 {
				stored = ConvertDType(head, dtypes.Float32)
				head = ConvertDType(stored, dtypes.Float64)
			}
			weights := model.Weights{Nodes: map[string]*Node{"model.embed_tokens.weight": stored}}
			got, wsum := tokenLoss(weights, cfg, x, tg, w, chunk, true)
			want := reference(x, head, tg, w)
			noGrad, _ := tokenLoss(weights, cfg, x, tg, w, chunk, false)
			return append([]*Node{got, want, noGrad, wsum}, append(Gradient(got, x), Gradient(want, x)...)...)
		})
		out := exec.MustExec(tensors.FromFlatDataAndDimensions(h, batch, seq, hidden),
			tensors.FromFlatDataAndDimensions(head, vocab, hidden),
			tensors.FromFlatDataAndDimensions(targets, batch, seq), tensors.FromFlatDataAndDimensions(weights, batch, seq))
		got, want, noGrad := out[0].Value().(float64), out[1].Value().(float64), out[2].Value().(float64)
		if math.Abs(got-want) > 1e-9*math.Abs(want) || got != noGrad {
			t.Fatalf("chunk %d (f32 head %v): loss %g (without gradient %g), reference %g", chunk, c.f32, got, noGrad, want)
		}
		if wsum := out[3].Value().(float64); wsum != 3 {
			t.Fatalf("chunk %d: weight sum %g, want 3", chunk, wsum)
		}
		gotG, wantG := tensors.MustCopyFlatData[float64](out[4]), tensors.MustCopyFlatData[float64](out[5])
		for i := range gotG {
			if math.Abs(gotG[i]-wantG[i]) > 1e-9 {
				t.Fatalf("chunk %d (f32 head %v): gradient[%d] = %g, reference %g", chunk, c.f32, i, gotG[i], wantG[i])
			}
		}
	}
}

func shapeOf(n int) shapes.Shape { return shapes.Make(dtypes.Int32, n, 1) }
