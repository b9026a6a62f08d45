package finetune

import (
	"math"
	"slices"

	"github.com/saddle-ml/saddle/internal/setting"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/optimizers"
)

// Config is everything that defines a training run; it is saved as OUT/config.json. Its JSON keys are the names
// of the settings (config files accept them too, and errors name them); NewPlan checks it.
type Config struct {
	Model      string            `json:"model"`
	Data       string            `json:"data"`
	EvalData   string            `json:"eval_data,omitempty"`
	EvalSplit  float64           `json:"eval_split,omitempty"`
	Optimizer  string            `json:"optimizer"`
	Opt        optimizers.Config `json:"optimizer_config"`
	LR         float64           `json:"lr"`
	Schedule   string            `json:"schedule"`
	Warmup     int               `json:"warmup"`
	MinLRRatio float64           `json:"min_lr_ratio"`
	ClipNorm   float64           `json:"clip_norm"`
	GradAccum  int               `json:"grad_accum"`
	Adapter    lora.Spec         `json:"adapter"`
	Steps      int               `json:"steps"`
	BatchSize  int               `json:"batch_size"`
	SeqLen     int               `json:"seq_len"`
	Pack       bool              `json:"pack"`
	Truncate   bool              `json:"truncate"`
	NoEOS      bool              `json:"no_eos"` // do not append EOS to text and prompt/completion examples
	Seed       uint64            `json:"seed"`
	EvalEvery  int               `json:"eval_every"`
	// EscapeDelta δ: escape when the loss reaches (1−δ)·initial. EscapeNorm: escape when mean ‖ΔW‖/‖W‖ exceeds it.
	EscapeDelta float64 `json:"escape_delta"`
	EscapeNorm  float64 `json:"escape_norm"`
	Out         string  `json:"out"`
	Backend     string  `json:"backend"`
	// SaveEvery N writes a checkpoint every N steps (0: only at the end, -1: never); Keep keeps the newest K (0: all).
	SaveEvery int `json:"save_every"`
	Keep      int `json:"keep"`
	// SkipNonfinite tolerates this many steps with a non-finite loss or gradient (their update is dropped).
	SkipNonfinite int `json:"skip_nonfinite"`
	// DivergeFactor stops the run when the training loss exceeds this multiple of the first step's loss (0: off).
	// Normalized models rarely overflow: a too-high learning rate shows as an exploding but finite loss.
	DivergeFactor float64 `json:"diverge_factor"`
	// DType is the compute type of the frozen base's matmuls: "f32", "bf16" or "f16" ("auto" picks per backend;
	// a run's config.json records what was used, and "" in older runs means f32). Adapters, their gradients and
	// the optimizer state are always f32; the weights stay in memory in their file's dtype.
	DType string `json:"dtype,omitempty"`
	// GradCheckpoint recomputes each decoder block's activations during the backward pass instead of keeping them.
	GradCheckpoint bool `json:"grad_checkpoint,omitempty"`
	// Trainer is how the gradients are computed: "cpu" (plain Go on the CPU, the Go backend only), "graph" (a GoMLX
	// graph, any backend) or "auto" (cpu where it can run: Go backend, f32, no dropout, no grad_checkpoint). A run's
	// config.json records the one used ("" in older runs means graph).
	Trainer string `json:"trainer,omitempty"`
	// EvalBatches bounds each evaluation to the first N eval batches (0: all of them).
	EvalBatches int `json:"eval_batches,omitempty"`
	// EscapeProbe N > 0 scores the first N eval batches after every step and judges the loss escape on them (to the
	// step, interpolated) instead of on the eval loss every EvalEvery steps. StopAtEscape ends the run at the step at
	// which every escape criterion in use has fired: Steps is then a budget.
	EscapeProbe  int  `json:"escape_probe,omitempty"`
	StopAtEscape bool `json:"stop_at_escape,omitempty"`
}

// Plan is a run's settings checked once, with what they build: the optimizer, the learning-rate schedule and the
// adapter layout on the model. Run and Sweep take plans and check nothing again.
type Plan struct {
	Config   Config
	Opt      optimizers.Optimizer
	Schedule optimizers.Schedule
	Adapters *lora.Layout
}

// NewPlan checks c, and that it fits the model it will train (m). A setting out of range is a *setting.Error
// naming it; the optimizer and the adapter spec report their own settings by name.
func NewPlan(c Config, m model.Config) (*Plan, error) {
	if err := c.checkRun(m); err != nil {
		return nil, err
	}
	schedule, err := optimizers.NewSchedule(c.Schedule, c.LR, c.Warmup, c.Steps, c.MinLRRatio)
	if err != nil {
		return nil, err
	}
	opt, err := optimizers.New(c.Optimizer, c.Opt)
	if err != nil {
		return nil, err
	}
	layout, err := lora.NewLayout(m, c.Adapter)
	if err != nil {
		return nil, err
	}
	return &Plan{Config: c, Opt: opt, Schedule: schedule, Adapters: layout}, nil
}

