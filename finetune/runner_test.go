package finetune

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/backend"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/optimizers"
	"github.com/saddle-ml/saddle/tokenizer"
)

func sharedModels(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("SADDLE_SHARED")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared")
	}
	dir = filepath.Join(dir, "models", "stories260K-hf")
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("stories260K-hf missing at %s (set SADDLE_SHARED): %v", dir, err)
		}
		t.Skipf("stories260K-hf missing at %s (set SADDLE_SHARED)", dir)
	}
	return dir
}

type fixture struct {
	model *model.Model
	tok   *tokenizer.Tokenizer
}

func newFixture(t testing.TB) fixture {
	dir := sharedModels(t)
	tok, err := tokenizer.FromFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := backend.New("go")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(b, p)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{model: m, tok: tok}
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
	return Config{Optimizer: optimizer, Opt: optimizers.Config{LR: lr}, LR: lr, Schedule: "constant",
		GradAccum: 1, Adapter: spec, Steps: steps, BatchSize: 4, SeqLen: 32, Pack: true, EscapeDelta: 0.05,
		EscapeNorm: 0.01, Out: t.TempDir()}
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
	sum, err := Run(context.Background(), Job{Model: f.model, Train: f.batcher(t, 4, 32), Config: cfg}, nil)
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
	opt, err := optimizers.New("sgd", cfg.Opt)
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
	norms := make([]float64, len(set.Adapters))
	first, err := s.Telemetry(norms)
	if err != nil {
		t.Fatal(err)
	}
	startParams := copyParams(t, s.Params)
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
	endParams, moved := copyParams(t, s.Params), 0.0
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
		opt, err := optimizers.New("sgd", cfg.Opt)
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
		r, err := s.TrainStep(batches, cfg.LR)
		if err != nil {
			t.Fatal(err)
		}
		return copyParams(t, s.Params), r
	}
	accumulated, ra := run([]Batch{b1, b2})
	whole, rw := run([]Batch{big})
	if math.Abs(ra.Loss-rw.Loss) > 1e-5*rw.Loss || math.Abs(ra.GradNorm-rw.GradNorm) > 1e-4*rw.GradNorm {
		t.Fatalf("loss/grad norm differ: accumulated %+v, whole %+v", ra, rw)
	}
	for i := range whole {
		for j := range whole[i] {
			if math.Abs(float64(accumulated[i][j]-whole[i][j])) > 1e-5 {
				t.Fatalf("param %d[%d]: accumulated %g, whole batch %g", i, j, accumulated[i][j], whole[i][j])
			}
		}
	}
}
