package model

import (
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/internal/testenv"
)

// The CPU decoder is a second implementation of the forward pass (no graph); these tests hold it to the graph
// Decoder's logits, step by step, on the real model and on small random models of every architecture option, with
// weights held in f32, bf16 and f16, with adapters, and with several sequences fed at once.

// randomModel writes a random-weight HF folder of cfg with weights stored as dtype and builds it.
func randomModel(t *testing.T, cfg Config, dtype string, seed uint64) *Model {
	t.Helper()
	dir := writeRandomModel(t, cfg, dtype, seed)
	p, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.Config.AttentionBias != cfg.AttentionBias || p.Config.QKNorm != cfg.QKNorm || p.Config.SlidingWindow != cfg.SlidingWindow {
		t.Fatalf("the written config loads as %+v", p.Config)
	}
	m, err := New(testbackend.Get(t), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Finalize)
	return m
}

// writeRandomModel writes a random-weight HF folder of cfg (values drawn in weight-name order from seed) with the
// weights stored as dtype, and returns it.
func writeRandomModel(t *testing.T, cfg Config, dtype string, seed uint64) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	weights := map[string]*Tensor{}
	shapes := cfg.ExpectedShapes()
	for _, name := range slices.Sorted(maps.Keys(shapes)) {
		shape := shapes[name]
		n := 1
		for _, d := range shape {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(rng.NormFloat64() * 0.3)
			if len(shape) == 1 {
				data[i] += 1
			}
		}
		weights[name] = &Tensor{Shape: shape, Data: data}
	}
	js := hfConfigJSON(cfg)
	if cfg.SlidingWindow > 0 {
		js["sliding_window"] = cfg.SlidingWindow
	}
	dir := t.TempDir()
	writeHFModel(t, dir, js, weights, dtype, 1)
	return dir
}

// maxRelDiff is max |a−b| over max |b|.
func maxRelDiff(a, b []float32) float64 {
	var d, scale float64
	for i := range b {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
		scale = max(scale, math.Abs(float64(b[i])))
	}
	return d / scale
}

// lowRankHook is the graph version of the CPU decoder's adapters.
func lowRankHook(adapters map[string]*LowRank) func([]*Node) LinearHook {
	return func([]*Node) LinearHook {
		return func(module string, x, y *Node) *Node {
			a := adapters[module]
			if a == nil {
				return y
			}
			g := x.Graph()
			A := Const(g, tensors.FromFlatDataAndDimensions(a.A, a.Rank, a.In))
			B := Const(g, tensors.FromFlatDataAndDimensions(a.B, a.Out, a.Rank))
			dims := x.Shape().Dimensions
			h := DotGeneral(Reshape(x, -1, a.In), []int{1}, nil, A, []int{1}, nil)
			h = DotGeneral(h, []int{1}, nil, B, []int{1}, nil)
			return Add(y, Reshape(MulScalar(h, float64(a.Scale)), append(dims[:len(dims)-1:len(dims)-1], a.Out)...))
		}
	}
}

