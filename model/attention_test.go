package model_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/model"
)

// The full-sequence forward pass attends in causal chunks from 128 tokens on, with a hand-written gradient; these
// tests run it on sequences long enough for several chunks on a tiny random model in float64, against the
// KV-cached decoder (one token at a time, no chunks) and against finite differences.

func tinyConfig(window int) model.Config {
	return model.Config{Architecture: "llama", HiddenSize: 16, IntermediateSize: 24, NumLayers: 2, NumHeads: 4,
		NumKVHeads: 2, HeadDim: 4, VocabSize: 13, MaxPositions: 512, RMSNormEps: 1e-6, RopeTheta: 10000,
		TieEmbeddings: true, SlidingWindow: window}
}

// tinyWeights draws every parameter of cfg (norm weights around 1) in sorted-name order.
func tinyWeights(cfg model.Config, seed uint64) (names []string, values [][]float64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	shapes := cfg.ExpectedShapes()
	for n := range shapes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		size := 1
		for _, d := range shapes[n] {
			size *= d
		}
		v := make([]float64, size)
		for j := range v {
			v[j] = rng.NormFloat64() * 0.5
			if len(shapes[n]) == 1 {
				v[j] += 1
			}
		}
		values = append(values, v)
	}
	return names, values
}

func TestChunkedAttentionMatchesDecoder(t *testing.T) {
	for _, window := range []int{0, 40} {
		t.Run(fmt.Sprintf("window=%d", window), func(t *testing.T) {
			cfg := tinyConfig(window)
			names, values := tinyWeights(cfg, 1)
			p := &model.Pretrained{Config: cfg, Weights: map[string]*model.Tensor{}, Path: "tiny"}
			for i, n := range names {
				data := make([]float32, len(values[i]))
				for j, v := range values[i] {
					data[j] = float32(v)
				}
				p.Weights[n] = &model.Tensor{Shape: cfg.ExpectedShapes()[n], Data: data}
			}
			m, err := model.NewWithDType(newBackend(t), p, dtypes.Float64)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(5, 6))
			seq := make([]int, 150) // 2 chunks of 75 queries
			for i := range seq {
				seq[i] = rng.IntN(cfg.VocabSize)
			}
			full, err := m.Logits(toInt32(seq))
			if err != nil {
				t.Fatal(err)
			}
			d, err := m.NewDecoder(len(seq), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			worst := 0.0
			for i, id := range seq {
				got, err := d.Step(id)
				if err != nil {
					t.Fatal(err)
				}
				for j := range got {
					worst = max(worst, math.Abs(float64(got[j]-full[i][j])))
				}
			}
			if worst > 1e-5 { // logits come back as float32
				t.Fatalf("chunked full-sequence logits differ from one-token decoding by %g", worst)
			}
		})
	}
}

func TestChunkedAttentionGradientFiniteDifferences(t *testing.T) {
	cfg := tinyConfig(0)
	cfg.NumLayers = 1
	names, values := tinyWeights(cfg, 2)
	rng := rand.New(rand.NewPCG(7, 8))
	tokens := make([]int32, 130) // 2 chunks of 65 queries
	for i := range tokens {
		tokens[i] = int32(rng.IntN(cfg.VocabSize))
	}
	probe := make([]float64, len(tokens)*cfg.HiddenSize)
	for i := range probe {
		probe[i] = rng.NormFloat64()
	}
	lossOf := func(inputs []*Node) *Node {
		w := model.Weights{}
		for i, n := range names {
			w[n] = inputs[i]
		}
		tok := inputs[len(names)]
		h := cfg.Hidden(w, tok, ScalarZero(tok.Graph(), dtypes.Int32), nil, nil)
		return ReduceAllSum(Mul(h, Reshape(Const(tok.Graph(), probe), 1, len(tokens), cfg.HiddenSize)))
	}
	args := func() []any {
		a := make([]any, 0, len(names)+1)
		for i, n := range names {
			a = append(a, tensors.FromFlatDataAndDimensions(slices.Clone(values[i]), cfg.ExpectedShapes()[n]...))
		}
		return append(a, tensors.FromFlatDataAndDimensions(tokens, 1, len(tokens)))
	}
	b := newBackend(t)
	lossExec := MustNewExec(b, func(inputs []*Node) *Node { return lossOf(inputs) })
	gradExec := MustNewExec(b, func(inputs []*Node) []*Node { return Gradient(lossOf(inputs), inputs[:len(names)]...) })
	grads := gradExec.MustExec(args()...)
	loss := func() float64 { return lossExec.MustExec(args()...)[0].Value().(float64) }
	const eps = 1e-6
	checked := 0
	for i, n := range names {
		analytic := tensors.MustCopyFlatData[float64](grads[i])
		for _, j := range []int{0, len(values[i]) / 3, len(values[i]) - 1} {
			orig := values[i][j]
			values[i][j] = orig + eps
			up := loss()
			values[i][j] = orig - eps
			down := loss()
			values[i][j] = orig
			numeric := (up - down) / (2 * eps)
			if diff := math.Abs(numeric - analytic[j]); diff > 1e-6*max(1, math.Abs(numeric)) {
				t.Errorf("%s[%d]: autodiff %.9g, finite differences %.9g", n, j, analytic[j], numeric)
			}
			checked++
		}
	}
	t.Logf("checked %d gradient entries over %d tensors", checked, len(names))
}
