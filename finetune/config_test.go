package finetune

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/saddle-ml/saddle/internal/setting"
	"github.com/saddle-ml/saddle/optimizers"
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
		// not finite, underflowing, or leaving nothing to train
		{"lr", func(c *Config) { c.LR = 0 }},
		{"lr", func(c *Config) { c.LR = 1e-40 }},
		{"lr", func(c *Config) { c.LR = 1e39 }},
		{"escape_delta", func(c *Config) { c.EscapeDelta = math.NaN() }},
		{"escape_norm", func(c *Config) { c.EscapeNorm = math.Inf(1) }},
		{"clip_norm", func(c *Config) { c.ClipNorm = math.NaN() }},
		{"clip_norm", func(c *Config) { c.ClipNorm = math.Inf(1) }},
		{"clip_norm", func(c *Config) { c.ClipNorm = 1e-40 }},
		{"eval_split", func(c *Config) { c.EvalSplit = math.NaN() }},
		{"diverge_factor", func(c *Config) { c.DivergeFactor = math.NaN() }},
		{"diverge_factor", func(c *Config) { c.DivergeFactor = math.Inf(1) }},
		{"dropout", func(c *Config) { c.Adapter.Dropout = math.NaN() }},
		{"alpha", func(c *Config) { c.Adapter.Alpha = math.NaN() }},
		{"init_scale", func(c *Config) { c.Adapter.Scale = math.NaN() }},
		{"init_scale", func(c *Config) { c.Adapter.Init, c.Adapter.Scale = "saddle", 0 }},
		{"init_scale", func(c *Config) { c.Adapter.Init, c.Adapter.Scale = "small", 1e-45 }},
		{"data", func(c *Config) { c.Data = "-" }},
		{"eval_data", func(c *Config) { c.EvalData = "-" }},
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
	for _, init := range []string{"lora", "gaussian", "orthogonal"} { // they do not scale by λ, or not to zero
		cfg := testConfig(t, "adam", 1e-3, 5)
		cfg.Adapter.Init, cfg.Adapter.Scale = init, 0
		if _, err := NewPlan(cfg, f.model.Config); err != nil {
			t.Errorf("init %s with init_scale 0: %v", init, err)
		}
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

// TestGridRefusesRepeatsAndUnusableLambdas: a sweep list that names a value twice would run one combination twice
// into one folder, and λ ≤ 0 cannot go on the escape fit's log axis; both are refused before anything runs, naming
// the list.
func TestGridRefusesRepeatsAndUnusableLambdas(t *testing.T) {
	f := newFixture(t)
	specs := func(s string) []optimizers.Spec {
		o, err := optimizers.ParseSpecs(s)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	good := func() Grid {
		base := testConfig(t, "adam", 1e-3, 5)
		return Grid{Base: base, Optimizers: specs("adam,steepest:1.5"), LRs: []float64{1e-3, 1e-2},
			InitScales: []float64{0.01, 0.1}, Depths: []int{2, 3}, Inits: []string{"saddle", "small"}}
	}
	out := t.TempDir()
	if plans, err := good().Plans(out, f.model.Config); err != nil || len(plans) != 32 {
		t.Fatalf("a good grid: %d plans, %v", len(plans), err)
	}
	for _, c := range []struct {
		name string
		edit func(*Grid)
	}{
		{"optimizers", func(g *Grid) { g.Optimizers = specs("adam,steepest:1.5,adam") }},
		{"optimizers", func(g *Grid) { g.Optimizers = specs("steepest:1.5,steepest:1.50") }},
		{"lrs", func(g *Grid) { g.LRs = []float64{1e-3, 0.001} }},
		{"init_scales", func(g *Grid) { g.InitScales = []float64{0.1, 0.1} }},
		{"init_scales", func(g *Grid) { g.InitScales = []float64{0.1, 0} }},
		{"init_scales", func(g *Grid) { g.InitScales = []float64{math.Inf(1)} }},
		{"init_scales", func(g *Grid) { g.InitScales, g.Inits = []float64{0}, []string{"lora"} }},
		{"depths", func(g *Grid) { g.Depths = []int{2, 2} }},
		{"inits", func(g *Grid) { g.Inits = []string{"saddle", "saddle"} }},
		{"inits", func(g *Grid) { g.Inits = nil }},
		{"lr", func(g *Grid) { g.LRs = []float64{0} }}, // each run's own check still applies
	} {
		g := good()
		c.edit(&g)
		_, err := g.Plans(out, f.model.Config)
		var se *setting.Error
		if !errors.As(err, &se) || se.Name != c.name {
			t.Errorf("%s: Plans error = %v, want a setting error naming %q", c.name, err, c.name)
		}
	}
}
