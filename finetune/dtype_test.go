package finetune

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/safetensors"
	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/model"
)

// bf16Copy writes stories260K-hf with its weights rounded to bf16, as real checkpoints ship, and loads it.
func bf16Copy(t *testing.T) *model.Pretrained {
	t.Helper()
	src := filepath.Dir(testenv.Shared(t, "models", "stories260K-hf", "model.safetensors"))
	p32, err := model.Load(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ts := map[string]safetensors.Tensor{}
	for _, name := range p32.Names() {
		w, err := p32.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		ts[name] = safetensors.Tensor{Shape: w.Shape, Data: w.Data, DType: "BF16"}
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	testenv.CopyTree(t, filepath.Join(src, "config.json"), filepath.Join(dir, "config.json"))
	p, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.DType != "BF16" {
		t.Fatalf("the copy's weights are %s, want BF16", p.DType)
	}
	return p
}

// TestBF16WeightsTrainLikeF32: a bf16 copy of the model, held in bf16 and computed in f32 (the Go backend's only
// correct compute type; bf16 compute is refused there), gives the same first-step loss as the f32 model within
// bf16's precision, and the same escape picture: Adam and sign descent leave the saddle at a small learning rate,
// SGD does not.
func TestBF16WeightsTrainLikeF32(t *testing.T) {
	f := newFixture(t)
	p16 := bf16Copy(t)
	b := testbackend.Get(t)
	models := map[string]*model.Model{"f32": f.model}
	computes := []string{"f32", "bf16"}
	if testbackend.IsGo() {
		computes = computes[:1]
		if _, err := model.NewWithCompute(b, p16, "bf16"); err == nil || !strings.Contains(err.Error(), "wrong results") {
			t.Errorf("bf16 compute on the Go backend: got %v, want a refusal", err)
		}
	}
	for _, compute := range computes {
		m, err := model.NewWithCompute(b, p16, compute)
		if err != nil {
			t.Fatal(err)
		}
		if m.WeightBytes() >= f.model.WeightBytes()*3/5 {
			t.Fatalf("bf16 weights (compute %s) take %d bytes, f32 ones %d: not held in bf16", compute, m.WeightBytes(), f.model.WeightBytes())
		}
		models["bf16/"+compute] = m
	}
	data := f.batcher(t, 4, 64)
	eval := []Batch{data.BatchAt(1000), data.BatchAt(1001)} // fixed, so the escape step does not follow batch noise
	firstLoss := map[string]float64{}
	escape := map[string]*int{}
	for name, m := range models {
		g := fixture{model: m, tok: f.tok}
		for _, opt := range []string{"adam", "sign", "sgd"} {
			cfg := testConfig(t, opt, 1e-4, 30)
			cfg.SeqLen, cfg.EvalEvery = 64, 5
			sum, err := Run(context.Background(), Job{Model: m, Train: data, Eval: eval, Plan: testPlan(t, g, cfg)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			escape[name+" "+opt] = sum.EscapeStep
			if opt == "adam" {
				firstLoss[name] = sum.InitialTrainLoss
			}
			t.Logf("%s %s: first loss %.6f, escape step %v", name, opt, sum.InitialTrainLoss, deref(sum.EscapeStep))
		}
	}
	for _, compute := range computes {
		name := "bf16/" + compute
		rel := math.Abs(firstLoss[name]-firstLoss["f32"]) / firstLoss["f32"]
		if rel > 1e-2 {
			t.Errorf("%s: first-step loss %.6f, f32 %.6f (relative difference %.2e > 1e-2)", name, firstLoss[name], firstLoss["f32"], rel)
		}
		if firstLoss[name] == firstLoss["f32"] {
			t.Errorf("%s: first-step loss equals f32's bit for bit: the bf16 weights were not used", name)
		}
		for _, opt := range []string{"adam", "sign"} {
			if escape[name+" "+opt] == nil || escape["f32 "+opt] == nil {
				t.Errorf("%s: %s escaped at %v, with f32 weights at %v; both should", name, opt, deref(escape[name+" "+opt]), deref(escape["f32 "+opt]))
			}
		}
		if escape[name+" sgd"] != nil || escape["f32 sgd"] != nil {
			t.Errorf("%s: sgd at lr 1e-4 escaped (%v; f32 %v); the saddle should hold it", name, deref(escape[name+" sgd"]), deref(escape["f32 sgd"]))
		}
	}
}
