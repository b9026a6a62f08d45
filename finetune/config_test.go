package finetune

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/saddle-ml/saddle/internal/setting"
)

// TestNewPlanNamesTheSetting: every run setting out of range comes back as a *setting.Error naming its config key,
// whichever package checks it (the run, the schedule).
func TestNewPlanNamesTheSetting(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		name string
		edit func(*Config)
	}{
		{"steps", func(c *Config) { c.Steps = 0 }},
		{"batch_size", func(c *Config) { c.BatchSize = 0 }},
		{"seq_len", func(c *Config) { c.SeqLen = f.model.Config.MaxPositions + 1 }},
		{"lr", func(c *Config) { c.LR = math.NaN() }},
		{"warmup", func(c *Config) { c.Warmup = c.Steps + 1 }},
		{"min_lr_ratio", func(c *Config) { c.MinLRRatio = 2 }},
		{"schedule", func(c *Config) { c.Schedule = "exponential" }},
		{"eval_split", func(c *Config) { c.EvalSplit, c.EvalData = 0.2, "eval.jsonl" }},
		{"diverge_factor", func(c *Config) { c.DivergeFactor = 0.5 }},
	} {
		cfg := testConfig(t, "adam", 1e-3, 5)
		c.edit(&cfg)
		_, err := NewPlan(cfg, f.model.Config)
		var se *setting.Error
		if !errors.As(err, &se) || se.Name != c.name {
			t.Errorf("%s: NewPlan error = %v, want a setting error naming %q", c.name, err, c.name)
		}
	}
	if _, err := NewPlan(testConfig(t, "adam", 1e-3, 5), f.model.Config); err != nil {
		t.Fatalf("a good config: %v", err)
	}
}

// TestResumeAppliesOnlyResumableSettings: the saved configuration comes back with the allowed changes, from the
// run folder or a checkpoint folder inside it; other settings and steps below the checkpoint are refused.
func TestResumeAppliesOnlyResumableSettings(t *testing.T) {
	f := newFixture(t)
	cfg := testConfig(t, "adam", 1e-3, 2)
	cfg.SaveEvery = 1
	if _, err := Run(context.Background(), Job{Model: f.model, Train: f.batcher(t, 4, 32), Plan: testPlan(t, f, cfg)}, nil); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{cfg.Out, filepath.Join(cfg.Out, "checkpoints", "step-000001")} {
		st, got, err := Resume(path, map[string]json.RawMessage{"steps": json.RawMessage("7"), "diverge_factor": json.RawMessage("3.5")})
		if err != nil {
			t.Fatal(err)
		}
		if got.Steps != 7 || got.DivergeFactor != 3.5 || got.Out != cfg.Out || got.LR != cfg.LR || got.Optimizer != cfg.Optimizer {
			t.Errorf("Resume(%s) = steps %d diverge %g out %s lr %g %s", path, got.Steps, got.DivergeFactor, got.Out, got.LR, got.Optimizer)
		}
		if want := map[string]int{cfg.Out: 2}[path]; want > 0 && st.Step != want {
			t.Errorf("Resume(%s): checkpoint step %d, want %d", path, st.Step, want)
		}
	}
	for name, v := range map[string]string{"lr": "1", "steps": "1", "keep": "\"x\""} {
		_, _, err := Resume(cfg.Out, map[string]json.RawMessage{name: json.RawMessage(v)})
		var se *setting.Error
		if !errors.As(err, &se) || se.Name != name {
			t.Errorf("Resume with %s=%s: error %v, want a setting error naming %q", name, v, err, name)
		}
	}
}
