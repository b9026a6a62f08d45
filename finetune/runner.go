package finetune

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/internal/setting"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
)

// Summary is what a run reports at the end (and `saddle train --json` prints).
type Summary struct {
	EscapeStep     *int `json:"escape_step"`
	EscapeNormStep *int `json:"escape_norm_step"`
	// EscapeAt and EscapeNormAt are the crossings interpolated between observations (fractional steps); the
	// criteria say what was measured, and how often. Steps < Budget when the run stopped at its escape.
	EscapeAt            *float64     `json:"escape_at"`
	EscapeNormAt        *float64     `json:"escape_norm_at"`
	EscapeCriterion     string       `json:"escape_criterion"`
	EscapeNormCriterion string       `json:"escape_norm_criterion"`
	Budget              int          `json:"budget"`
	StoppedAtEscape     bool         `json:"stopped_at_escape,omitempty"`
	InitialEvalLoss     *float64     `json:"initial_eval_loss"`
	FinalEvalLoss       *float64     `json:"final_eval_loss"`
	InitialTrainLoss    float64      `json:"initial_train_loss"`
	FinalTrainLoss      float64      `json:"final_train_loss"`
	Steps               int          `json:"steps"`
	TokensPerSecond     float64      `json:"tokens_per_second"`
	WallSeconds         float64      `json:"wall_seconds"`
	Optimizer           string       `json:"optimizer"`
	Q                   float64      `json:"q"`
	LR                  float64      `json:"lr"`
	Init                string       `json:"init"`
	InitScale           float64      `json:"init_scale"`
	Depth               int          `json:"depth"`
	Rank                int          `json:"rank"`
	AdapterParams       int          `json:"adapter_params"`
	Final               AdapterStats `json:"final_adapter"`
	Out                 string       `json:"out"`
	Times               *Times       `json:"times,omitempty"` // where this invocation's time went
	// Memory is the estimate made before loading (Job.Memory); PeakRSS the process's peak resident memory in bytes
	// at the end (Linux; 0 where unknown).
	Memory  *MemoryEstimate `json:"memory_estimate,omitempty"`
	PeakRSS int64           `json:"peak_rss,omitempty"`
}

