package model_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/compute/dtypes"

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
	checkHiddenGradient(t, cfg, names, values, tokens, 3)
}
