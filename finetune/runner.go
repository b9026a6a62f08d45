package finetune

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/optimizers"
)

// Config is everything that defines a training run; it is saved as OUT/config.json.
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
}

// Validate rejects contradictory or out-of-range settings (usage errors).
func (c *Config) Validate() error {
	switch {
	case c.Steps < 1:
		return fmt.Errorf("--steps %d must be >= 1", c.Steps)
	case c.BatchSize < 1:
		return fmt.Errorf("--batch-size %d must be >= 1", c.BatchSize)
	case c.SeqLen < 2:
		return fmt.Errorf("--seq-len %d must be >= 2", c.SeqLen)
	case c.LR < 0 || math.IsNaN(c.LR) || math.IsInf(c.LR, 0):
		return fmt.Errorf("--lr %g must be a finite number >= 0", c.LR)
	case c.Warmup < 0 || c.Warmup > c.Steps:
		return fmt.Errorf("--warmup %d must be between 0 and --steps %d", c.Warmup, c.Steps)
	case c.GradAccum < 1:
		return fmt.Errorf("--grad-accum %d must be >= 1", c.GradAccum)
	case c.EvalEvery < 0:
		return fmt.Errorf("--eval-every %d must be >= 0", c.EvalEvery)
	case c.EscapeDelta <= 0 || c.EscapeDelta >= 1:
		return fmt.Errorf("--escape-delta %g must be in (0, 1)", c.EscapeDelta)
	case c.EscapeNorm < 0:
		return fmt.Errorf("--escape-norm %g must be >= 0", c.EscapeNorm)
	case c.ClipNorm < 0:
		return fmt.Errorf("--clip-norm %g must be >= 0", c.ClipNorm)
	case c.EvalSplit < 0 || c.EvalSplit >= 1:
		return fmt.Errorf("--eval-split %g must be in [0, 1)", c.EvalSplit)
	case c.EvalSplit > 0 && c.EvalData != "":
		return fmt.Errorf("give --eval-data or --eval-split, not both")
	case c.Out == "":
		return fmt.Errorf("--out is required")
	case c.SaveEvery < -1:
		return fmt.Errorf("--save-every %d must be >= -1", c.SaveEvery)
	case c.Keep < 0:
		return fmt.Errorf("--keep %d must be >= 0", c.Keep)
	case c.SkipNonfinite < 0:
		return fmt.Errorf("--skip-nonfinite %d must be >= 0", c.SkipNonfinite)
	case c.DivergeFactor < 0 || (c.DivergeFactor > 0 && c.DivergeFactor <= 1):
		return fmt.Errorf("--diverge-factor %g must be 0 (off) or > 1", c.DivergeFactor)
	}
	if err := c.Adapter.Validate(); err != nil {
		return err
	}
	if _, err := optimizers.NewSchedule(c.Schedule, c.LR, c.Warmup, c.Steps, c.MinLRRatio); err != nil {
		return err
	}
	_, err := optimizers.New(c.Optimizer, c.Opt)
	return err
}

// Summary is what a run reports at the end (and `saddle train --json` prints).
type Summary struct {
	EscapeStep       *int         `json:"escape_step"`
	EscapeNormStep   *int         `json:"escape_norm_step"`
	InitialEvalLoss  *float64     `json:"initial_eval_loss"`
	FinalEvalLoss    *float64     `json:"final_eval_loss"`
	InitialTrainLoss float64      `json:"initial_train_loss"`
	FinalTrainLoss   float64      `json:"final_train_loss"`
	Steps            int          `json:"steps"`
	TokensPerSecond  float64      `json:"tokens_per_second"`
	WallSeconds      float64      `json:"wall_seconds"`
	Optimizer        string       `json:"optimizer"`
	Q                float64      `json:"q"`
	LR               float64      `json:"lr"`
	Init             string       `json:"init"`
	InitScale        float64      `json:"init_scale"`
	Depth            int          `json:"depth"`
	Rank             int          `json:"rank"`
	AdapterParams    int          `json:"adapter_params"`
	Final            AdapterStats `json:"final_adapter"`
	Out              string       `json:"out"`
}

