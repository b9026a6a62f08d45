package finetune

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/optimizers"
	"github.com/saddle-ml/saddle/tokenizer"
)

type fixture struct {
	model *model.Model
	tok   *tokenizer.Tokenizer
}

func newFixture(t testing.TB) fixture {
	dir := filepath.Dir(testenv.Shared(t, "models", "stories260K-hf", "model.safetensors"))
	tok, err := tokenizer.FromFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{model: newModel(t, p), tok: tok}
}

// newModel builds p on the test backend (internal/testbackend: the Go backend unless $SADDLE_TEST_BACKEND).
func newModel(t testing.TB, p *model.Pretrained) *model.Model {
	t.Helper()
	m, err := model.New(testbackend.Get(t), p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// stories are a few lines in a style the base model has not seen, so training visibly lowers the loss.
func (f fixture) batcher(t testing.TB, batch, seq int) *Batcher {
	var lines []string
	for i := range 24 {
		lines = append(lines, fmt.Sprintf(`{"text": "Pip the robot said beep boop %d times. Beep boop, said Pip, and fixed the red cart."}`, i%5+2))
	}
	recs, err := ParseJSONL(strings.NewReader(strings.Join(lines, "\n")), "inline")
	if err != nil {
		t.Fatal(err)
	}
	ex, _, err := TokenizeRecords(recs, f.tok, TokenizeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBatcher(ex, BatchOptions{SeqLen: seq, BatchSize: batch, Pack: true, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testConfig(t testing.TB, optimizer string, lr float64, steps int) Config {
	spec := lora.DefaultSpec()
	return Config{Optimizer: optimizer, LR: lr, Schedule: "constant",
		GradAccum: 1, Adapter: spec, Steps: steps, BatchSize: 4, SeqLen: 32, Pack: true, EscapeDelta: 0.05,
		EscapeNorm: 0.01, Out: t.TempDir()}
}

// testPlan checks cfg against the fixture's model.
func testPlan(t testing.TB, f fixture, cfg Config) *Plan {
	t.Helper()
	p, err := NewPlan(cfg, f.model.Config)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newStepper builds the training graphs for cfg's optimizer and adapters on the fixture's model.
func newStepper(t testing.TB, f fixture, cfg Config) *Stepper {
	t.Helper()
	opt, err := optimizers.New(cfg.Optimizer, cfg.Opt)
	if err != nil {
		t.Fatal(err)
	}
	set, err := lora.Attach(f.model.Config, cfg.Adapter)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStepper(f.model, set, opt, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func copyParams(t testing.TB, ts []*tensors.Tensor) [][]float32 {
	out := make([][]float32, len(ts))
	for i, x := range ts {
		out[i] = tensors.MustCopyFlatData[float32](x)
	}
	return out
}

func TestTrainingLowersLossAndLeavesBaseWeightsBitwiseUnchanged(t *testing.T) {
	f := newFixture(t)
	before := copyParams(t, f.model.Params)
	cfg := testConfig(t, "adam", 1e-2, 15)
	sum, err := Run(context.Background(), Job{Model: f.model, Train: f.batcher(t, 4, 32), Plan: testPlan(t, f, cfg)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	after := copyParams(t, f.model.Params)
	for i := range before {
		for j := range before[i] {
			if math.Float32bits(before[i][j]) != math.Float32bits(after[i][j]) {
				t.Fatalf("base weight %s[%d] changed: %g → %g", f.model.Names[i], j, before[i][j], after[i][j])
			}
		}
	}
	if !(sum.FinalTrainLoss < 0.9*sum.InitialTrainLoss) {
		t.Fatalf("adam at lr 1e-2 did not lower the loss: %.4f → %.4f", sum.InitialTrainLoss, sum.FinalTrainLoss)
	}
	if sum.EscapeStep == nil || sum.Final.NormB == 0 {
		t.Fatalf("no escape recorded: %+v", sum)
	}
	for _, name := range []string{"config.json", "metrics.jsonl", "summary.json", "adapter.json", "adapter.safetensors"} {
		if _, err := os.Stat(filepath.Join(cfg.Out, name)); err != nil {
			t.Errorf("missing output %s: %v", name, err)
		}
	}
	set, _, err := lora.Load(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Adapters) != 5*4 {
		t.Fatalf("saved %d adapters, want 20", len(set.Adapters))
	}
}

// TestBalanceLawUnderSGD: under gradient flow AAᵀ − BᵀB is conserved, so with plain SGD at a small learning rate
// ‖AAᵀ − BᵀB‖_F stays put while A and B themselves move.
func TestBalanceLawUnderSGD(t *testing.T) {
	f := newFixture(t)
	cfg := testConfig(t, "sgd", 5e-4, 100)
	cfg.Adapter.Init, cfg.Adapter.Scale = "small", 0.5
	s := newStepper(t, f, cfg)
	norms := make([]float64, len(s.set.Adapters))
	first, err := s.Telemetry(norms)
	if err != nil {
		t.Fatal(err)
	}
	startParams := copyParams(t, s.params)
	data := f.batcher(t, 4, 32)
	for step := range cfg.Steps {
		if _, err := s.TrainStep([]Batch{data.BatchAt(step)}, cfg.LR); err != nil {
			t.Fatal(err)
		}
	}
	last, err := s.Telemetry(norms)
	if err != nil {
		t.Fatal(err)
	}
	worstDrift := 0.0
	for i := range first {
		worstDrift = max(worstDrift, math.Abs(last[i].BalanceG-first[i].BalanceG)/first[i].BalanceG)
	}
	// How far the factors travelled: max over factors of ‖X_end − X_start‖/‖X_start‖.
	endParams, moved := copyParams(t, s.params), 0.0
	for i := range startParams {
		var diff, norm float64
		for j := range startParams[i] {
			d := float64(endParams[i][j] - startParams[i][j])
			diff += d * d
			norm += float64(startParams[i][j]) * float64(startParams[i][j])
		}
		moved = max(moved, math.Sqrt(diff/norm))
	}
	t.Logf("max relative drift of ‖AAᵀ−BᵀB‖ %.2e while the factors moved by up to %.2e", worstDrift, moved)
	if worstDrift >= 1e-3 {
		t.Fatalf("balance drifted by %.2e (≥ 1e-3 relative)", worstDrift)
	}
	if moved < 20*worstDrift || moved < 1e-3 {
		t.Fatalf("the factors barely moved (%.2e): the balance check proves nothing", moved)
	}
}

// TestGradientAccumulationEqualsBigBatch: two micro-batches of 2 rows give the same step as one batch of 4 rows.
func TestGradientAccumulationEqualsBigBatch(t *testing.T) {
	f := newFixture(t)
	data := f.batcher(t, 2, 32)
	b1, b2 := data.BatchAt(0), data.BatchAt(1)
	big := Batch{B: 4, T: 32, Inputs: slices.Concat(b1.Inputs, b2.Inputs), Targets: slices.Concat(b1.Targets, b2.Targets),
		Weights: slices.Concat(b1.Weights, b2.Weights)}
	cfg := testConfig(t, "sgd", 0.5, 1)
	cfg.Adapter.Init = "small"
	run := func(batches []Batch) ([][]float32, StepResult) {
		s := newStepper(t, f, cfg)
		r, err := s.TrainStep(batches, cfg.LR)
		if err != nil {
			t.Fatal(err)
		}
		return copyParams(t, s.params), r
	}
	accumulated, ra := run([]Batch{b1, b2})
	whole, rw := run([]Batch{big})
	if math.Abs(ra.Loss-rw.Loss) > testbackend.Tol(t, 1e-5)*rw.Loss || math.Abs(ra.GradNorm-rw.GradNorm) > testbackend.Tol(t, 1e-4)*rw.GradNorm {
		t.Fatalf("loss/grad norm differ: accumulated %+v, whole %+v", ra, rw)
	}
	for i := range whole {
		for j := range whole[i] {
			if math.Abs(float64(accumulated[i][j]-whole[i][j])) > testbackend.Tol(t, 1e-5) {
				t.Fatalf("param %d[%d]: accumulated %g, whole batch %g", i, j, accumulated[i][j], whole[i][j])
			}
		}
	}
}

func readRows(t *testing.T, path string) []MetricsRow {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows []MetricsRow
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r MetricsRow
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		rows = append(rows, r)
	}
	return rows
}

// TestResumeIsBitwiseIdentical: resuming from the step-10 checkpoint of a run reproduces steps 11..20 exactly
// (Adam state, dropout random state, data order, eval and escape bookkeeping all restored).
func TestResumeIsBitwiseIdentical(t *testing.T) {
	f := newFixture(t)
	cfg := testConfig(t, "adam", 3e-3, 20)
	cfg.SaveEvery, cfg.EvalEvery, cfg.Adapter.Dropout = 5, 4, 0.1
	cfg.Schedule, cfg.Warmup = "cosine", 3
	data := f.batcher(t, 4, 32)
	eval := []Batch{data.BatchAt(100)}
	full, err := Run(context.Background(), Job{Model: f.model, Train: data, Eval: eval, Plan: testPlan(t, f, cfg)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	resumedDir := t.TempDir()
	testenv.CopyTree(t, cfg.Out, resumedDir)
	st, err := checkpoints.Load(filepath.Join(resumedDir, "checkpoints", "step-000010"))
	if err != nil {
		t.Fatal(err)
	}
	rcfg := cfg
	rcfg.Out = resumedDir
	resumed, err := Run(context.Background(), Job{Model: f.model, Train: data, Eval: eval, Plan: testPlan(t, f, rcfg), Resume: st}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := readRows(t, filepath.Join(cfg.Out, "metrics.jsonl")), readRows(t, filepath.Join(resumedDir, "metrics.jsonl"))
	if len(a) != 21 || len(b) != 21 {
		t.Fatalf("metrics rows: uninterrupted %d, resumed %d, want 21 each", len(a), len(b))
	}
	for i := 11; i <= 20; i++ {
		x, y := a[i], b[i]
		// Same: bitwise on the Go backend; XLA on a GPU does not promise bitwise-identical reductions.
		same := testbackend.Same
		if !same(*x.Loss, *y.Loss) || !same(x.GradNorm, y.GradNorm) || !same(x.All.NormDW, y.All.NormDW) || !same(x.All.BalanceQ, y.All.BalanceQ) ||
			(x.EvalLoss == nil) != (y.EvalLoss == nil) || (x.EvalLoss != nil && !same(*x.EvalLoss, *y.EvalLoss)) {
			t.Fatalf("step %d differs after resume:\nuninterrupted %+v\nresumed       %+v", i, x, y)
		}
	}
	if !testbackend.Same(*full.FinalEvalLoss, *resumed.FinalEvalLoss) || fmt.Sprint(deref(full.EscapeStep)) != fmt.Sprint(deref(resumed.EscapeStep)) ||
		!testbackend.Same(full.InitialTrainLoss, resumed.InitialTrainLoss) || !testbackend.Same(full.FinalTrainLoss, resumed.FinalTrainLoss) {
		t.Fatalf("summaries differ:\n%+v\n%+v", full, resumed)
	}
}

func TestInterruptSavesACheckpointAndNonFiniteLossStops(t *testing.T) {
	f := newFixture(t)
	cfg := testConfig(t, "adam", 1e-3, 5)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, Job{Model: f.model, Train: f.batcher(t, 4, 32), Plan: testPlan(t, f, cfg)}, nil)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("want ErrInterrupted, got %v", err)
	}
	if _, err := checkpoints.Load(cfg.Out); err != nil {
		t.Fatalf("no loadable checkpoint after an interrupt: %v", err)
	}

	cfg = testConfig(t, "adam", 1e3, 10)
	cfg.SaveEvery, cfg.DivergeFactor = 1, 3
	_, err = Run(context.Background(), Job{Model: f.model, Train: f.batcher(t, 4, 32), Plan: testPlan(t, f, cfg)}, nil)
	if err == nil || !strings.Contains(err.Error(), "diverged") || !strings.Contains(err.Error(), "learning rate") {
		t.Fatalf("lr 1e3 should stop with a divergence message, got %v", err)
	}
	st, err := checkpoints.Load(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range st.Adapter.Adapters {
		for _, f := range a.Factors {
			for _, v := range f {
				if !finite(float64(v)) {
					t.Fatalf("the kept checkpoint (step %d) holds non-finite adapter values", st.Step)
				}
			}
		}
	}
	t.Logf("stopped; last good checkpoint at step %d", st.Step)
	if st.Step > 3 {
		t.Fatalf("lr 1e3 ran %d steps before stopping", st.Step)
	}
}

// TestNonFiniteLossStopsOrIsSkipped poisons one base weight with NaN: every step is non-finite, so the run stops at
// once, or after skipping --skip-nonfinite steps, and the kept checkpoint holds the untouched adapters.
func TestNonFiniteLossStopsOrIsSkipped(t *testing.T) {
	f := newFixture(t)
	poisoned := *f.model
	poisoned.Params = slices.Clone(f.model.Params)
	k := slices.Index(poisoned.Names, "model.norm.weight")
	data := tensors.MustCopyFlatData[float32](poisoned.Params[k])
	data[0] = float32(math.NaN())
	poisoned.Params[k] = tensors.FromFlatDataAndDimensions(data, len(data))
	for _, skip := range []int{0, 2} {
		cfg := testConfig(t, "adam", 1e-3, 10)
		cfg.SkipNonfinite = skip
		_, err := Run(context.Background(), Job{Model: &poisoned, Train: f.batcher(t, 4, 32), Plan: testPlan(t, f, cfg)}, nil)
		if err == nil || !strings.Contains(err.Error(), "not finite") || !strings.Contains(err.Error(), fmt.Sprintf("step %d:", skip+1)) {
			t.Fatalf("skip %d: want a non-finite stop at step %d, got %v", skip, skip+1, err)
		}
		st, err := checkpoints.Load(cfg.Out)
		if err != nil {
			t.Fatal(err)
		}
		if st.Step != skip {
			t.Fatalf("skip %d: kept checkpoint at step %d", skip, st.Step)
		}
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestEvalBatchesBoundsEveryEvaluation: with EvalBatches 1, the start, periodic and final evaluations all measure
// the first eval batch only, exactly as a run given just that batch does; the full set gives other losses.
func TestEvalBatchesBoundsEveryEvaluation(t *testing.T) {
	f := newFixture(t)
	data := f.batcher(t, 4, 32)
	eval := []Batch{data.BatchAt(100), data.BatchAt(101), data.BatchAt(102)}
	run := func(evalBatches int, eval []Batch) []MetricsRow {
		cfg := testConfig(t, "adam", 3e-3, 4)
		cfg.EvalEvery, cfg.EvalBatches = 2, evalBatches
		if _, err := Run(context.Background(), Job{Model: f.model, Train: data, Eval: eval, Plan: testPlan(t, f, cfg)}, nil); err != nil {
			t.Fatal(err)
		}
		return readRows(t, filepath.Join(cfg.Out, "metrics.jsonl"))
	}
	evalLosses := func(rows []MetricsRow) []float64 {
		var out []float64
		for _, r := range rows {
			if r.EvalLoss != nil {
				out = append(out, *r.EvalLoss)
			}
		}
		return out
	}
	bounded, first, all := evalLosses(run(1, eval)), evalLosses(run(0, eval[:1])), evalLosses(run(0, eval))
	if len(bounded) != 3 || !slices.Equal(bounded, first) {
		t.Fatalf("eval losses with --eval-batches 1: %v; with only the first batch: %v (want 3 equal)", bounded, first)
	}
	if bounded[0] == all[0] {
		t.Fatalf("the first batch and all three give the same eval loss %v: the test cannot tell them apart", all[0])
	}
	if got := EvalSet(Config{EvalBatches: 5}, eval); len(got) != 3 {
		t.Fatalf("EvalBatches above the set's size: %d batches", len(got))
	}
}

// TestSummaryTimes: the summary says where the time went; the parts are non-negative and sum to at most the total,
// which counts from when loading began.
func TestSummaryTimes(t *testing.T) {
	f := newFixture(t)
	data := f.batcher(t, 4, 32)
	cfg := testConfig(t, "adam", 3e-3, 4)
	cfg.EvalEvery, cfg.SaveEvery = 2, 2
	job := Job{Model: f.model, Train: data, Eval: []Batch{data.BatchAt(100), data.BatchAt(101)}, Plan: testPlan(t, f, cfg),
		Started: time.Now().Add(-time.Second), Prep: Times{Load: 0.6, Hash: 0.3}}
	sum, err := Run(context.Background(), job, nil)
	if err != nil {
		t.Fatal(err)
	}
	tm := sum.Times
	if tm == nil {
		t.Fatal("no times in the summary")
	}
	parts := []float64{tm.Load, tm.Hash, tm.Setup, tm.Compile, tm.Train, tm.Eval, tm.Save}
	var total float64
	for _, p := range parts {
		if p < 0 {
			t.Fatalf("negative time: %+v", *tm)
		}
		total += p
	}
	if tm.Load != 0.6 || tm.Hash != 0.3 || tm.Train <= 0 || tm.Eval <= 0 || tm.Save <= 0 || total > tm.Total || tm.Total < 1 {
		t.Fatalf("times %+v: the parts sum to %g", *tm, total)
	}
	var onDisk struct {
		Times map[string]float64 `json:"times"`
	}
	raw, err := os.ReadFile(filepath.Join(cfg.Out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &onDisk); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"load_s", "hash_s", "setup_s", "compile_s", "train_s", "eval_s", "save_s", "total_s"} {
		if _, ok := onDisk.Times[key]; !ok {
			t.Errorf("summary.json times lack %s: %v", key, onDisk.Times)
		}
	}
}

func TestFirstCallExtra(t *testing.T) {
	for _, tc := range []struct {
		durations []float64
		want      float64
	}{
		{nil, 0},
		{[]float64{3}, 0},                   // one call: nothing to compare with
		{[]float64{5, 1, 2, 1.5}, 3.5},      // median of 1, 1.5, 2
		{[]float64{4, 1, 3}, 2},             // median of two: their mean
		{[]float64{0.5, 1, 2}, 0},           // a first call faster than the rest compiled nothing measurable
		{[]float64{10, 1, 1, 1, 100, 1}, 9}, // one slow later call does not move the median
	} {
		if got := firstCallExtra(tc.durations); got != tc.want {
			t.Errorf("firstCallExtra(%v) = %g, want %g", tc.durations, got, tc.want)
		}
	}
}
