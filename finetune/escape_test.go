package finetune

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/saddle-ml/saddle/internal/setting"
)

func TestEscapeTrackerInterpolatesTheCrossing(t *testing.T) {
	e := EscapeTracker{Delta: 0.05, NormThreshold: 0.01}
	e.ObserveLoss(0, 1.0)
	e.StartNorm(0)
	for i, o := range []struct{ loss, rel float64 }{{0.98, 0.004}, {0.94, 0.012}} {
		if e.Escaped() {
			t.Fatalf("escaped before step %d", i+1)
		}
		e.ObserveLoss(i+1, o.loss)
		e.ObserveNorm(i+1, o.rel)
	}
	e.ObserveLoss(3, 0.5) // later observations change nothing
	e.ObserveNorm(3, 0.5)
	// Loss level 0.95 lies 3/4 of the way from 0.98 (step 1) to 0.94 (step 2); norm 0.01 lies 6/8 from 0.004 to 0.012.
	if e.LossStep == nil || *e.LossStep != 2 || e.LossAt == nil || math.Abs(*e.LossAt-1.75) > 1e-12 {
		t.Errorf("loss escape step %v at %v, want 2 at 1.75", e.LossStep, e.LossAt)
	}
	if e.NormStep == nil || *e.NormStep != 2 || e.NormAt == nil || math.Abs(*e.NormAt-1.75) > 1e-12 {
		t.Errorf("norm escape step %v at %v, want 2 at 1.75", e.NormStep, e.NormAt)
	}
	if !e.Escaped() {
		t.Errorf("both criteria fired but Escaped is false")
	}

	// Observations every 10 steps: the crossing falls between them.
	sparse := EscapeTracker{Delta: 0.1}
	for i, l := range []float64{2, 1.95, 1.7} {
		sparse.ObserveLoss(10*i, l)
	}
	if sparse.LossAt == nil || math.Abs(*sparse.LossAt-(10+10*(1.8-1.95)/(1.7-1.95))) > 1e-12 || *sparse.LossStep != 20 {
		t.Errorf("sparse crossing at %v (step %v), want 16 (step 20)", sparse.LossAt, sparse.LossStep)
	}
	if !sparse.Escaped() {
		t.Errorf("with the norm criterion off, the loss escape alone is the escape")
	}
}

// TestEscapeProbeAndStopAtEscape: the probe scores the same eval batch after every step, the loss escape is judged
// on it to the step, and the run stops at its escape, within its budget.
func TestEscapeProbeAndStopAtEscape(t *testing.T) {
	f := newFixture(t)
	data := f.batcher(t, 4, 32)
	eval := []Batch{data.BatchAt(100), data.BatchAt(101)}
	cfg := testConfig(t, "adam", 1e-2, 40)
	cfg.EvalEvery, cfg.EscapeProbe, cfg.StopAtEscape = 10, 1, true
	s, err := Run(context.Background(), Job{Model: f.model, Train: data, Eval: eval, Plan: testPlan(t, f, cfg)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.EscapeStep == nil || s.EscapeNormStep == nil || !s.StoppedAtEscape || s.Budget != 40 {
		t.Fatalf("escape step %v, norm step %v, stopped at escape %v, budget %d: want both escapes within 40 steps and a stop",
			s.EscapeStep, s.EscapeNormStep, s.StoppedAtEscape, s.Budget)
	}
	if want := max(*s.EscapeStep, *s.EscapeNormStep); s.Steps != want {
		t.Errorf("stopped after %d steps, want %d (the later of the two escapes)", s.Steps, want)
	}
	rows := readRows(t, filepath.Join(cfg.Out, "metrics.jsonl"))
	if len(rows) != s.Steps+1 {
		t.Fatalf("%d metrics rows for %d steps", len(rows), s.Steps)
	}
	level := 0.95 * *rows[0].ProbeLoss
	for _, r := range rows {
		if r.ProbeLoss == nil {
			t.Fatalf("step %d has no probe loss", r.Step)
		}
		if r.Step < *s.EscapeStep && *r.ProbeLoss <= level {
			t.Errorf("step %d: probe loss %.4f already ≤ %.4f, before the escape step %d", r.Step, *r.ProbeLoss, level, *s.EscapeStep)
		}
	}
	if at := *s.EscapeAt; !(at > float64(*s.EscapeStep-1) && at <= float64(*s.EscapeStep)) || *rows[*s.EscapeStep].ProbeLoss > level {
		t.Errorf("escape at %g, step %d: the crossing must lie in the step before it", at, *s.EscapeStep)
	}
	if last := rows[len(rows)-1]; last.EvalLoss == nil || s.FinalEvalLoss == nil {
		t.Errorf("the run stopped at its escape without a final eval loss")
	}
	if s.EscapeCriterion == "" || s.EscapeNormCriterion == "" {
		t.Errorf("the summary does not say which criteria were used")
	}

	cfg = testConfig(t, "adam", 1e-2, 2)
	cfg.EscapeProbe = 3
	_, err = Run(context.Background(), Job{Model: f.model, Train: data, Eval: eval, Plan: testPlan(t, f, cfg)}, nil)
	if se := (*setting.Error)(nil); !errors.As(err, &se) || se.Name != "escape_probe" {
		t.Errorf("a probe larger than the eval set: %v, want an escape_probe setting error", err)
	}
}