// MetricsRow is one line of OUT/metrics.jsonl.
type MetricsRow struct {
	Step            int            `json:"step"`
	Loss            *float64       `json:"loss,omitempty"` // absent at step 0
	EvalLoss        *float64       `json:"eval_loss,omitempty"`
	LR              float64        `json:"lr"`
	GradNorm        float64        `json:"grad_norm"`
	TokensPerSecond float64        `json:"tokens_per_second"`
	All             AdapterStats   `json:"adapters"`
	PerAdapter      []AdapterStats `json:"per_adapter"`
}

// Batches gives the training batch for any step, as a pure function of the step (so runs can resume anywhere).
type Batches interface {
	BatchAt(step int) Batch
}

// Job is a run ready to go: a loaded model, its data and the configuration; Resume continues a checkpoint.
type Job struct {
	Model  *model.Model
	Train  Batches
	Eval   []Batch // nil: escape is judged on the training loss
	Config Config
	Base   checkpoints.BaseIdentity // pins the base model in checkpoints
	Resume *checkpoints.State
}

// ErrInterrupted reports a run stopped by its context (SIGINT/SIGTERM) after saving a checkpoint.
var ErrInterrupted = errors.New("interrupted")

// runnerState is the bookkeeping a checkpoint carries so a resumed run reports exactly what an uninterrupted one
// would.
type runnerState struct {
	Escape  EscapeTracker `json:"escape"`
	Summary Summary       `json:"summary"`
	Tokens  int           `json:"tokens"`
	Wall    float64       `json:"wall_seconds"`
	Skipped int           `json:"skipped_nonfinite"`
}

