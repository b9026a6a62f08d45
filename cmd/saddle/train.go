package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gomlx/compute"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/finetune"
	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/internal/setting"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/optimizers"
)

// addTrainFlags declares every flag of a training run; `saddle escape` shares them.
func addTrainFlags(cmd *cobra.Command) {
	addModelFlag(cmd)
	addJSONFlag(cmd)
	f := cmd.Flags()
	f.String("config", "", "YAML or JSON file with flag values (keys are flag names); flags given here override it")
	f.String("data", demoData, "training data: a JSONL file of {\"text\"}, {\"prompt\",\"completion\"} or {\"messages\"}, or \"demo\"")
	f.String("eval-data", "", "evaluation data (JSONL); default: the demo eval set with --data demo")
	f.Float64("eval-split", 0, "hold out this fraction of --data for evaluation instead of --eval-data")
	f.String("optimizer", "adam", "optimizer: "+strings.Join(optimizers.Names(), ", "))
	f.Float64("lr", 1e-3, "peak learning rate")
	f.Float64("momentum", 0, "sgd momentum / signum β (0: the optimizer's default)")
	f.Bool("nesterov", false, "Nesterov momentum (sgd)")
	f.Float64("beta1", 0, "Adam/Lion β1 (0: default)")
	f.Float64("beta2", 0, "Adam/Lion β2 (0: default)")
	f.Float64("eps", 0, "Adam ε (0: default 1e-8)")
	f.Float64("q", 0, "steepest descent exponent q in [1, 2] (optimizer steepest)")
	f.Float64("weight-decay", 0, "weight decay (adamw and adam-l2 default to 0.01)")
	f.String("wd-mode", "", "weight decay mode: coupled (L2 in the gradient) or decoupled (AdamW); default per optimizer")
	f.String("schedule", "constant", "learning-rate schedule: constant, linear or cosine")
	f.Int("warmup", 0, "linear warmup steps")
	f.Float64("min-lr-ratio", 0, "final learning rate of linear/cosine decay, as a fraction of --lr")
	f.Float64("clip-norm", 0, "clip gradients to this global norm (0: off)")
	f.Int("grad-accum", 1, "micro-batches summed into one optimizer step")
	f.String("targets", "q_proj,k_proj,v_proj,o_proj", "modules to adapt: names (q_proj, ...), globs over full paths, or all-linear")
	f.String("layers", "", "comma-separated layer indices to adapt (default: all)")
	f.Int("rank", 8, "adapter rank r")
	f.Float64("alpha", 16, "adapter α (scale α/r, or α/√r with --rslora)")
	f.Bool("rslora", false, "rank-stabilized scale α/√r")
	f.Int("depth", 2, "adapter depth L ≥ 2: ΔW = B·M_{L−2}⋯M_1·A (2 is LoRA)")
	f.Float64("dropout", 0, "dropout on the adapter input")
	f.String("init", "lora", "adapter init: "+strings.Join(lora.InitNames(), ", "))
	f.Float64("init-scale", 0.01, "λ, the factor scale of the saddle, small and orthogonal inits")
	f.Int("steps", 100, "optimizer steps")
	f.Int("batch-size", 8, "sequences per micro-batch")
	f.Int("seq-len", 128, "tokens per sequence")
	f.Bool("pack", true, "pack examples into full sequences (false: one padded example per row)")
	f.Bool("truncate", true, "with --pack=false, cut examples longer than --seq-len (false: refuse them)")
	f.Bool("no-eos", false, "do not append the tokenizer's EOS to text and prompt/completion examples (for models that never saw it)")
	f.Uint64("seed", 0, "seed for adapter init, data order and dropout")
	f.Int("eval-every", 10, "evaluate every N steps (0: only at the start and end)")
	f.Float64("escape-delta", 0.05, "escape step: first step with loss ≤ (1−δ)·initial loss")
	f.Float64("escape-norm", 0.01, "escape norm step: first step with mean ‖ΔW‖/‖W‖ above this")
	f.Int("escape-probe", 0, "judge the loss escape after every step on the first N eval batches (0: on the eval loss every --eval-every steps)")
	f.Bool("stop-at-escape", false, "end the run once every escape criterion has fired (--steps is then a budget)")
	f.String("out", "", "output folder (metrics.jsonl, summary.json, adapter, checkpoints)")
	f.Int("save-every", 0, "write a checkpoint every N steps (0: only at the end; -1: never)")
	f.Int("keep", 3, "keep the newest K checkpoints (0: all)")
	f.Int("skip-nonfinite", 0, "tolerate N steps with a non-finite loss or gradient by dropping their update")
	f.Float64("diverge-factor", 4, "stop when the loss exceeds this multiple of the first step's loss (0: off)")
	f.String("dtype", "auto", "compute type of the frozen base's matmuls: auto, f32, bf16 or f16 (weights stay in their file's dtype)")
	f.Bool("grad-checkpoint", false, "recompute each block's activations in the backward pass (long sequences in less memory)")
	f.Int("eval-batches", 0, "evaluate on at most N eval batches (0: all)")
	f.String("trainer", "auto", "how gradients are computed: auto (cpu on the Go backend when the run allows it, else graph), cpu or graph")
	addMemoryCheckFlag(cmd)
}

