package finetune

import (
	"testing"

	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/optimizers"
)

// BenchmarkTrainStep: stories260K, LoRA r=8 on q,k,v,o, Adam, batch 16 × 256 (the benchmark workload).
func BenchmarkTrainStep(b *testing.B) {
	f := newFixture(b)
	data := f.batcher(b, 16, 256)
	opt, err := optimizers.New("adam", optimizers.Config{})
	if err != nil {
		b.Fatal(err)
	}
	set, err := lora.Attach(f.model.Config, lora.DefaultSpec())
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewStepper(f.model, set, opt, 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.TrainStep([]Batch{data.BatchAt(0)}, 1e-3); err != nil { // compile outside the timing
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.TrainStep([]Batch{data.BatchAt(i)}, 1e-3); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(16*256*b.N)/b.Elapsed().Seconds(), "tokens/s")
}