// Run trains the adapters and writes OUT/config.json, OUT/metrics.jsonl, OUT/summary.json, checkpoints every
// SaveEvery steps and at the end, and the final adapter. progress receives a progress bar (terminal) or plain
// lines; it may be nil. When ctx ends it finishes the current step, saves a checkpoint and returns ErrInterrupted.
func Run(ctx context.Context, job Job, progress io.Writer) (*Summary, error) {
	cfg := job.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opt, err := optimizers.New(cfg.Optimizer, cfg.Opt)
	if err != nil {
		return nil, err
	}
	schedule, err := optimizers.NewSchedule(cfg.Schedule, cfg.LR, cfg.Warmup, cfg.Steps, cfg.MinLRRatio)
	if err != nil {
		return nil, err
	}
	set, err := lora.Attach(job.Model.Config, cfg.Adapter)
	if err != nil {
		return nil, err
	}
	stepper, err := NewStepper(job.Model, set, opt, cfg.ClipNorm, cfg.Seed)
	if err != nil {
		return nil, err
	}
	baseNorms, err := moduleNorms(job.Model, set)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	if err := writeJSONAtomic(filepath.Join(cfg.Out, "config.json"), cfg); err != nil {
		return nil, err
	}
	st := runnerState{
		Escape: EscapeTracker{Delta: cfg.EscapeDelta, NormThreshold: cfg.EscapeNorm},
		Summary: Summary{Optimizer: opt.Name(), Q: opt.Q(), Init: cfg.Adapter.Init, InitScale: cfg.Adapter.Scale,
			Depth: cfg.Adapter.Depth, Rank: cfg.Adapter.Rank, AdapterParams: set.NumParams()},
	}
	metricsPath := filepath.Join(cfg.Out, "metrics.jsonl")
	if job.Resume != nil {
		if err := stepper.Restore(job.Resume); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(job.Resume.Runner, &st); err != nil {
			return nil, fmt.Errorf("checkpoint at step %d: runner state: %w", job.Resume.Step, err)
		}
		// Rows written after the checkpoint by the run that stopped are dropped: they are about to be redone.
		if err := truncateMetrics(metricsPath, job.Resume.Step); err != nil {
			return nil, err
		}
	}
	sum := &st.Summary
	sum.LR, sum.Out = cfg.LR, cfg.Out
	metricsFile, err := os.OpenFile(metricsPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer metricsFile.Close()
	enc := json.NewEncoder(metricsFile)
	escape := &st.Escape
	bar := newProgress(progress, cfg.Steps)

	var evalLoss *float64
	evaluate := func() error {
		if job.Eval == nil {
			return nil
		}
		l, err := stepper.Eval(job.Eval)
		if err != nil {
			return err
		}
		evalLoss = &l
		return nil
	}
	save := func() error {
		if cfg.SaveEvery < 0 {
			return nil
		}
		ck, err := stepper.Snapshot()
		if err != nil {
			return err
		}
		ck.Base = job.Base
		if ck.Config, err = json.Marshal(cfg); err != nil {
			return err
		}
		if ck.Runner, err = json.Marshal(st); err != nil {
			return err
		}
		_, err = checkpoints.Save(cfg.Out, ck, cfg.Keep)
		return err
	}
	var stats []AdapterStats
	if stats, err = stepper.Telemetry(baseNorms); err != nil {
		return nil, err
	}
	if job.Resume == nil {
		if err := evaluate(); err != nil {
			return nil, err
		}
		if evalLoss != nil {
			sum.InitialEvalLoss = ptr(*evalLoss)
			escape.ObserveLoss(0, *evalLoss)
		}
		// Step 0 row: the adapters as initialized.
		if err := enc.Encode(MetricsRow{Step: 0, EvalLoss: evalLoss, All: Aggregate(stats), PerAdapter: stats}); err != nil {
			return nil, err
		}
	}

	start := time.Now().Add(-time.Duration(st.Wall * float64(time.Second)))
	for step := stepper.Step + 1; step <= cfg.Steps; step++ {
		if ctx.Err() != nil {
			st.Wall = time.Since(start).Seconds()
			if err := save(); err != nil {
				return sum, fmt.Errorf("interrupted after step %d, and saving a checkpoint failed: %w", step-1, err)
			}
			bar.done()
			sum.Steps = stepper.Step
			return sum, fmt.Errorf("%w after step %d; a checkpoint was saved: continue with saddle train --resume %s",
				ErrInterrupted, step-1, cfg.Out)
		}
		micro := make([]Batch, cfg.GradAccum)
		for i := range micro {
			micro[i] = job.Train.BatchAt((step-1)*cfg.GradAccum + i)
		}
		lr := schedule(step)
		stepStart := time.Now()
		r, err := stepper.TrainStep(micro, lr)
		if err != nil {
			return sum, err
		}
		if !finite(r.Loss) || !finite(r.GradNorm) {
			stepper.Rollback()
			if st.Skipped < cfg.SkipNonfinite {
				st.Skipped++
				stepper.Step++ // the batch is used up; the adapters and optimizer state stay as they were
				fmt.Fprintf(orDiscard(progress), "step %d: loss %g, gradient norm %g: skipped (%d of %d allowed)\n",
					step, r.Loss, r.GradNorm, st.Skipped, cfg.SkipNonfinite)
				continue
			}
			st.Wall = time.Since(start).Seconds()
			saveErr := save() // the state before this step is the last good one
			msg := fmt.Sprintf("step %d: the loss is %g and the gradient norm %g (not finite); the learning rate %g is "+
				"probably too high (or use --clip-norm, or --skip-nonfinite N to tolerate a few bad batches)", step, r.Loss, r.GradNorm, lr)
			if saveErr != nil {
				return sum, fmt.Errorf("%s; saving the last good checkpoint failed: %w", msg, saveErr)
			}
			return sum, fmt.Errorf("%s; the last good state (step %d) is saved: resume with saddle train --resume %s",
				msg, step-1, cfg.Out)
		}
		if cfg.DivergeFactor > 0 && step > 1 && r.Loss > cfg.DivergeFactor*sum.InitialTrainLoss {
			stepper.Rollback()
			st.Wall = time.Since(start).Seconds()
			msg := fmt.Sprintf("step %d: the loss diverged (%.4g > %g × the first step's %.4g); the learning rate %g is "+
				"probably too high (or raise --diverge-factor, 0 turns this check off)", step, r.Loss, cfg.DivergeFactor, sum.InitialTrainLoss, lr)
			if err := save(); err != nil {
				return sum, fmt.Errorf("%s; saving the last good checkpoint failed: %w", msg, err)
			}
			return sum, fmt.Errorf("%s; the last good state (step %d) is saved: resume with saddle train --resume %s", msg, step-1, cfg.Out)
		}
		for _, b := range micro {
			st.Tokens += b.B * b.T
		}
		if step == 1 {
			sum.InitialTrainLoss = r.Loss
		}
		if job.Eval == nil {
			escape.ObserveLoss(step-1, r.Loss)
		}
		sum.FinalTrainLoss = r.Loss
		row := MetricsRow{Step: step, Loss: ptr(r.Loss), LR: lr, GradNorm: r.GradNorm,
			TokensPerSecond: float64(len(micro)*micro[0].B*micro[0].T) / time.Since(stepStart).Seconds()}
		evalLoss = nil
		if step == cfg.Steps || (cfg.EvalEvery > 0 && step%cfg.EvalEvery == 0) {
			if err := evaluate(); err != nil {
				return sum, err
			}
			if evalLoss != nil {
				escape.ObserveLoss(step, *evalLoss)
				sum.FinalEvalLoss = ptr(*evalLoss)
			}
		}
		row.EvalLoss = evalLoss
		if stats, err = stepper.Telemetry(baseNorms); err != nil {
			return sum, err
		}
		row.All, row.PerAdapter = Aggregate(stats), stats
		escape.ObserveNorm(step, row.All.RelDW)
		if err := enc.Encode(row); err != nil {
			return sum, fmt.Errorf("%s: %w", metricsPath, err)
		}
		bar.update(step, row)
		if cfg.SaveEvery > 0 && step%cfg.SaveEvery == 0 && step < cfg.Steps {
			st.Wall = time.Since(start).Seconds()
			if err := save(); err != nil {
				return sum, fmt.Errorf("saving the checkpoint at step %d: %w", step, err)
			}
		}
	}
	bar.done()
	st.Wall = time.Since(start).Seconds()
	sum.Steps = stepper.Step
	sum.WallSeconds = st.Wall
	sum.TokensPerSecond = float64(st.Tokens) / math.Max(sum.WallSeconds, 1e-9)
	sum.EscapeStep, sum.EscapeNormStep = escape.LossStep, escape.NormStep
	sum.Final = Aggregate(stats)
	if err := save(); err != nil {
		return sum, fmt.Errorf("saving the final checkpoint: %w", err)
	}
	if err := set.SetTensors(stepper.Params); err != nil {
		return sum, err
	}
	if err := lora.Save(cfg.Out, set, cfg.Model); err != nil {
		return sum, err
	}
	if err := writeJSONAtomic(filepath.Join(cfg.Out, "summary.json"), sum); err != nil {
		return sum, err
	}
	return sum, nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// truncateMetrics keeps the rows of metrics.jsonl up to and including step (rewriting the file atomically).
func truncateMetrics(path string, step int) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var kept []byte
	for i, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var row struct {
			Step int `json:"step"`
		}
		if err := json.Unmarshal(line, &row); err != nil {
			// A line cut short by a kill can only be the last one.
			if i == bytes.Count(data, []byte("\n")) {
				break
			}
			return fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		if row.Step <= step {
			kept = append(append(kept, line...), '\n')
		}
	}
	return fileio.WriteFile(path, kept)
}

func ptr[T any](v T) *T { return &v }

// moduleNorms returns ‖W‖_F of each adapted module's base weight.
func moduleNorms(m *model.Model, set *lora.Set) ([]float64, error) {
	index := map[string]int{}
	for i, n := range m.Names {
		index[n] = i
	}
	norms := make([]float64, len(set.Adapters))
	for i, a := range set.Adapters {
		k, ok := index[a.Module+".weight"]
		if !ok {
			return nil, fmt.Errorf("no base weight for adapted module %s", a.Module)
		}
		data, err := tensors.CopyFlatData[float32](m.Params[k])
		if err != nil {
			return nil, err
		}
		var s float64
		for _, v := range data {
			s += float64(v) * float64(v)
		}
		norms[i] = math.Sqrt(s)
	}
	return norms, nil
}

func writeJSONAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fileio.WriteFile(path, append(data, '\n'))
}