func addMemoryCheckFlag(cmd *cobra.Command) {
	cmd.Flags().Bool("no-memory-check", false, "run even when the memory estimate exceeds the memory available")
}

// trainConfig reads the flags (after the config file) into a run configuration; finetune.NewPlan checks it.
func trainConfig(cmd *cobra.Command, modelName string) (finetune.Config, error) {
	f := cmd.Flags()
	getF := func(n string) float64 { v, _ := f.GetFloat64(n); return v }
	getI := func(n string) int { v, _ := f.GetInt(n); return v }
	getB := func(n string) bool { v, _ := f.GetBool(n); return v }
	seed, _ := f.GetUint64("seed")
	c := finetune.Config{
		Model: modelName, Data: flagString(cmd, "data"), EvalData: flagString(cmd, "eval-data"),
		EvalSplit: getF("eval-split"), Optimizer: flagString(cmd, "optimizer"), LR: getF("lr"),
		Schedule: flagString(cmd, "schedule"), Warmup: getI("warmup"), MinLRRatio: getF("min-lr-ratio"),
		ClipNorm: getF("clip-norm"), GradAccum: getI("grad-accum"), Steps: getI("steps"),
		BatchSize: getI("batch-size"), SeqLen: getI("seq-len"), Pack: getB("pack"), Truncate: getB("truncate"), NoEOS: getB("no-eos"),
		Seed: seed, EvalEvery: getI("eval-every"), EscapeDelta: getF("escape-delta"), EscapeNorm: getF("escape-norm"),
		Out: flagString(cmd, "out"), SaveEvery: getI("save-every"), Keep: getI("keep"),
		SkipNonfinite: getI("skip-nonfinite"), DivergeFactor: getF("diverge-factor"),
		DType: flagString(cmd, "dtype"), GradCheckpoint: getB("grad-checkpoint"), EvalBatches: getI("eval-batches"),
		Trainer:     flagString(cmd, "trainer"),
		EscapeProbe: getI("escape-probe"), StopAtEscape: getB("stop-at-escape"),
	}
	c.Opt = optimizers.Config{Momentum: getF("momentum"), Nesterov: getB("nesterov"), Beta1: getF("beta1"),
		Beta2: getF("beta2"), Eps: getF("eps"), Q: getF("q"), WeightDecay: getF("weight-decay"), WDMode: flagString(cmd, "wd-mode")}
	for _, name := range []string{"momentum", "beta1", "beta2", "eps", "q", "weight-decay"} {
		if f.Changed(name) {
			c.Opt.Explicit = append(c.Opt.Explicit, name)
		}
	}
	c.Adapter = lora.Spec{Targets: splitList(flagString(cmd, "targets")), Rank: getI("rank"),
		Alpha: getF("alpha"), RSLoRA: getB("rslora"), Depth: getI("depth"), Dropout: getF("dropout"),
		Init: flagString(cmd, "init"), Scale: getF("init-scale"), Seed: seed}
	if layers := flagString(cmd, "layers"); layers != "" {
		for _, s := range strings.Split(layers, ",") {
			l, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return c, usagef("--layers %q: %q is not a layer index", layers, s)
			}
			c.Adapter.Layers = append(c.Adapter.Layers, l)
		}
	}
	if c.Data == demoData && c.EvalData == "" && c.EvalSplit == 0 {
		c.EvalData = demoEvalData
	}
	for flag, path := range map[string]string{"data": c.Data, "eval-data": c.EvalData} {
		if err := checkDataFile(flag, path); err != nil {
			return c, err
		}
	}
	return c, nil
}

func newTrainCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Fine-tune product adapters on a frozen model and log how the optimizer escapes the saddle",
		Args:  cobra.NoArgs,
		RunE:  runTrain,
	}
	addTrainFlags(cmd)
	cmd.Flags().String("resume", "", "continue a run: its --out folder (latest checkpoint) or one checkpoint folder")
	cmd.Flags().Bool("overwrite", false, "start over in an --out folder that already holds a run, deleting that run first")
	return cmd
}

// session is a model with its tokenizer, shared by train and escape. loadSession reads the model's configuration
// and weight headers; build puts the weights on the backend.
type session struct {
	path    string // the model's local file or folder
	source  string // --model as given: what the run records (config.json "model") to find the model again
	config  model.Config
	storage finetune.WeightStorage // the weights' dtypes on disk, for the memory estimate
	pre     *model.Pretrained      // until build
	model   *model.Model           // after build
	tok     finetune.DataTokenizer
	vocab   int
	backend compute.Backend
	name    string // the backend's
}

// applyConfig applies --config's file once, before any flag is read: a setting from the file counts as that flag
// given (--out and --resume included).
func applyConfig(cmd *cobra.Command) error {
	file := flagString(cmd, "config")
	if file == "" || cmd.Annotations["config-applied"] != "" {
		return nil
	}
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations["config-applied"] = file
	return applyConfigFile(cmd, file)
}

func loadSession(cmd *cobra.Command) (*session, error) {
	if err := applyConfig(cmd); err != nil {
		return nil, err
	}
	src, err := resolveModel(cmd)
	if err != nil {
		return nil, err
	}
	path := src.Path
	tok, err := loadTokenizer(path)
	if err != nil {
		return nil, err
	}
	p, err := model.Load(path)
	if err != nil {
		return nil, err
	}
	if err := p.Config.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path, err)
	}
	b, name, err := newBackend(cmd)
	if err != nil {
		return nil, err
	}
	return &session{path: path, source: src.Name, config: p.Config, storage: weightStorage(p), pre: p, tok: tok, vocab: tok.VocabSize(),
		backend: b, name: name}, nil
}

// weightStorage is what the memory estimate needs to know of a model's files.
func weightStorage(p *model.Pretrained) finetune.WeightStorage {
	return finetune.WeightStorage{DTypes: p.DTypes, Default: p.DType}
}

// computeType resolves a --dtype value ("" for the flag's) for the session's backend; a type the backend cannot
// use is a usage error naming --dtype.
func (s *session) computeType(cmd *cobra.Command, name string) (string, error) {
	if name == "" {
		name = flagString(cmd, "dtype")
	}
	resolved, err := model.ResolveCompute(s.backend, name)
	if err != nil {
		return "", usageError{setting.Errorf("dtype", "%v", err)}
	}
	return resolved, nil
}

// build puts the weights on the backend, with the compute type computeType resolved.
func (s *session) build(compute string) error {
	m, err := model.NewWithCompute(s.backend, s.pre, compute)
	if err != nil {
		return err
	}
	s.model, s.pre = m, nil // the host copy can go
	return nil
}

