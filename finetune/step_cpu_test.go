package finetune

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/setting"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/optimizers"
)

// TestCPUTrainerMatchesGraphSteps trains the same adapters (depth 3, every linear module, nonzero factors) with
// the CPU trainer and with the graph, with gradient accumulation over two micro-batches and an evaluation: the
// losses, gradient norms, evaluation losses and the factors after three SGD steps agree to float32 rounding. (SGD:
// Adam divides each gradient entry by its own magnitude, so entries that are rounding noise around zero move by a
// whole step either way.)
func TestCPUTrainerMatchesGraphSteps(t *testing.T) {
	f := newFixture(t)
	batches := f.batcher(t, 2, 32)
	spec := lora.DefaultSpec()
	spec.Targets = []string{"all-linear"}
	spec.Depth, spec.Init, spec.Scale = 3, "small", 0.1
	var start [][]float32
	run := func(kind string) ([]StepResult, []float64, [][]float32) {
		opt, err := optimizers.New("sgd", optimizers.Config{})
		if err != nil {
			t.Fatal(err)
		}
		set, err := lora.Attach(f.model.Config, spec)
		if err != nil {
			t.Fatal(err)
		}
		start = copyParams(t, set.Tensors())
		s, err := NewStepper(f.model, set, opt, 1, 7, Trainer(kind))
		if err != nil {
			t.Fatal(err)
		}
		if s.TrainerKind() != kind {
			t.Fatalf("asked for trainer %s, got %s", kind, s.TrainerKind())
		}
		var results []StepResult
		var evals []float64
		for i := range 3 {
			r, err := s.TrainStep([]Batch{batches.BatchAt(2 * i), batches.BatchAt(2*i + 1)}, 1)
			if err != nil {
				t.Fatal(err)
			}
			results = append(results, r)
			e, err := s.Eval([]Batch{batches.BatchAt(7)})
			if err != nil {
				t.Fatal(err)
			}
			evals = append(evals, e)
		}
		return results, evals, copyParams(t, s.params)
	}
	graph, graphEval, graphParams := run(TrainerGraph)
	cpu, cpuEval, cpuParams := run(TrainerCPU)
	close := func(a, b, tol float64) bool { return math.Abs(a-b) <= tol*math.Max(1, math.Abs(b)) }
	for i := range graph {
		if !close(cpu[i].Loss, graph[i].Loss, 1e-5) || !close(cpu[i].GradNorm, graph[i].GradNorm, 1e-4) ||
			!close(cpuEval[i], graphEval[i], 1e-5) {
			t.Errorf("step %d: CPU loss %.8g grad norm %.8g eval %.8g, graph %.8g %.8g %.8g",
				i+1, cpu[i].Loss, cpu[i].GradNorm, cpuEval[i], graph[i].Loss, graph[i].GradNorm, graphEval[i])
		}
	}
	if graph[2].Loss == graph[0].Loss {
		t.Fatal("the steps changed nothing: the comparison proves nothing")
	}
	var worst, moved float64
	for i := range graphParams {
		for j := range graphParams[i] {
			worst = max(worst, math.Abs(float64(cpuParams[i][j]-graphParams[i][j])))
			moved = max(moved, math.Abs(float64(graphParams[i][j]-start[i][j])))
		}
	}
	if moved == 0 || worst > 1e-4*moved {
		t.Errorf("factors after 3 steps differ by up to %g between the CPU trainer and the graph; they moved by up to %g", worst, moved)
	}
}

// TestTrainerSetting: auto picks the CPU trainer on the Go backend and the graph where the run needs it (dropout,
// gradient checkpointing); cpu then refuses, naming the setting; unknown values are refused.
func TestTrainerSetting(t *testing.T) {
	f := newFixture(t)
	opt, err := optimizers.New("adam", optimizers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	stepper := func(dropout float64, checkpoint bool, kind string) (*Stepper, error) {
		spec := lora.DefaultSpec()
		spec.Dropout = dropout
		set, err := lora.Attach(f.model.Config, spec)
		if err != nil {
			t.Fatal(err)
		}
		return NewStepper(f.model, set, opt, 0, 0, GradCheckpoint(checkpoint), Trainer(kind))
	}
	for _, c := range []struct {
		dropout    float64
		checkpoint bool
		kind, want string
	}{{0, false, TrainerAuto, TrainerCPU}, {0, false, "", TrainerCPU}, {0.1, false, TrainerAuto, TrainerGraph},
		{0, true, TrainerAuto, TrainerGraph}, {0, false, TrainerGraph, TrainerGraph}} {
		s, err := stepper(c.dropout, c.checkpoint, c.kind)
		if err != nil {
			t.Fatal(err)
		}
		if s.TrainerKind() != c.want {
			t.Errorf("dropout %g, checkpoint %v, trainer %q: got %s, want %s", c.dropout, c.checkpoint, c.kind, s.TrainerKind(), c.want)
		}
	}
	// stories260K ties its head, so no adapter can sit where the CPU trainer has none; the check itself:
	cfg := f.model.Config
	for module, want := range map[string]bool{"model.layers.0.self_attn.q_proj": true, "model.layers.4.mlp.down_proj": true,
		"lm_head": false, "model.embed_tokens": false, "model.layers.99.mlp.up_proj": false, "model.layers.01.mlp.up_proj": false} {
		if got := cfg.CPUTrainable(module); got != want {
			t.Errorf("CPUTrainable(%s) = %v, want %v", module, got, want)
		}
	}
	for _, c := range []struct {
		dropout    float64
		checkpoint bool
		kind, want string
	}{{0.1, false, TrainerCPU, "dropout"}, {0, true, TrainerCPU, "checkpoint"}, {0, false, "gpu", "use auto, cpu or graph"}} {
		_, err := stepper(c.dropout, c.checkpoint, c.kind)
		var se *setting.Error
		if !errors.As(err, &se) || se.Name != "trainer" || !strings.Contains(err.Error(), c.want) {
			t.Errorf("dropout %g, checkpoint %v, trainer %q: error %v, want a trainer setting error about %q", c.dropout, c.checkpoint, c.kind, err, c.want)
		}
	}
}