// MetricsRow is one line of OUT/metrics.jsonl.
type MetricsRow struct {
	Step            int            `json:"step"`
	Loss            *float64       `json:"loss,omitempty"` // absent at step 0
	EvalLoss        *float64       `json:"eval_loss,omitempty"`
	ProbeLoss       *float64       `json:"probe_loss,omitempty"` // with escape_probe: the loss escape's reference
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

// Job is a run ready to go: a loaded model, its data and the checked plan; Resume continues a checkpoint.
type Job struct {
	Model  *model.Model
	Train  Batches
	Eval   []Batch // nil: escape is judged on the training loss
	Plan   *Plan
	Base   checkpoints.BaseIdentity // pins the base model in checkpoints
	Resume *checkpoints.State
	// Started is when loading began, and Prep the Load and Hash times the caller measured, for Summary.Times
	// (zero: the run's own start).
	Started time.Time
	Prep    Times
	Memory  *MemoryEstimate // the estimate made before loading, reported in the summary
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
	r, err := startRun(job, progress)
	if err != nil {
		return nil, err
	}
	defer r.metrics.close()
	// A resumed run may have escaped already: the check comes before each step.
	for step := r.stepper.Step() + 1; step <= r.cfg.Steps && !r.escapeStop(); step++ {
		if ctx.Err() != nil {
			return &r.st.Summary, r.interrupt(step - 1)
		}
		if err := r.trainStep(step); err != nil {
			return &r.st.Summary, err
		}
	}
	r.st.Summary.StoppedAtEscape = r.escapeStop() && r.stepper.Step() < r.cfg.Steps
	return r.finish()
}

// run is one training run in progress.
type run struct {
	job       Job
	cfg       Config
	stepper   *Stepper
	baseNorms []float64      // ‖W‖_F of each adapted module
	st        runnerState    // the bookkeeping a checkpoint carries
	stats     []AdapterStats // telemetry after the latest step
	metrics   *metricsLog
	bar       *progress
	log       io.Writer // notices about skipped steps
	start     time.Time // wall-clock origin, moved back by the time spent before a resume
	watch     stopwatch // this invocation's times
}

// startRun builds the run's graphs and output folder, restores a checkpoint, and on a fresh run records step 0
// (the adapters as initialized).
func startRun(job Job, progress io.Writer) (*run, error) {
	began := time.Now()
	plan := job.Plan
	cfg := plan.Config
	if err := checkProbe(cfg, job.Eval); err != nil {
		return nil, err
	}
	set, err := plan.Adapters.Attach()
	if err != nil {
		return nil, err
	}
	trainer := cfg.Trainer
	if trainer == "" && job.Resume != nil {
		trainer = TrainerGraph // runs from before the setting existed trained on the graph
	}
	stepper, err := NewStepper(job.Model, set, plan.Opt, cfg.ClipNorm, cfg.Seed, GradCheckpoint(cfg.GradCheckpoint), Trainer(trainer))
	if err != nil {
		return nil, err
	}
	cfg.Trainer = stepper.TrainerKind()
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
	r := &run{job: job, cfg: cfg, stepper: stepper, baseNorms: baseNorms, log: orDiscard(progress), watch: stopwatch{began: began},
		st: runnerState{
			Escape: EscapeTracker{Delta: cfg.EscapeDelta, NormThreshold: cfg.EscapeNorm},
			Summary: Summary{Optimizer: plan.Opt.Name(), Q: plan.Opt.Q(), Init: cfg.Adapter.Init, InitScale: cfg.Adapter.Scale,
				Depth: cfg.Adapter.Depth, Rank: cfg.Adapter.Rank, AdapterParams: set.NumParams(), Budget: cfg.Steps,
				EscapeCriterion: escapeCriterion(cfg, job.Eval != nil), EscapeNormCriterion: escapeNormCriterion(cfg)},
		}}
	keepRows := -1
	if job.Resume != nil {
		if err := stepper.Restore(job.Resume); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(job.Resume.Runner, &r.st); err != nil {
			return nil, fmt.Errorf("checkpoint at step %d: runner state: %w", job.Resume.Step, err)
		}
		keepRows = job.Resume.Step
	}
	r.st.Summary.LR, r.st.Summary.Out = cfg.LR, cfg.Out
	if r.metrics, err = openMetricsLog(filepath.Join(cfg.Out, "metrics.jsonl"), keepRows); err != nil {
		return nil, err
	}
	r.bar = newProgress(progress, cfg.Steps)
	if r.stats, err = stepper.Telemetry(baseNorms); err != nil {
		r.metrics.close()
		return nil, err
	}
	r.watch.setup = seconds(began)
	if job.Resume == nil {
		if err := r.recordStart(); err != nil {
			r.metrics.close()
			return nil, err
		}
	}
	r.start = time.Now().Add(-time.Duration(r.st.Wall * float64(time.Second)))
	return r, nil
}

// recordStart evaluates the initial adapters and writes the step-0 metrics row.
func (r *run) recordStart() error {
	evalLoss, err := r.evaluate()
	if err != nil {
		return err
	}
	probe, err := r.probe()
	if err != nil {
		return err
	}
	if evalLoss != nil {
		r.st.Summary.InitialEvalLoss = ptr(*evalLoss)
		if probe == nil {
			r.st.Escape.ObserveLoss(0, *evalLoss)
		}
	}
	if probe != nil {
		r.st.Escape.ObserveLoss(0, *probe)
	}
	all := Aggregate(r.stats)
	r.st.Escape.StartNorm(all.RelDW)
	return r.metrics.write(MetricsRow{Step: 0, EvalLoss: evalLoss, ProbeLoss: probe, All: all, PerAdapter: r.stats})
}

// trainStep runs optimizer step `step` and records it, unless the guard skips it or stops the run.
func (r *run) trainStep(step int) error {
	stepBegan, evalBefore, saveBefore := time.Now(), r.watch.eval, r.watch.save
	defer func() { r.watch.step(seconds(stepBegan) - (r.watch.eval - evalBefore) - (r.watch.save - saveBefore)) }()
	micro := make([]Batch, r.cfg.GradAccum)
	for i := range micro {
		micro[i] = r.job.Train.BatchAt((step-1)*r.cfg.GradAccum + i)
	}
	lr := r.job.Plan.Schedule(step)
	began := time.Now()
	res, err := r.stepper.TrainStep(micro, lr)
	if err != nil {
		return err
	}
	if skip, err := r.guard(step, res, lr); skip || err != nil {
		return err
	}
	// The loss and gradient were finite, but the update can still overflow the adapters (a huge learning rate):
	// stop here, with the state before the step saved, rather than at metrics.jsonl's "unsupported value".
	stats, err := r.stepper.Telemetry(r.baseNorms)
	if err != nil {
		return err
	}
	if bad := nonfiniteStat(stats); bad != "" {
		return r.stop(step, fmt.Sprintf("step %d: the update left the adapters non-finite (%s); the learning rate %g is "+
			"probably too high (lower --lr, or use --clip-norm)", step, bad, lr))
	}
	tokens := 0
	for _, b := range micro {
		tokens += b.B * b.T
	}
	r.st.Tokens += tokens
	sum, escape := &r.st.Summary, &r.st.Escape
	if step == 1 {
		sum.InitialTrainLoss = res.Loss
	}
	if r.job.Eval == nil {
		escape.ObserveLoss(step-1, res.Loss)
	}
	sum.FinalTrainLoss = res.Loss
	row := MetricsRow{Step: step, Loss: ptr(res.Loss), LR: lr, GradNorm: res.GradNorm,
		TokensPerSecond: float64(tokens) / time.Since(began).Seconds()}
	if row.ProbeLoss, err = r.probe(); err != nil {
		return err
	}
	if row.ProbeLoss != nil {
		escape.ObserveLoss(step, *row.ProbeLoss)
	}
	r.stats = stats
	row.All, row.PerAdapter = Aggregate(r.stats), r.stats
	escape.ObserveNorm(step, row.All.RelDW)
	// A run that stops at its escape is evaluated at its last step, as every run is.
	if r.evalDue(step) || r.escapeStop() {
		if row.EvalLoss, err = r.evaluate(); err != nil {
			return err
		}
		if row.EvalLoss != nil {
			if row.ProbeLoss == nil {
				escape.ObserveLoss(step, *row.EvalLoss)
			}
			sum.FinalEvalLoss = ptr(*row.EvalLoss)
		}
	}
	if err := r.metrics.write(row); err != nil {
		return err
	}
	r.bar.update(step, row)
	if r.checkpointDue(step) {
		r.st.Wall = r.elapsed()
		if err := r.save(); err != nil {
			return fmt.Errorf("saving the checkpoint at step %d: %w", step, err)
		}
	}
	return nil
}

// guard looks at a step's result before it counts. A non-finite loss or gradient drops the update: the step is
// skipped while --skip-nonfinite allows, else the run stops. A loss above DivergeFactor × the first step's stops
// the run. A stopped run keeps the state before the step, saved as a checkpoint.
func (r *run) guard(step int, res StepResult, lr float64) (skip bool, err error) {
	cfg := r.cfg
	if !finite(res.Loss) || !finite(res.GradNorm) {
		if r.st.Skipped < cfg.SkipNonfinite {
			r.stepper.DiscardUpdate()
			r.st.Skipped++
			fmt.Fprintf(r.log, "step %d: loss %g, gradient norm %g: skipped (%d of %d allowed)\n",
				step, res.Loss, res.GradNorm, r.st.Skipped, cfg.SkipNonfinite)
			return true, nil
		}
		return false, r.stop(step, fmt.Sprintf("step %d: the loss is %g and the gradient norm %g (not finite); the learning rate %g is "+
			"probably too high (or use --clip-norm, or --skip-nonfinite N to tolerate a few bad batches)", step, res.Loss, res.GradNorm, lr))
	}
	if first := r.st.Summary.InitialTrainLoss; cfg.DivergeFactor > 0 && step > 1 && res.Loss > cfg.DivergeFactor*first {
		return false, r.stop(step, fmt.Sprintf("step %d: the loss diverged (%.4g > %g × the first step's %.4g); the learning rate %g is "+
			"probably too high (or raise --diverge-factor, 0 turns this check off)", step, res.Loss, cfg.DivergeFactor, first, lr))
	}
	return false, nil
}

// stop ends the run at a bad step: the step is undone and the state before it saved.
func (r *run) stop(step int, msg string) error {
	r.stepper.Rollback()
	r.st.Wall = r.elapsed()
	if err := r.save(); err != nil {
		return fmt.Errorf("%s; saving the last good checkpoint failed: %w", msg, err)
	}
	return fmt.Errorf("%s; the last good state (step %d) is saved: resume with saddle train --resume %s", msg, step-1, r.cfg.Out)
}

// interrupt saves a checkpoint after the last finished step and reports ErrInterrupted.
func (r *run) interrupt(last int) error {
	r.st.Wall = r.elapsed()
	if err := r.save(); err != nil {
		return fmt.Errorf("interrupted after step %d, and saving a checkpoint failed: %w", last, err)
	}
	r.bar.done()
	r.st.Summary.Steps = r.stepper.Step()
	return fmt.Errorf("%w after step %d; a checkpoint of it was saved in %s", ErrInterrupted, last, r.cfg.Out)
}

// finish completes the summary, saves the final checkpoint and writes the adapter and summary.json.
func (r *run) finish() (*Summary, error) {
	r.bar.done()
	r.st.Wall = r.elapsed()
	sum := &r.st.Summary
	sum.Steps = r.stepper.Step()
	sum.WallSeconds = r.st.Wall
	sum.TokensPerSecond = float64(r.st.Tokens) / math.Max(sum.WallSeconds, 1e-9)
	sum.EscapeStep, sum.EscapeNormStep = r.st.Escape.LossStep, r.st.Escape.NormStep
	sum.EscapeAt, sum.EscapeNormAt = r.st.Escape.LossAt, r.st.Escape.NormAt
	sum.Final = Aggregate(r.stats)
	if err := r.save(); err != nil {
		return sum, fmt.Errorf("saving the final checkpoint: %w", err)
	}
	saveBegan := time.Now()
	set, err := r.stepper.Adapters()
	if err != nil {
		return sum, err
	}
	if err := lora.Save(r.cfg.Out, set, r.cfg.Model); err != nil {
		return sum, err
	}
	r.watch.save += seconds(saveBegan)
	sum.Times = ptr(r.watch.times(r.job.Prep, r.job.Started))
	sum.Memory, sum.PeakRSS = r.job.Memory, PeakRSS()
	if err := writeJSONAtomic(filepath.Join(r.cfg.Out, "summary.json"), sum); err != nil {
		return sum, err
	}
	return sum, nil
}

func (r *run) elapsed() float64 { return time.Since(r.start).Seconds() }

// evalDue: the eval loss is measured every EvalEvery steps and after the last one.
func (r *run) evalDue(step int) bool {
	return step == r.cfg.Steps || (r.cfg.EvalEvery > 0 && step%r.cfg.EvalEvery == 0)
}

// EvalSet is what every evaluation of a run measures: the first cfg.EvalBatches batches of eval (all of them when
// it is 0), the same ones each time, so that eval losses compare across steps.
func EvalSet(cfg Config, eval []Batch) []Batch {
	if n := cfg.EvalBatches; n > 0 && n < len(eval) {
		return eval[:n]
	}
	return eval
}

// escapeStop: with StopAtEscape, the run ends once every escape criterion in use has fired.
func (r *run) escapeStop() bool { return r.cfg.StopAtEscape && r.st.Escape.Escaped() }

// probe returns the loss on the first EscapeProbe eval batches (the same ones every step), or nil without a probe.
func (r *run) probe() (*float64, error) {
	if r.cfg.EscapeProbe <= 0 {
		return nil, nil
	}
	began := time.Now()
	l, err := r.stepper.Eval(r.job.Eval[:r.cfg.EscapeProbe])
	r.watch.evaluation(seconds(began))
	if err != nil {
		return nil, err
	}
	return &l, nil
}

// checkProbe refuses a probe larger than the eval set (known only once the data is read).
func checkProbe(cfg Config, eval []Batch) error {
	if n := cfg.EscapeProbe; n > len(eval) {
		return setting.Errorf("escape_probe", "%d: the probe scores the first %d eval batches after every step, but there are %d eval batches; give eval data or a smaller probe", n, n, len(eval))
	}
	return nil
}

// escapeCriterion says what the loss escape is judged on, and how often.
func escapeCriterion(c Config, eval bool) string {
	level := fmt.Sprintf("≤ (1−%g)·initial", c.EscapeDelta)
	switch {
	case c.EscapeProbe > 0:
		return fmt.Sprintf("probe loss (first %d eval batches) after every step %s, crossing interpolated", c.EscapeProbe, level)
	case !eval:
		return fmt.Sprintf("training loss of each step's batch %s, crossing interpolated", level)
	case c.EvalEvery > 0:
		return fmt.Sprintf("eval loss every %d steps %s, crossing interpolated", c.EvalEvery, level)
	}
	return fmt.Sprintf("eval loss at the start and end %s", level)
}

// escapeNormCriterion says what the norm escape is judged on.
func escapeNormCriterion(c Config) string {
	if c.EscapeNorm <= 0 {
		return "off (escape_norm 0)"
	}
	return fmt.Sprintf("mean ‖ΔW‖/‖W‖ after every step > %g, crossing interpolated", c.EscapeNorm)
}

// evaluate returns the eval loss, or nil without eval data.
func (r *run) evaluate() (*float64, error) {
	if r.job.Eval == nil {
		return nil, nil
	}
	began := time.Now()
	l, err := r.stepper.Eval(EvalSet(r.cfg, r.job.Eval))
	r.watch.evaluation(seconds(began))
	if err != nil {
		return nil, err
	}
	return &l, nil
}

// checkpointDue: a checkpoint every SaveEvery steps; the final one is written by finish.
func (r *run) checkpointDue(step int) bool {
	return r.cfg.SaveEvery > 0 && step%r.cfg.SaveEvery == 0 && step < r.cfg.Steps
}

// save writes a checkpoint of the current state (unless SaveEvery is -1).
func (r *run) save() error {
	if r.cfg.SaveEvery < 0 {
		return nil
	}
	began := time.Now()
	defer func() { r.watch.save += seconds(began) }()
	ck, err := r.stepper.Snapshot()
	if err != nil {
		return err
	}
	ck.Base = r.job.Base
	if ck.Config, err = json.Marshal(r.cfg); err != nil {
		return err
	}
	if ck.Runner, err = json.Marshal(r.st); err != nil {
		return err
	}
	_, err = checkpoints.Save(r.cfg.Out, ck, r.cfg.Keep)
	return err
}

// nonfiniteStat names the first adapter statistic that is NaN or infinite ("" if none).
func nonfiniteStat(stats []AdapterStats) string {
	for _, s := range stats {
		for _, f := range []struct {
			name string
			v    float64
		}{{"‖A‖", s.NormA}, {"‖B‖", s.NormB}, {"‖ΔW‖", s.NormDW}, {"‖ΔW‖/‖W‖", s.RelDW}, {"balance", s.BalanceQ}, {"balance", s.BalanceG}} {
			if !finite(f.v) {
				return fmt.Sprintf("%s %s = %g", s.Module, f.name, f.v)
			}
		}
	}
	return ""
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func ptr[T any](v T) *T { return &v }

// moduleNorms returns ‖W‖_F of each adapted module's base weight.
func moduleNorms(m *model.Model, set *lora.Set) ([]float64, error) {
	norms := make([]float64, len(set.Adapters))
	for i, a := range set.Adapters {
		n, err := m.FrobeniusNorm(a.Module + ".weight")
		if err != nil {
			return nil, err
		}
		norms[i] = n
	}
	return norms, nil
}