// checkRun checks the settings that belong to the run itself (the schedule, the optimizer and the adapters check
// theirs).
func (c *Config) checkRun(m model.Config) error {
	if err := c.checkNumbers(); err != nil {
		return err
	}
	switch {
	case c.Steps < 1:
		return setting.Errorf("steps", "%d must be >= 1", c.Steps)
	case c.BatchSize < 1:
		return setting.Errorf("batch_size", "%d must be >= 1", c.BatchSize)
	case c.SeqLen < 2:
		return setting.Errorf("seq_len", "%d must be >= 2", c.SeqLen)
	case c.SeqLen > m.MaxPositions:
		return setting.Errorf("seq_len", "%d exceeds the model's context of %d positions", c.SeqLen, m.MaxPositions)
	case c.GradAccum < 1:
		return setting.Errorf("grad_accum", "%d must be >= 1", c.GradAccum)
	case c.EvalEvery < 0:
		return setting.Errorf("eval_every", "%d must be >= 0", c.EvalEvery)
	case c.EscapeDelta <= 0 || c.EscapeDelta >= 1:
		return setting.Errorf("escape_delta", "%g must be in (0, 1)", c.EscapeDelta)
	case c.EscapeNorm < 0:
		return setting.Errorf("escape_norm", "%g must be >= 0", c.EscapeNorm)
	case c.ClipNorm < 0:
		return setting.Errorf("clip_norm", "%g must be >= 0", c.ClipNorm)
	case c.EvalSplit < 0 || c.EvalSplit >= 1:
		return setting.Errorf("eval_split", "%g must be in [0, 1)", c.EvalSplit)
	case c.EvalSplit > 0 && c.EvalData != "":
		return setting.Errorf("eval_split", "%g: hold out a split of the data or give separate eval data, not both", c.EvalSplit)
	case c.Data == "-":
		return setting.Errorf("data", "-: saddle does not read training data from standard input (a run names its data in config.json, and --resume reads it again); write it to a file and give its path")
	case c.EvalData == "-":
		return setting.Errorf("eval_data", "-: saddle does not read evaluation data from standard input; write it to a file and give its path")
	case c.Out == "":
		return setting.Errorf("out", "is required")
	case c.SaveEvery < -1:
		return setting.Errorf("save_every", "%d must be >= -1", c.SaveEvery)
	case c.Keep < 0:
		return setting.Errorf("keep", "%d must be >= 0", c.Keep)
	case c.SkipNonfinite < 0:
		return setting.Errorf("skip_nonfinite", "%d must be >= 0", c.SkipNonfinite)
	case c.EscapeProbe < 0:
		return setting.Errorf("escape_probe", "%d must be >= 0 (0: judge the loss escape on the eval loss)", c.EscapeProbe)
	case c.Trainer != "" && !slices.Contains([]string{TrainerAuto, TrainerCPU, TrainerGraph}, c.Trainer):
		return setting.Errorf("trainer", "%q: use auto, cpu or graph", c.Trainer)
	case c.EvalBatches < 0:
		return setting.Errorf("eval_batches", "%d must be >= 0 (0: every eval batch)", c.EvalBatches)
	case c.DivergeFactor < 0 || (c.DivergeFactor > 0 && c.DivergeFactor <= 1):
		return setting.Errorf("diverge_factor", "%g must be 0 (off) or > 1", c.DivergeFactor)
	}
	return nil
}

// minFloat32 is the smallest normal float32: the graph computes in float32, where a smaller learning rate or factor
// scale is subnormal or 0.
const minFloat32 = 0x1p-126

// zeroAtZeroScale are the inits whose every factor is λ times a draw or an identity: at λ = 0 every factor is zero,
// so every gradient (each a product of the other factors) is zero and training cannot move them.
var zeroAtZeroScale = []string{"saddle", "small"}

// checkNumbers refuses non-finite float settings (NaN and ±Inf parse as numbers but cannot mean anything here) and
// values that leave nothing to train: a learning rate that is 0 (or that underflows to 0, as 1e-400 does when it
// is parsed, or in float32), and an init whose factors start all zero.
func (c *Config) checkNumbers() error {
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"lr", c.LR}, {"min_lr_ratio", c.MinLRRatio}, {"clip_norm", c.ClipNorm}, {"eval_split", c.EvalSplit},
		{"escape_delta", c.EscapeDelta}, {"escape_norm", c.EscapeNorm}, {"diverge_factor", c.DivergeFactor},
		{"alpha", c.Adapter.Alpha}, {"dropout", c.Adapter.Dropout}, {"init_scale", c.Adapter.Scale},
	} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return setting.Errorf(f.name, "%g is not a finite number: give a finite value", f.v)
		}
	}
	switch {
	case c.LR == 0:
		return setting.Errorf("lr", "0: a learning rate of 0 never moves the adapters (a value such as 1e-400 rounds to 0); give a positive learning rate such as 1e-3")
	case c.LR > 0 && c.LR < minFloat32:
		return setting.Errorf("lr", "%g is below float32's smallest normal number (%g), in which training computes: give a learning rate such as 1e-3", c.LR, minFloat32)
	case c.LR > math.MaxFloat32:
		return setting.Errorf("lr", "%g is beyond float32's range, in which training computes", c.LR)
	case c.ClipNorm > 0 && c.ClipNorm < minFloat32:
		return setting.Errorf("clip_norm", "%g is below float32's smallest normal number (%g): every gradient would be clipped to nothing; give 0 (off) or a norm such as 1", c.ClipNorm, minFloat32)
	case slices.Contains(zeroAtZeroScale, c.Adapter.Init) && c.Adapter.Scale < minFloat32 && c.Adapter.Scale >= 0:
		return setting.Errorf("init_scale", "%g with the %s init starts every adapter factor at zero (in float32), where every gradient is zero: "+
			"the adapters could never move; give a positive scale such as 0.01, or an init that does not scale by it (lora, gaussian)", c.Adapter.Scale, c.Adapter.Init)
	}
	return nil
}
