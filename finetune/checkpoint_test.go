package finetune

import (
	"math"
	"testing"

	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/optimizers"
)

// TestGradCheckpointMatchesPlainSteps trains the same adapters (depth 3, dropout on, every linear module) with and
// without gradient checkpointing: the losses, gradient norms and the factors after three Adam steps must agree to
// float32 rounding, since the recomputation repeats the forward pass exactly (the same dropout masks included).
func TestGradCheckpointMatchesPlainSteps(t *testing.T) {
	f := newFixture(t)
	batches := f.batcher(t, 2, 32)
	spec := lora.DefaultSpec()
	spec.Targets = []string{"all-linear"}
	spec.Depth, spec.Dropout, spec.Init, spec.Scale = 3, 0.2, "small", 0.1
	run := func(checkpoint bool) ([]StepResult, [][]float32) {
		opt, err := optimizers.New("adam", optimizers.Config{})
		if err != nil {
			t.Fatal(err)
		}
		set, err := lora.Attach(f.model.Config, spec)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewStepper(f.model, set, opt, 1, 7, GradCheckpoint(checkpoint))
		if err != nil {
			t.Fatal(err)
		}
		var results []StepResult
		for i := range 3 {
			r, err := s.TrainStep([]Batch{batches.BatchAt(i)}, 1e-2)
			if err != nil {
				t.Fatal(err)
			}
			results = append(results, r)
		}
		return results, copyParams(t, s.params)
	}
	plain, plainParams := run(false)
	ckpt, ckptParams := run(true)
	close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-5*math.Max(1, math.Abs(b)) }
	for i := range plain {
		if !close(ckpt[i].Loss, plain[i].Loss) || !close(ckpt[i].GradNorm, plain[i].GradNorm) {
			t.Errorf("step %d: checkpointed loss %.8g grad norm %.8g, plain %.8g %.8g",
				i+1, ckpt[i].Loss, ckpt[i].GradNorm, plain[i].Loss, plain[i].GradNorm)
		}
	}
	if plain[2].Loss == plain[0].Loss {
		t.Fatal("the steps changed nothing: the comparison proves nothing")
	}
	for i := range plainParams {
		for j := range plainParams[i] {
			if !close(float64(ckptParams[i][j]), float64(plainParams[i][j])) {
				t.Fatalf("factor %d[%d]: checkpointed %g, plain %g", i, j, ckptParams[i][j], plainParams[i][j])
			}
		}
	}
}