// availableMemory is the memory the check compares estimates with; tests replace it.
var availableMemory = finetune.AvailableMemory

// checkMemory prints the estimate (unless quiet) and refuses a run that clearly cannot fit, unless
// --no-memory-check.
func checkMemory(cmd *cobra.Command, plan *finetune.Plan, s *session, quiet bool) (*finetune.MemoryEstimate, error) {
	est, err := finetune.EstimateTraining(plan, s.config, s.storage)
	if err != nil {
		return nil, err
	}
	avail, known := availableMemory()
	if known && !flagBool(cmd, "no-memory-check") {
		var may func(string) bool // a resumed run may change only some settings
		if flagString(cmd, "resume") != "" {
			may = func(name string) bool { return slices.Contains(finetune.ResumableSettings, name) }
		}
		if err := finetune.CheckMemory(plan, s.config, s.storage, est, avail, may); err != nil {
			return nil, fmt.Errorf("%w; or pass --no-memory-check to try anyway", err)
		}
	}
	if !quiet {
		have := "memory available unknown"
		if known {
			have = fmt.Sprintf("%s available (%s)", finetune.FormatBytes(avail.Bytes), avail.Source)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "saddle %s: memory estimate %s; %s\n", cmd.Name(), est, have)
	}
	return &est, nil
}

// checkTokenizer refuses a tokenizer whose ids the model's vocabulary does not cover.
func checkTokenizer(s *session) error {
	return checkVocab(s.path, s.vocab, s.config)
}

// newPlan checks a run's settings against the loaded model; every problem is a usage error.
func newPlan(cfg finetune.Config, s *session) (*finetune.Plan, error) {
	if err := checkTokenizer(s); err != nil {
		return nil, err
	}
	p, err := finetune.NewPlan(cfg, s.config)
	if err != nil {
		return nil, usageError{err}
	}
	return p, nil
}

// cliResumeFlags may be given with --resume besides the resumable settings; every other setting comes from the
// checkpoint.
var cliResumeFlags = []string{"resume", "config", "model", "backend", "pjrt-plugin", "json", "no-memory-check"}

// resumeConfig loads the checkpoint named by --resume and the run configuration saved with it, with the
// resumable settings given as flags applied on top.
func resumeConfig(cmd *cobra.Command) (*checkpoints.State, finetune.Config, error) {
	f := cmd.Flags()
	changes := map[string]json.RawMessage{}
	var bad []string
	f.Visit(func(fl *pflag.Flag) {
		switch name := strings.ReplaceAll(fl.Name, "-", "_"); {
		case slices.Contains(cliResumeFlags, fl.Name):
		case slices.Contains(finetune.ResumableSettings, name):
			changes[name] = json.RawMessage(fl.Value.String()) // the resumable settings are numbers
		default:
			bad = append(bad, "--"+fl.Name)
		}
	})
	if len(bad) > 0 {
		var may []string
		for _, name := range finetune.ResumableSettings {
			may = append(may, "--"+flagName(name))
		}
		return nil, finetune.Config{}, usagef("%s cannot change when resuming (the run's settings are in its config.json); "+
			"only %s, --model and --backend may be given", strings.Join(bad, ", "), strings.Join(may, ", "))
	}
	st, cfg, err := finetune.Resume(flagString(cmd, "resume"), changes)
	if err != nil {
		return nil, cfg, err
	}
	if !f.Changed("model") {
		if err := f.Set("model", cfg.Model); err != nil {
			return nil, cfg, err
		}
	}
	return st, cfg, nil
}