// compareDecoders feeds prompt and then greedy tokens to both decoders, checking the logits after every step.
func compareDecoders(t *testing.T, m *Model, adapters map[string]*LowRank, prompt []int, steps int, tol float64) {
	t.Helper()
	capacity := len(prompt) + steps
	var hook func([]*Node) LinearHook
	if adapters != nil {
		hook = lowRankHook(adapters)
	}
	g, err := m.NewDecoder(capacity, hook, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	c, err := m.NewCPUDecoder(capacity, 1, adapters)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want, err := g.Prefill(prompt)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Feed([]int{0}, [][]int{prompt})
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for step := 0; ; step++ {
		d := maxRelDiff(got[0], want)
		worst = max(worst, d)
		if d > tol {
			t.Fatalf("step %d: CPU decoder logits differ from the graph's by %.2e of their scale (> %.0e)", step, d, tol)
		}
		if step == steps {
			break
		}
		next := argmax(want)
		if want, err = g.Step(next); err != nil {
			t.Fatal(err)
		}
		if got, err = c.Feed([]int{0}, [][]int{{next}}); err != nil {
			t.Fatal(err)
		}
	}
	if c.PosOf(0) != capacity || g.Pos() != capacity {
		t.Fatalf("positions: CPU %d, graph %d, want %d", c.PosOf(0), g.Pos(), capacity)
	}
	t.Logf("worst relative logit difference %.2e", worst)
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

func randomLowRank(rng *rand.Rand, in, out, rank int) *LowRank {
	a := &LowRank{Rank: rank, In: in, Out: out, Scale: 2, A: make([]float32, rank*in), B: make([]float32, out*rank)}
	for i := range a.A {
		a.A[i] = float32(rng.NormFloat64() * 0.2)
	}
	for i := range a.B {
		a.B[i] = float32(rng.NormFloat64() * 0.2)
	}
	return a
}

func TestCPUDecoderMatchesGraphOnStories(t *testing.T) {
	if !testbackend.IsGo() {
		t.Skip("the CPU decoder runs on the Go backend only")
	}
	gguf, _ := testenv.Stories260K(t)
	p, err := Load(gguf)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(testbackend.Get(t), p)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Finalize()
	compareDecoders(t, m, nil, []int{1, 403, 407, 261, 378, 30, 290, 301, 262, 300, 270, 265, 280}, 40, 1e-4)
	// A prompt of two passes (64 + 36 positions), more than one group of x rows per matrix in each.
	long := []int{1}
	for i := range 99 {
		long = append(long, 3+(i*37)%500)
	}
	compareDecoders(t, m, nil, long, 5, 1e-4)
	rng := rand.New(rand.NewPCG(3, 4))
	c := m.Config
	adapters := map[string]*LowRank{
		"model.layers.0.self_attn.q_proj": randomLowRank(rng, c.HiddenSize, c.NumHeads*c.HeadDim, 4),
		"model.layers.3.mlp.down_proj":    randomLowRank(rng, c.IntermediateSize, c.HiddenSize, 4),
	}
	t.Run("adapter", func(t *testing.T) { compareDecoders(t, m, adapters, []int{1, 403, 407}, 20, 1e-4) })
}

func TestCPUDecoderArchitecturesAndDTypes(t *testing.T) {
	if !testbackend.IsGo() {
		t.Skip("the CPU decoder runs on the Go backend only")
	}
	base := Config{Architecture: "llama", HiddenSize: 44, IntermediateSize: 70, NumLayers: 2, NumHeads: 4,
		NumKVHeads: 2, HeadDim: 12, VocabSize: 61, MaxPositions: 256, RMSNormEps: 1e-5, RopeTheta: 10000,
		TieEmbeddings: true, BOSTokenID: 1, EOSTokenIDs: []int{2}}
	qwen2 := base
	qwen2.Architecture, qwen2.AttentionBias, qwen2.TieEmbeddings = "qwen2", true, false
	qwen3 := base
	qwen3.Architecture, qwen3.QKNorm, qwen3.TieEmbeddings = "qwen3", true, false
	mistral := base
	mistral.Architecture, mistral.SlidingWindow = "mistral", 5
	rng := rand.New(rand.NewPCG(5, 6))
	prompt := []int{1, 7, 33, 9, 12, 60, 4, 18, 5, 22, 41}
	for _, cfg := range []Config{base, qwen2, qwen3, mistral} {
		for _, dtype := range []string{"F32", "BF16", "F16"} {
			t.Run(cfg.Architecture+"/"+dtype, func(t *testing.T) {
				m := randomModel(t, cfg, dtype, 9)
				want := map[string]dtypes.DType{"F32": dtypes.Float32, "BF16": dtypes.BFloat16, "F16": dtypes.Float16}[dtype]
				if w, _ := m.matrix("model.layers.1.mlp.up_proj.weight"); w == nil || m.Params[slices.Index(m.Names, "model.layers.1.mlp.up_proj.weight")].DType() != want {
					t.Fatalf("weights are not held as %s", dtype)
				}
				var adapters map[string]*LowRank
				if dtype == "BF16" {
					adapters = map[string]*LowRank{"model.layers.1.self_attn.v_proj": randomLowRank(rng, cfg.HiddenSize, cfg.NumKVHeads*cfg.HeadDim, 3)}
				}
				compareDecoders(t, m, adapters, prompt, 12, 1e-4)
			})
		}
	}
}

// TestCPUDecoderBatch feeds three prompts of different lengths together, then steps them together, and checks each
// sequence's logits against decoding it alone with the graph.
func TestCPUDecoderBatch(t *testing.T) {
	if !testbackend.IsGo() {
		t.Skip("the CPU decoder runs on the Go backend only")
	}
	cfg := Config{Architecture: "qwen3", HiddenSize: 32, IntermediateSize: 48, NumLayers: 2, NumHeads: 4,
		NumKVHeads: 1, HeadDim: 8, VocabSize: 50, MaxPositions: 128, RMSNormEps: 1e-6, RopeTheta: 1e6,
		QKNorm: true, BOSTokenID: -1, EOSTokenIDs: []int{0}}
	m := randomModel(t, cfg, "BF16", 11)
	prompts := [][]int{{3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {20}, {30, 31, 32}}
	const steps = 6
	c, err := m.NewCPUDecoder(len(prompts[0])+steps, len(prompts), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Feed([]int{0, 1, 2}, prompts)
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([][]int, len(prompts))
	for s := 0; s <= steps; s++ {
		next := make([][]int, len(prompts))
		for i := range prompts {
			tokens[i] = append(tokens[i], argmax(got[i]))
			next[i] = tokens[i][len(tokens[i])-1:]
		}
		if s == steps {
			break
		}
		if got, err = c.Feed([]int{2, 0, 1}, [][]int{next[2], next[0], next[1]}); err != nil {
			t.Fatal(err)
		}
		got = [][]float32{got[1], got[2], got[0]}
	}
	for i, prompt := range prompts {
		g, err := m.NewDecoder(len(prompt)+steps, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		logits, err := g.Prefill(prompt)
		if err != nil {
			t.Fatal(err)
		}
		for s := range steps + 1 {
			if next := argmax(logits); next != tokens[i][s] {
				t.Fatalf("sequence %d step %d: batched CPU decoding chose %d, the graph alone %d", i, s, tokens[i][s], next)
			}
			if s < steps {
				if logits, err = g.Step(tokens[i][s]); err != nil {
					t.Fatal(err)
				}
			}
		}
		g.Close()
	}
	if _, err := c.Feed([]int{0, 0}, [][]int{{1}, {2}}); err == nil {
		t.Error("feeding one slot twice in a pass was accepted")
	}
	if _, err := c.Feed([]int{1}, [][]int{{cfg.VocabSize}}); err == nil {
		t.Error("a token outside the vocabulary was accepted")
	}
	if _, err := c.Feed([]int{1}, [][]int{make([]int, len(prompts[0])+steps)}); err == nil {
		t.Error("overflowing the capacity was accepted")
	}
}

func TestCPUDecoderRefusesFloat64(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	p, err := Load(gguf)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewWithDType(testbackend.Get(t), p, dtypes.Float64)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Finalize()
	if _, err := m.NewCPUDecoder(8, 1, nil); err == nil {
		t.Fatal("a float64 model got a CPU decoder")
	}
}
