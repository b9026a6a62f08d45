package finetune

import (
	"math/rand/v2"
	"testing"

	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/optimizers"
)

// The training workloads (scripts/bench.sh measures them against PyTorch in one run):
//
//	go test ./finetune -run XXX -bench TrainStep -benchtime 5x

// BenchmarkTrainStep: W1, stories260K, LoRA r=8 on q,k,v,o, Adam, batch 16 × 256.
func BenchmarkTrainStep(b *testing.B) {
	f := newFixture(b)
	benchTrainStep(b, f.model, f.batcher(b, 16, 256))
}

// BenchmarkTrainStepSynthetic: W2, a random-weight Llama (hidden 512, 8 layers, 8 heads, 4 KV heads, FFN 1408,
// vocab 32000), the same adapters and optimizer, batch 4 × 256.
func BenchmarkTrainStepSynthetic(b *testing.B) {
	cfg := model.Config{Architecture: "llama", HiddenSize: 512, IntermediateSize: 1408, NumLayers: 8, NumHeads: 8,
		NumKVHeads: 4, HeadDim: 64, VocabSize: 32000, MaxPositions: 2048, RMSNormEps: 1e-5, RopeTheta: 10000,
		BOSTokenID: 1, EOSTokenIDs: []int{2}}
	rng := rand.New(rand.NewPCG(42, 7))
	p := &model.Pretrained{Config: cfg, Weights: map[string]*model.Tensor{}, Path: "synthetic", Format: "hf", DType: "F32"}
	for name, shape := range cfg.ExpectedShapes() {
		n := 1
		for _, d := range shape {
			n *= d
		}
		t := &model.Tensor{Shape: shape, Data: make([]float32, n)}
		for i := range t.Data {
			if len(shape) == 1 {
				t.Data[i] = 1 // norm weights
			} else {
				t.Data[i] = float32(rng.NormFloat64() * 0.02)
			}
		}
		p.Weights[name] = t
	}
	m := newModel(b, p)
	batch := Batch{B: 4, T: 256}
	for range batch.B * batch.T {
		batch.Inputs = append(batch.Inputs, int32(rng.IntN(cfg.VocabSize)))
		batch.Targets = append(batch.Targets, int32(rng.IntN(cfg.VocabSize)))
		batch.Weights = append(batch.Weights, 1)
	}
	benchTrainStep(b, m, fixedBatch{batch})
}

type fixedBatch struct{ b Batch }

func (f fixedBatch) BatchAt(int) Batch { return f.b }

func benchTrainStep(b *testing.B, m *model.Model, data Batches) {
	opt, err := optimizers.New("adam", optimizers.Config{})
	if err != nil {
		b.Fatal(err)
	}
	set, err := lora.Attach(m.Config, lora.DefaultSpec())
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewStepper(m, set, opt, 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	first := data.BatchAt(0)
	if _, err := s.TrainStep([]Batch{first}, 1e-3); err != nil { // compile outside the timing
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.TrainStep([]Batch{data.BatchAt(i)}, 1e-3); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(first.B*first.T*b.N)/b.Elapsed().Seconds(), "tokens/s")
}