func runTrain(cmd *cobra.Command, _ []string) error {
	started := time.Now()
	if err := applyConfig(cmd); err != nil {
		return err
	}
	resuming := flagString(cmd, "resume") != ""
	overwrite := flagBool(cmd, "overwrite")
	if !resuming && flagString(cmd, "out") == "" {
		return usagef("train needs --out DIR (or --resume DIR)")
	}
	if resuming && overwrite {
		return usagef("--overwrite starts a new run and --resume continues one: give one of them")
	}
	lock, err := lockRunFolder(cmd, resuming, overwrite)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	var resume *checkpoints.State
	var cfg finetune.Config
	if resuming {
		if resume, cfg, err = resumeConfig(cmd); err != nil {
			return err
		}
	}
	s, err := loadSession(cmd)
	if err != nil {
		return err
	}
	var base checkpoints.BaseIdentity
	var hashed time.Duration
	if resuming { // first make sure this is the checkpoint's base model
		if base, hashed, err = hashBase(cmd, s); err != nil {
			return err
		}
		if err := finetune.CheckBase(resume, base); err != nil {
			return fmt.Errorf("%w; pass that model with --model", err)
		}
		cfg.Model = s.source
	} else if cfg, err = trainConfig(cmd, s.source); err != nil {
		return err
	}
	cfg.Backend = s.name
	if resuming {
		cfg.DType = cmp.Or(cfg.DType, model.ComputeF32) // runs from before --dtype computed in float32
	}
	if cfg.DType, err = s.computeType(cmd, cfg.DType); err != nil {
		return err
	}
	plan, err := newPlan(cfg, s)
	if err != nil {
		return err
	}
	asJSON := flagBool(cmd, "json")
	est, err := checkMemory(cmd, plan, s, asJSON)
	if err != nil {
		return err
	}
	if !resuming {
		if base, hashed, err = hashBase(cmd, s); err != nil {
			return err
		}
	}
	if err := s.build(cfg.DType); err != nil {
		return err
	}
	data, err := finetune.PrepareData(plan, s.tok, readExamples)
	if err != nil {
		return err
	}
	if n := data.TrainStats.Truncated + data.EvalStats.Truncated; n > 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "saddle train: %d examples longer than --seq-len %d were truncated (--truncate=false refuses them)\n", n, cfg.SeqLen)
	}
	if !asJSON {
		verb := "training"
		if resuming {
			verb = fmt.Sprintf("resuming at step %d of", resume.Step)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "saddle train: %s %d steps, %s on %s (%d train rows, %s), backend %s\n",
			verb, cfg.Steps, cfg.Optimizer, cfg.Data, data.TrainStats.Rows, evalText(cfg, data.Eval), s.name)
	}
	if overwrite { // only now, when nothing else can refuse the run: a refused run deletes nothing
		if err := finetune.ClearRun(cfg.Out); err != nil {
			return outFolderError(err)
		}
	}
	intr := watchInterrupts(cmd)
	defer intr.stop()
	job := finetune.Job{Model: s.model, Train: data.Train, Eval: data.Eval, Plan: plan, Base: base, Resume: resume,
		Started: started, Memory: est}
	job.Prep.Hash = hashed.Seconds()
	job.Prep.Load = time.Since(started).Seconds() - job.Prep.Hash
	sum, err := finetune.Run(intr.ctx, job, cmd.ErrOrStderr())
	if errors.Is(err, finetune.ErrInterrupted) { // a checkpoint is saved, but the run is not finished: not 0
		return intr.interrupted(err, "saddle train --resume "+shellQuote(cfg.Out))
	}
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), sum)
	}
	printSummary(cmd.OutOrStdout(), sum)
	return nil
}

// lockRunFolder locks the run folder for the life of the command, before anything is read or written: --resume's
// (when it exists; resuming a folder that does not exist fails later with Resume's message) or --out's, which must
// be empty, absent, or, with --overwrite, a run (cleared when training starts).
func lockRunFolder(cmd *cobra.Command, resuming, overwrite bool) (*fileio.Locked, error) {
	if resuming {
		dir := checkpoints.RunDir(flagString(cmd, "resume"))
		if info, err := os.Stat(dir); err != nil || !info.IsDir() {
			return nil, nil
		}
		return lockOut(cmd, dir, "--resume")
	}
	out := flagString(cmd, "out")
	var foreign *finetune.NotRunError
	if err := finetune.CheckFreshOut(out); errors.As(err, &foreign) { // refused without putting a lock file there
		return nil, outFolderError(err)
	}
	lock, err := lockOut(cmd, out, "--out")
	if err != nil {
		return nil, err
	}
	err = finetune.CheckFreshOut(out) // again, now that no other saddle can write there
	var exists *finetune.RunExistsError
	if err == nil || (overwrite && errors.As(err, &exists)) {
		return lock, nil
	}
	lock.Unlock()
	return nil, outFolderError(err)
}

