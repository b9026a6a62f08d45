package finetune

import (
	"fmt"
	"slices"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/setting"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
)

// The trainers a Stepper can compute gradients with (the "trainer" setting).
const (
	TrainerAuto  = "auto"  // the CPU trainer where it can run, else the graph
	TrainerCPU   = "cpu"   // model.CPUTrainer: plain Go on the CPU, frozen weights read in their storage dtype
	TrainerGraph = "graph" // one GoMLX graph per step (any backend, dropout, gradient checkpointing)
)

// Trainer chooses how the Stepper computes the loss and the adapters' gradients (not what it computes): kind is
// TrainerAuto (or ""), TrainerCPU or TrainerGraph. The optimizer update runs in a graph either way.
func Trainer(kind string) StepperOption { return func(s *Stepper) { s.trainerKind = kind } }

// cpuTrainSupported says why the CPU trainer cannot train this stepper's model and adapters (nil when it can).
func (s *Stepper) cpuTrainSupported() error {
	if err := s.model.CPUTrainSupported(); err != nil {
		return err
	}
	if s.model.Compute != dtypes.Float32 {
		return fmt.Errorf("the CPU trainer computes in float32 (this run's dtype is %s)", s.model.Compute)
	}
	if s.set.Spec.Dropout > 0 {
		return fmt.Errorf("the CPU trainer has no adapter dropout (this run's dropout is %g)", s.set.Spec.Dropout)
	}
	if s.checkpoint {
		return fmt.Errorf("gradient checkpointing is a graph-trainer setting")
	}
	for _, a := range s.set.Adapters {
		if !s.model.Config.CPUTrainable(a.Module) {
			return fmt.Errorf("the CPU trainer trains adapters on the decoder layers' projections, not on %s", a.Module)
		}
	}
	return nil
}

// resolveTrainer turns the trainer setting into TrainerCPU or TrainerGraph.
func (s *Stepper) resolveTrainer() error {
	switch s.trainerKind {
	case "", TrainerAuto:
		s.trainerKind = TrainerGraph
		if s.cpuTrainSupported() == nil {
			s.trainerKind = TrainerCPU
		}
	case TrainerCPU:
		if err := s.cpuTrainSupported(); err != nil {
			return setting.Errorf("trainer", "cpu: %v", err)
		}
	case TrainerGraph:
	default:
		return setting.Errorf("trainer", "%q: use auto, cpu or graph", s.trainerKind)
	}
	return nil
}

// TrainerKind is the trainer this stepper uses: TrainerCPU or TrainerGraph.
func (s *Stepper) TrainerKind() string { return s.trainerKind }

// cpuTrain holds the CPU trainer's state: one model.CPUTrainer per batch shape (training and evaluation batches
// may differ) and the adapters' CPU form, which holds the gradient accumulators.
type cpuTrain struct {
	adapters *lora.CPUAdapters
	rows     int
	trainers map[[2]int]*model.CPUTrainer
}

// cpuTrainer returns the CPU trainer for batches of b rows of t positions.
func (s *Stepper) cpuTrainer(b, t int) (*model.CPUTrainer, error) {
	c := s.cpu
	if c == nil || c.rows < b*t {
		adapters, err := s.set.CPUAdapters(b * t)
		if err != nil {
			return nil, err
		}
		if c != nil { // trainers wired to the smaller adapters' buffers are done with
			for _, tr := range c.trainers {
				tr.Close()
			}
		}
		c = &cpuTrain{adapters: adapters, rows: b * t, trainers: map[[2]int]*model.CPUTrainer{}}
		s.cpu = c
	}
	key := [2]int{b, t}
	if tr, ok := c.trainers[key]; ok {
		return tr, nil
	}
	tr, err := s.model.NewCPUTrainer(c.adapters.Modules(), b, t)
	if err != nil {
		return nil, err
	}
	c.trainers[key] = tr
	return tr, nil
}

// cpuStep is TrainStep on the CPU trainer: the summed gradients of every micro-batch, then the apply graph.
func (s *Stepper) cpuStep(micro []Batch, step, rate *tensors.Tensor) (StepResult, []*tensors.Tensor, error) {
	var sum, weight float64
	for i, b := range micro {
		tr, err := s.cpuTrainer(b.B, b.T)
		if err != nil {
			return StepResult{}, nil, err
		}
		if i == 0 {
			if err := s.cpu.adapters.SetFactors(s.params); err != nil {
				return StepResult{}, nil, err
			}
			s.cpu.adapters.ZeroGrads()
		}
		bs, bw, err := tr.LossAndGrad(b.Inputs, b.Targets, b.Weights)
		if err != nil {
			return StepResult{}, nil, err
		}
		sum += bs
		weight += bw
	}
	acc := s.cpu.adapters.GradTensors()
	args := slices.Concat(s.params, flatten(s.slots), acc, []*tensors.Tensor{tensors.FromScalar(float32(weight)), step, rate})
	out, err := s.apply.Exec(tensorsAsArgs(args)...)
	if err != nil {
		return StepResult{}, nil, err
	}
	return StepResult{Loss: sum / max(weight, 1), GradNorm: scalar(out[0])}, out[1:], nil
}

// cpuEval is Eval's loss sums on the CPU trainer.
func (s *Stepper) cpuEval(b Batch) (sum, weight float64, err error) {
	tr, err := s.cpuTrainer(b.B, b.T)
	if err != nil {
		return 0, 0, err
	}
	if err := s.cpu.adapters.SetFactors(s.params); err != nil {
		return 0, 0, err
	}
	return tr.Loss(b.Inputs, b.Targets, b.Weights)
}