// outFolderError says what to do about an --out folder that cannot take a new run.
func outFolderError(err error) error {
	var exists *finetune.RunExistsError
	var foreign *finetune.NotRunError
	switch {
	case errors.As(err, &exists):
		return usagef("--out %v: use --resume %s to continue it, or --overwrite to delete it and start over", err, shellQuote(exists.Dir))
	case errors.As(err, &foreign):
		return usagef("--out %v; saddle does not delete them (not even with --overwrite): choose an empty or new folder", err)
	}
	return err
}

// hashBase computes the base model's identity for checkpoints (cached after the first time), saying so when that
// means reading more than a GB.
func hashBase(cmd *cobra.Command, s *session) (checkpoints.BaseIdentity, time.Duration, error) {
	path := s.path
	began := time.Now()
	if n := checkpoints.HashBaseCost(path); n > 1e9 && !flagBool(cmd, "json") {
		fmt.Fprintf(cmd.ErrOrStderr(), "saddle train: reading %s of weights once for the base model's sha256 (cached for later runs)\n",
			finetune.FormatBytes(n))
	}
	base, err := checkpoints.HashBase(path)
	base.Model = s.source
	return base, time.Since(began), err
}

// evalText says how many eval batches each evaluation measures.
func evalText(cfg finetune.Config, eval []finetune.Batch) string {
	if n := len(finetune.EvalSet(cfg, eval)); n < len(eval) {
		return fmt.Sprintf("each eval on the first %d of %d eval batches (--eval-batches)", n, len(eval))
	}
	return fmt.Sprintf("%d eval batches", len(eval))
}

// stepText prints an escape step, or "never".
func stepText(p *int) string {
	if p == nil {
		return "never"
	}
	return strconv.Itoa(*p)
}

// lossText prints an optional loss, or "-".
func lossText(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.4f", *p)
}

func printSummary(w io.Writer, s *finetune.Summary) {
	fmt.Fprintf(w, "optimizer %s (q=%g) lr %g, init %s λ=%g, depth %d rank %d, %d adapter parameters\n",
		s.Optimizer, s.Q, s.LR, s.Init, s.InitScale, s.Depth, s.Rank, s.AdapterParams)
	fmt.Fprintf(w, "eval loss %s → %s, train loss %.4f → %.4f over %d steps\n",
		lossText(s.InitialEvalLoss), lossText(s.FinalEvalLoss), s.InitialTrainLoss, s.FinalTrainLoss, s.Steps)
	fmt.Fprintf(w, "escape step %s, escape norm step %s, final mean ‖ΔW‖/‖W‖ %.3g\n",
		atText(s.EscapeStep, s.EscapeAt), atText(s.EscapeNormStep, s.EscapeNormAt), s.Final.RelDW)
	fmt.Fprintf(w, "%.0f tokens/s, %.1f s; written to %s\n", s.TokensPerSecond, s.WallSeconds, s.Out)
	if t := s.Times; t != nil {
		fmt.Fprintf(w, "time: load %.1f s, hash %.1f s, setup %.1f s, compile %.1f s, train %.1f s, eval %.1f s, save %.1f s; %.1f s in all\n",
			t.Load, t.Hash, t.Setup, t.Compile, t.Train, t.Eval, t.Save, t.Total)
	}
	if s.Memory != nil {
		peak := "not measured"
		if s.PeakRSS > 0 {
			peak = finetune.FormatBytes(s.PeakRSS)
		}
		fmt.Fprintf(w, "memory: estimated %s, peak resident %s\n", finetune.FormatBytes(s.Memory.Total), peak)
	}
}
