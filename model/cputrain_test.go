package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/gemm"
	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/internal/testenv"
)

// The CPU trainer is a second implementation of the training loss and of its gradient with respect to the
// adapters; these tests hold it to GoMLX's autodiff of the graph forward pass (Config.Forward with the same adapter
// as a LinearHook) on the real model and on small random models of every architecture option and weight dtype.

// testLoRA is a low-rank adapter y += s·(x·Aᵀ)·Bᵀ, A [rank, in], B [out, rank], with gradient accumulators, its
// products in float64 (the trainer adds the output and input-gradient products it returns).
type testLoRA struct {
	module        string
	in, out, rank int
	scale         float32
	a, b          []float32
	da, db        []float32
	mid, x        []float32 // the last Forward's x·Aᵀ and x
	log           *[]string
	errs          *[]string
}

func newTestLoRA(rng *rand.Rand, module string, in, out, rank int, log, errs *[]string) *testLoRA {
	l := &testLoRA{module: module, in: in, out: out, rank: rank, scale: 1.5, a: make([]float32, rank*in),
		b: make([]float32, out*rank), da: make([]float32, rank*in), db: make([]float32, out*rank), log: log, errs: errs}
	for i := range l.a {
		l.a[i] = float32(rng.NormFloat64() * 0.15)
	}
	for i := range l.b {
		l.b[i] = float32(rng.NormFloat64() * 0.15)
	}
	return l
}

func (l *testLoRA) fail(format string, args ...any) {
	*l.errs = append(*l.errs, l.module+": "+fmt.Sprintf(format, args...))
}

func (l *testLoRA) Forward(x []float32, rows int) ([]float32, int, gemm.View) {
	*l.log = append(*l.log, "F "+l.module)
	if len(x) != rows*l.in {
		l.fail("Forward with x of %d values for %d rows", len(x), rows)
		return nil, 0, gemm.View{}
	}
	l.x = slices.Clone(x)
	l.mid = make([]float32, rows*l.rank)
	u := make([]float32, rows*l.rank)
	for r := range rows {
		for k := range l.rank {
			var s float64
			for i := range l.in {
				s += float64(x[r*l.in+i]) * float64(l.a[k*l.in+i])
			}
			l.mid[r*l.rank+k] = float32(s)
			u[r*l.rank+k] = l.scale * float32(s)
		}
	}
	return u, l.rank, gemm.RowMajor(l.b, l.rank).T() // s·mid [rows, rank] · Bᵀ [rank, out]
}

func (l *testLoRA) Backward(x, dy []float32, rows int) ([]float32, int, gemm.View) {
	*l.log = append(*l.log, "B "+l.module)
	if len(x) != rows*l.in || len(dy) != rows*l.out {
		l.fail("Backward with x of %d and dy of %d values for %d rows", len(x), len(dy), rows)
		return nil, 0, gemm.View{}
	}
	if !slices.Equal(x, l.x) {
		l.fail("Backward's x is not the x of Forward")
	}
	dmid := make([]float64, rows*l.rank)
	for r := range rows {
		for k := range l.rank {
			var s float64
			for o := range l.out {
				s += float64(dy[r*l.out+o]) * float64(l.b[o*l.rank+k])
			}
			dmid[r*l.rank+k] = float64(l.scale) * s
		}
	}
	for o := range l.out {
		for k := range l.rank {
			var s float64
			for r := range rows {
				s += float64(dy[r*l.out+o]) * float64(l.mid[r*l.rank+k])
			}
			l.db[o*l.rank+k] += float32(float64(l.scale) * s)
		}
	}
	for k := range l.rank {
		for i := range l.in {
			var s float64
			for r := range rows {
				s += dmid[r*l.rank+k] * float64(x[r*l.in+i])
			}
			l.da[k*l.in+i] += float32(s)
		}
	}
	g := make([]float32, len(dmid))
	for i, v := range dmid {
		g[i] = float32(v)
	}
	return g, l.rank, gemm.RowMajor(l.a, l.in) // dmid [rows, rank] · A [rank, in]
}

// trainCase is a batch and a set of adapters for one comparison.
type trainCase struct {
	batch, seq int
	tokens     []int32
	targets    []int32
	weights    []float32
	loras      []*testLoRA // sorted by module
	log, errs  []string
}

// moduleDims are the input and output sizes of a module kind.
func moduleDims(c Config, kind string) (in, out int) {
	q, kv := c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim
	switch kind {
	case "q":
		return c.HiddenSize, q
	case "k", "v":
		return c.HiddenSize, kv
	case "o":
		return q, c.HiddenSize
	case "gate", "up":
		return c.HiddenSize, c.IntermediateSize
	}
	return c.IntermediateSize, c.HiddenSize
}

func modulePath(layer int, kind string) string {
	if kind == "gate" || kind == "up" || kind == "down" {
		return fmt.Sprintf("model.layers.%d.mlp.%s_proj", layer, kind)
	}
	return fmt.Sprintf("model.layers.%d.self_attn.%s_proj", layer, kind)
}

var allKinds = []string{"q", "k", "v", "o", "gate", "up", "down"}

// newTrainCase makes a random batch (some weights 0, some fractional) and adapters on modules "layer:kind".
func newTrainCase(c Config, batch, seq int, seed uint64, modules []string) *trainCase {
	rng := rand.New(rand.NewPCG(seed, 17))
	tc := &trainCase{batch: batch, seq: seq}
	n := batch * seq
	for i := range n {
		tc.tokens = append(tc.tokens, int32(rng.IntN(c.VocabSize)))
		tc.targets = append(tc.targets, int32(rng.IntN(c.VocabSize)))
		w := float32(1)
		switch {
		case i%seq < 3 || rng.IntN(5) == 0:
			w = 0 // a prompt or a padding position
		case rng.IntN(4) == 0:
			w = 0.5
		}
		tc.weights = append(tc.weights, w)
	}
	for _, m := range modules {
		var layer int
		var kind string
		if _, err := fmt.Sscanf(strings.Replace(m, ":", " ", 1), "%d %s", &layer, &kind); err != nil {
			panic(err)
		}
		in, out := moduleDims(c, kind)
		tc.loras = append(tc.loras, newTestLoRA(rng, modulePath(layer, kind), in, out, 3, &tc.log, &tc.errs))
	}
	sort.Slice(tc.loras, func(i, j int) bool { return tc.loras[i].module < tc.loras[j].module })
	return tc
}

func everyModule(layers int) []string {
	var out []string
	for l := range layers {
		for _, k := range allKinds {
			out = append(out, fmt.Sprintf("%d:%s", l, k))
		}
	}
	return out
}

func (tc *trainCase) adapters() map[string]TrainAdapter {
	m := map[string]TrainAdapter{}
	for _, l := range tc.loras {
		m[l.module] = l
	}
	return m
}

// graphLossAndGrads computes the loss and the gradients of every adapter's A and B with GoMLX's autodiff of the
// graph forward pass.
func graphLossAndGrads(t *testing.T, m *Model, tc *trainCase) (float64, [][]float32) {
	t.Helper()
	n, c := len(m.Names), m.Config
	byModule := map[string]int{}
	for i, l := range tc.loras {
		byModule[l.module] = i
	}
	exec, err := NewExec(m.Backend, func(inputs []*Node) []*Node {
		w := m.Weights(inputs[:n])
		params := inputs[n : n+2*len(tc.loras)]
		rest := inputs[n+2*len(tc.loras):]
		tokens, targets, weights := rest[0], rest[1], rest[2]
		hook := func(module string, x, y *Node) *Node {
			i, ok := byModule[module]
			if !ok {
				return y
			}
			l := tc.loras[i]
			dims := x.Shape().Dimensions
			h := DotGeneral(Reshape(x, -1, l.in), []int{1}, nil, params[2*i], []int{1}, nil)
			h = DotGeneral(h, []int{1}, nil, params[2*i+1], []int{1}, nil)
			return Add(y, Reshape(MulScalar(h, float64(l.scale)), append(dims[:len(dims)-1:len(dims)-1], l.out)...))
		}
		logits, _ := c.Forward(w, tokens, ScalarZero(tokens.Graph(), dtypes.Int32), nil, hook)
		logits = Reshape(logits, -1, c.VocabSize)
		best := StopGradient(ReduceAndKeep(logits, ReduceMax, -1))
		lse := Add(Log(ReduceAndKeep(Exp(Sub(logits, best)), ReduceSum, -1)), best)
		target := ReduceAndKeep(Mul(logits, OneHot(targets, c.VocabSize, logits.DType())), ReduceSum, -1)
		sum := ReduceAllSum(Mul(Reshape(Sub(lse, target), -1), weights))
		return append([]*Node{sum}, Gradient(sum, params...)...)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer exec.Finalize()
	float := func(v []float32, dims ...int) *tensors.Tensor {
		if m.DType == dtypes.Float64 {
			wide := make([]float64, len(v))
			for i, x := range v {
				wide[i] = float64(x)
			}
			return tensors.FromFlatDataAndDimensions(wide, dims...)
		}
		return tensors.FromFlatDataAndDimensions(slices.Clone(v), dims...)
	}
	var extra []*tensors.Tensor
	for _, l := range tc.loras {
		extra = append(extra, float(l.a, l.rank, l.in), float(l.b, l.out, l.rank))
	}
	extra = append(extra, tensors.FromFlatDataAndDimensions(slices.Clone(tc.tokens), tc.batch, tc.seq),
		tensors.FromFlatDataAndDimensions(slices.Clone(tc.targets), len(tc.targets)), float(tc.weights, len(tc.weights)))
	out, err := exec.Exec(m.Args(extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := toFloat32(out[0])
	if err != nil {
		t.Fatal(err)
	}
	if m.DType == dtypes.Float64 {
		wide, _ := tensors.CopyFlatData[float64](out[0])
		sum[0] = float32(wide[0])
	}
	var grads [][]float32
	for _, g := range out[1:] {
		v, err := toFloat32(g)
		if err != nil {
			t.Fatal(err)
		}
		grads = append(grads, v)
	}
	return float64(sum[0]), grads
}

// compareTrainer runs LossAndGrad (twice) and Loss on tc and holds them to the graph's loss and gradients computed
// in float64 (m64); the float32 graph's own distance from them is logged.
func compareTrainer(t *testing.T, m, m64 *Model, tc *trainCase) {
	t.Helper()
	want, wantGrads := graphLossAndGrads(t, m64, tc)
	want32, grads32 := graphLossAndGrads(t, m, tc)
	tr, err := m.NewCPUTrainer(tc.adapters(), tc.batch, tc.seq)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	sum, wsum, err := tr.LossAndGrad(tc.tokens, tc.targets, tc.weights)
	if err != nil {
		t.Fatal(err)
	}
	if len(tc.errs) > 0 {
		t.Fatalf("adapter calls: %s", strings.Join(tc.errs, "; "))
	}
	var wantW float64
	for _, w := range tc.weights {
		wantW += float64(w)
	}
	if wsum != wantW {
		t.Errorf("weight sum %g, want %g", wsum, wantW)
	}
	if d := math.Abs(sum-want) / math.Abs(want); d > 1e-5 {
		t.Errorf("loss %.8g, the graph's %.8g (relative difference %.2e > 1e-5)", sum, want, d)
	}
	worst, worst32 := 0.0, 0.0
	for i, l := range tc.loras {
		for j, pair := range [][2][]float32{{l.da, wantGrads[2*i]}, {l.db, wantGrads[2*i+1]}} {
			d := maxRelDiff(pair[0], pair[1])
			worst = max(worst, d)
			worst32 = max(worst32, maxRelDiff(grads32[2*i+j], pair[1]))
			if d > 1e-4 || math.IsNaN(d) {
				t.Errorf("%s d%s: differs from the graph's gradient by %.2e of its scale (> 1e-4)", l.module, "AB"[j:j+1], d)
			}
		}
	}
	t.Logf("loss %.8g (graph %.8g, float32 graph %.8g); worst relative gradient difference %.2e (float32 graph: %.2e) over %d adapters",
		sum, want, want32, worst, worst32, len(tc.loras))
	checkCallOrder(t, tc)

	// Loss: the same sum, no Backward.
	tc.log = tc.log[:0]
	lsum, lw, err := tr.Loss(tc.tokens, tc.targets, tc.weights)
	if err != nil {
		t.Fatal(err)
	}
	if lsum != sum || lw != wsum {
		t.Errorf("Loss gives %v (weights %v), LossAndGrad %v (%v)", lsum, lw, sum, wsum)
	}
	for _, e := range tc.log {
		if strings.HasPrefix(e, "B ") {
			t.Fatalf("Loss called %s's Backward", e[2:])
		}
	}
	if len(tc.log) != len(tc.loras) {
		t.Errorf("Loss made %d adapter calls for %d adapters", len(tc.log), len(tc.loras))
	}

	// A second LossAndGrad: the same sum, bit for bit, and the accumulators exactly double.
	first := make([][2][]float32, len(tc.loras))
	for i, l := range tc.loras {
		first[i] = [2][]float32{slices.Clone(l.da), slices.Clone(l.db)}
	}
	again, _, err := tr.LossAndGrad(tc.tokens, tc.targets, tc.weights)
	if err != nil {
		t.Fatal(err)
	}
	if again != sum {
		t.Errorf("a second LossAndGrad gives %v, the first %v", again, sum)
	}
	for i, l := range tc.loras {
		for j, acc := range [][]float32{l.da, l.db} {
			for k, v := range acc {
				if v != 2*first[i][j][k] {
					t.Fatalf("%s: after two passes accumulator %d[%d] is %v, twice the first pass's is %v", l.module, j, k, v, 2*first[i][j][k])
				}
			}
		}
	}
}

// checkCallOrder checks that one LossAndGrad called every adapter's Forward once in forward order and its Backward
// once in reverse order.
func checkCallOrder(t *testing.T, tc *trainCase) {
	t.Helper()
	kindRank := map[string]int{}
	for i, k := range allKinds {
		kindRank[k] = i
	}
	key := func(module string) int {
		var layer int
		fmt.Sscanf(strings.TrimPrefix(module, "model.layers."), "%d", &layer)
		kind := module[strings.LastIndex(module, ".")+1 : len(module)-len("_proj")]
		return layer*len(allKinds) + kindRank[kind]
	}
	var order []string
	for _, l := range tc.loras {
		order = append(order, l.module)
	}
	sort.Slice(order, func(i, j int) bool { return key(order[i]) < key(order[j]) })
	var want []string
	for _, m := range order {
		want = append(want, "F "+m)
	}
	for i := range order {
		want = append(want, "B "+order[len(order)-1-i])
	}
	if !slices.Equal(tc.log, want) {
		t.Errorf("adapter calls\n%v\nwant\n%v", tc.log, want)
	}
}

func loadStories(t *testing.T) (m, m64 *Model) {
	t.Helper()
	gguf, _ := testenv.Stories260K(t)
	return buildBoth(t, gguf)
}

func TestCPUTrainMatchesGraphOnStories(t *testing.T) {
	if !testbackend.IsGo() {
		t.Skip("the CPU trainer runs on the Go backend only")
	}
	m, m64 := loadStories(t)
	c := m.Config
	t.Logf("stories260K: %d layers, hidden %d, heads %d/%d of %d, ffn %d, vocab %d, tied %v", c.NumLayers,
		c.HiddenSize, c.NumHeads, c.NumKVHeads, c.HeadDim, c.IntermediateSize, c.VocabSize, c.TieEmbeddings)
	t.Run("every module", func(t *testing.T) {
		compareTrainer(t, m, m64, newTrainCase(c, 3, 20, 1, everyModule(c.NumLayers)))
	})
	t.Run("recomputed probabilities and blocks of 7", func(t *testing.T) {
		defer func(b int64, k int) { CPUTrainProbsBytes, cpuTrainBlock = b, k }(CPUTrainProbsBytes, cpuTrainBlock)
		CPUTrainProbsBytes, cpuTrainBlock = 0, 7
		compareTrainer(t, m, m64, newTrainCase(c, 2, 20, 2, []string{"0:q", "1:k", "2:v", "3:o", "4:gate"}))
	})
	// The lowest adapted layer runs only the part of its backward pass its adapters need.
	t.Run("lowest layer mlp only", func(t *testing.T) {
		compareTrainer(t, m, m64, newTrainCase(c, 2, 16, 3, []string{"2:gate", "3:o", "4:down"}))
	})
	t.Run("lowest layer up only", func(t *testing.T) {
		compareTrainer(t, m, m64, newTrainCase(c, 1, 16, 4, []string{"1:up", "3:k"}))
	})
	t.Run("lowest layer o only", func(t *testing.T) {
		compareTrainer(t, m, m64, newTrainCase(c, 2, 16, 5, []string{"1:o", "2:q"}))
	})
	t.Run("lowest layer down only", func(t *testing.T) {
		compareTrainer(t, m, m64, newTrainCase(c, 2, 16, 6, []string{"3:down"}))
	})
	t.Run("no adapters", func(t *testing.T) {
		tc := newTrainCase(c, 2, 16, 7, nil)
		want, _ := graphLossAndGrads(t, m, tc)
		tr, err := m.NewCPUTrainer(nil, tc.batch, tc.seq)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		sum, _, err := tr.LossAndGrad(tc.tokens, tc.targets, tc.weights)
		if err != nil {
			t.Fatal(err)
		}
		if d := math.Abs(sum-want) / math.Abs(want); d > 1e-5 {
			t.Errorf("loss %.8g, the graph's %.8g", sum, want)
		}
	})
}

func TestCPUTrainArchitecturesAndDTypes(t *testing.T) {
	if !testbackend.IsGo() {
		t.Skip("the CPU trainer runs on the Go backend only")
	}
	defer func(k int) { cpuTrainBlock = k }(cpuTrainBlock)
	cpuTrainBlock = 5 // several query blocks, each starting after key 0 within a sliding window
	base := Config{Architecture: "llama", HiddenSize: 44, IntermediateSize: 70, NumLayers: 2, NumHeads: 4,
		NumKVHeads: 2, HeadDim: 12, VocabSize: 61, MaxPositions: 256, RMSNormEps: 1e-5, RopeTheta: 10000,
		TieEmbeddings: true, BOSTokenID: 1, EOSTokenIDs: []int{2}}
	qwen2 := base
	qwen2.Architecture, qwen2.AttentionBias, qwen2.TieEmbeddings, qwen2.NumKVHeads = "qwen2", true, false, 4
	qwen3 := base
	qwen3.Architecture, qwen3.QKNorm, qwen3.TieEmbeddings, qwen3.NumKVHeads, qwen3.RopeTheta = "qwen3", true, false, 1, 1e6
	mistral := base
	mistral.Architecture, mistral.SlidingWindow = "mistral", 5
	modules := append([]string{"0:q", "0:v"}, everyModule(2)[7:]...)
	for _, cfg := range []Config{base, qwen2, qwen3, mistral} {
		for _, dtype := range []string{"F32", "BF16", "F16"} {
			t.Run(cfg.Architecture+"/"+dtype, func(t *testing.T) {
				m, m64 := randomModels(t, cfg, dtype, 9)
				want := map[string]dtypes.DType{"F32": dtypes.Float32, "BF16": dtypes.BFloat16, "F16": dtypes.Float16}[dtype]
				if got := m.Params[slices.Index(m.Names, "model.layers.1.mlp.up_proj.weight")].DType(); got != want {
					t.Fatalf("weights are held as %s, not %s", got, dtype)
				}
				compareTrainer(t, m, m64, newTrainCase(cfg, 2, 12, 11, modules))
			})
		}
	}
}

// randomModels is randomModel built twice: as the CPU trainer runs it (weights in dtype, float32 activations) and
// in float64 (the same weight values), the reference.
func randomModels(t *testing.T, cfg Config, dtype string, seed uint64) (m, m64 *Model) {
	t.Helper()
	return buildBoth(t, writeRandomModel(t, cfg, dtype, seed))
}

// buildBoth builds the checkpoint at path with float32 activations (compute "auto") and in float64.
func buildBoth(t *testing.T, path string) (m, m64 *Model) {
	t.Helper()
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if m, err = New(testbackend.Get(t), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Finalize)
	if m64, err = NewWithDType(testbackend.Get(t), p, dtypes.Float64); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m64.Finalize)
	return m, m64
}

// otherBackend is the Go backend under another name.
type otherBackend struct{ compute.Backend }

func (otherBackend) Name() string { return "xla:cpu" }

func TestCPUTrainErrors(t *testing.T) {
	m, m64 := loadStories(t)
	c := m.Config
	other := *m
	other.Backend = otherBackend{m.Backend}
	if _, err := other.NewCPUTrainer(nil, 1, 4); err == nil || !strings.Contains(err.Error(), "Go backend") {
		t.Errorf("a model on another backend: %v", err)
	}
	if _, err := m64.NewCPUTrainer(nil, 1, 4); err == nil || (testbackend.IsGo() && !strings.Contains(err.Error(), "float32")) {
		t.Errorf("a float64 model: %v", err)
	}
	if !testbackend.IsGo() {
		return
	}
	lora := newTestLoRA(rand.New(rand.NewPCG(1, 1)), "x", c.HiddenSize, c.HiddenSize, 2, new([]string), new([]string))
	for _, module := range []string{"model.layers.0.self_attn.x_proj", fmt.Sprintf("model.layers.%d.mlp.up_proj", c.NumLayers),
		"model.layers.01.mlp.up_proj", "lm_head", "model.layers.-1.mlp.up_proj"} {
		if _, err := m.NewCPUTrainer(map[string]TrainAdapter{module: lora}, 1, 4); err == nil {
			t.Errorf("an adapter on %q was accepted", module)
		}
	}
	if _, err := m.NewCPUTrainer(nil, 0, 4); err == nil {
		t.Error("batch 0 was accepted")
	}
	tr, err := m.NewCPUTrainer(nil, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ok := func() ([]int32, []int32, []float32) {
		return []int32{1, 2, 3, 4, 5, 6, 7, 8}, []int32{2, 3, 4, 5, 6, 7, 8, 9}, []float32{1, 1, 1, 1, 1, 1, 1, 0}
	}
	if _, _, err := tr.LossAndGrad(ok()); err != nil {
		t.Fatal(err)
	}
	v := int32(c.VocabSize)
	for name, mutate := range map[string]func(tok, tg []int32, w []float32) ([]int32, []int32, []float32){
		"short tokens":    func(tok, tg []int32, w []float32) ([]int32, []int32, []float32) { return tok[:7], tg, w },
		"long targets":    func(tok, tg []int32, w []float32) ([]int32, []int32, []float32) { return tok, append(tg, 1), w },
		"short weights":   func(tok, tg []int32, w []float32) ([]int32, []int32, []float32) { return tok, tg, w[:1] },
		"token = vocab":   func(tok, tg []int32, w []float32) ([]int32, []int32, []float32) { tok[3] = v; return tok, tg, w },
		"negative token":  func(tok, tg []int32, w []float32) ([]int32, []int32, []float32) { tok[0] = -1; return tok, tg, w },
		"target = vocab":  func(tok, tg []int32, w []float32) ([]int32, []int32, []float32) { tg[7] = v; return tok, tg, w },
		"negative target": func(tok, tg []int32, w []float32) ([]int32, []int32, []float32) { tg[2] = -5; return tok, tg, w },
		"nil everything":  func(tok, tg []int32, w []float32) ([]int32, []int32, []float32) { return nil, nil, nil },
	} {
		for _, run := range []func([]int32, []int32, []float32) (float64, float64, error){tr.LossAndGrad, tr.Loss} {
			if _, _, err := run(mutate(ok())); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
	}
}

// gemmLoRA is testLoRA's adapter with its products through gemm, for timing.
type gemmLoRA struct {
	in, out, rank int
	scale         float32
	a, b, da, db  []float32
	mid, tmp      []float32
}

func newGemmLoRA(rng *rand.Rand, in, out, rank int) *gemmLoRA {
	l := &gemmLoRA{in: in, out: out, rank: rank, scale: 2, a: make([]float32, rank*in), b: make([]float32, out*rank),
		da: make([]float32, rank*in), db: make([]float32, out*rank)}
	for i := range l.a {
		l.a[i] = float32(rng.NormFloat64() * 0.02)
	}
	for i := range l.b {
		l.b[i] = float32(rng.NormFloat64() * 0.02)
	}
	return l
}

func (l *gemmLoRA) Forward(x []float32, rows int) ([]float32, int, gemm.View) {
	l.mid = slices.Grow(l.mid[:0], rows*l.rank)[:rows*l.rank]
	gemm.Mul(l.mid, l.rank, rows, l.rank, l.in, gemm.RowMajor(x, l.in), gemm.RowMajor(l.a, l.in).T(), false)
	for i := range l.mid {
		l.mid[i] *= l.scale
	}
	return l.mid, l.rank, gemm.RowMajor(l.b, l.rank).T()
}

func (l *gemmLoRA) Backward(x, dy []float32, rows int) ([]float32, int, gemm.View) {
	// dB += dyᵀ·(s·mid); dmid = s·dy·B; dA += dmidᵀ·x; the input gradient is dmid·A.
	gemm.Mul(l.db, l.rank, l.out, l.rank, rows, gemm.RowMajor(dy, l.out).T(), gemm.RowMajor(l.mid, l.rank), true)
	l.tmp = slices.Grow(l.tmp[:0], rows*l.rank)[:rows*l.rank]
	gemm.Mul(l.tmp, l.rank, rows, l.rank, l.out, gemm.RowMajor(dy, l.out), gemm.RowMajor(l.b, l.rank), false)
	for i := range l.tmp {
		l.tmp[i] *= l.scale
	}
	gemm.Mul(l.da, l.in, l.rank, l.in, rows, gemm.RowMajor(l.tmp, l.rank).T(), gemm.RowMajor(x, l.in), true)
	return l.tmp, l.rank, gemm.RowMajor(l.a, l.in)
}

// TestCPUTrainTimes reports where a step's time goes on a mid-size model (hidden 512, 8 layers, ffn 1408, vocab
// 32000, 4×256 tokens, rank-8 adapters on q, k, v and o). It is slow with a slow gemm: set SADDLE_CPUTRAIN_TIMES=N
// (N calls of LossAndGrad; the last one's times are reported).
func TestCPUTrainTimes(t *testing.T) {
	calls, _ := strconv.Atoi(os.Getenv("SADDLE_CPUTRAIN_TIMES"))
	if calls <= 0 || !testbackend.IsGo() {
		t.Skip("set SADDLE_CPUTRAIN_TIMES=<calls> to time the CPU trainer")
	}
	cfg := Config{Architecture: "llama", HiddenSize: 512, IntermediateSize: 1408, NumLayers: 8, NumHeads: 8,
		NumKVHeads: 4, HeadDim: 64, VocabSize: 32000, MaxPositions: 1024, RMSNormEps: 1e-5, RopeTheta: 10000,
		TieEmbeddings: true, BOSTokenID: 1, EOSTokenIDs: []int{2}}
	m := randomModel(t, cfg, "BF16", 3)
	rng := rand.New(rand.NewPCG(1, 2))
	adapters := map[string]TrainAdapter{}
	for l := range cfg.NumLayers {
		for _, k := range []string{"q", "k", "v", "o"} {
			in, out := moduleDims(cfg, k)
			adapters[modulePath(l, k)] = newGemmLoRA(rng, in, out, 8)
		}
	}
	const batch, seq = 4, 256
	tr, err := m.NewCPUTrainer(adapters, batch, seq)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tc := newTrainCase(cfg, batch, seq, 5, nil)
	for i := range tc.weights {
		tc.weights[i] = 1
	}
	t.Logf("trainer buffers %.1f MB (attention probabilities kept: %v), GOMAXPROCS %d", float64(tr.Bytes())/1e6,
		tr.storeProbs, runtime.GOMAXPROCS(0))
	for i := range calls {
		tr.ResetTimes()
		start := time.Now()
		sum, wsum, err := tr.LossAndGrad(tc.tokens, tc.targets, tc.weights)
		if err != nil {
			t.Fatal(err)
		}
		total := time.Since(start)
		tm := tr.Times()
		t.Logf("call %d: %v, loss %.4f per token; matmul %v, head matmul %v, attention %v, adapters %v, "+
			"elementwise %v, loss softmax %v; not matmul (elementwise + softmax) %.1f ms", i, total.Round(time.Millisecond),
			sum/wsum, tm.Matmul.Round(time.Millisecond), tm.HeadMatmul.Round(time.Millisecond),
			tm.Attention.Round(time.Millisecond), tm.Adapters.Round(time.Millisecond),
			tm.Elementwise.Round(time.Millisecond), tm.LossSoftmax.Round(time.Millisecond),
			float64(tm.Elementwise+tm.LossSoftmax)/1e6)
	}
}

// TestCPUTrainExp checks the elementwise kernels (SIMD where built, and the plain loops) against float64 math.
func TestCPUTrainExp(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	x := []float32{0, -0, 1, -1, 88, 87.9, -87.3, -87.4, -100, 100, 1e-30, -1e-30, 0.34657359, -0.34657359}
	for range 1000 {
		x = append(x, float32(rng.NormFloat64()*20), float32(rng.Float64()*-90))
	}
	for len(x)%8 != 0 {
		x = append(x, 0)
	}
	got := slices.Clone(x)
	expSum(got, 0)
	for i, v := range x {
		want, g := math.Exp(float64(v)), float64(got[i])
		// Outside [expLo, expHi] the SIMD kernel gives 0 and exp(expHi) (math.Exp: the float32 rounding).
		clamped := (v < expLo && g < 1.2e-38) || (v > expHi && g >= math.Exp(expHi)*(1-3e-7))
		if math.Abs(g-want) > 3e-7*want && !clamped {
			t.Fatalf("exp(%g) = %g, want %g", v, got[i], want)
		}
	}
	for _, n := range []int{0, 1, 7, 8, 9, 255, 256, 257, 1023, 1024, 1025, 3000} {
		src := make([]float32, n)
		gate, up := make([]float32, n), make([]float32, n)
		for i := range src {
			src[i] = float32(rng.NormFloat64() * 5)
			gate[i], up[i] = float32(rng.NormFloat64()*4), float32(rng.NormFloat64())
		}
		for _, kernels := range []struct {
			name   string
			expSum func([]float32, float32) float64
			maxOf  func([]float32) float32
			swiglu func(act, gate, up []float32)
			back   func(dup, dgate, gate, up, dact []float32)
		}{{"simd", expSum, maxOf, swiglu, swigluBack}, {"go", expSumGo, maxGo, swigluGo, swigluBackGo}} {
			y := slices.Clone(src)
			best := kernels.maxOf(y)
			if want := slices.Max(append([]float32{float32(math.Inf(-1))}, src...)); best != want {
				t.Fatalf("%s: max of %d values %g, want %g", kernels.name, n, best, want)
			}
			sum := kernels.expSum(y, 1.5)
			var want float64
			for i, v := range src {
				e := math.Exp(float64(v - 1.5)) // the difference as the kernels take it, in float32
				want += e
				if math.Abs(float64(y[i])-e) > 3e-7*e {
					t.Fatalf("%s: e^(%g − 1.5) = %g, want %g", kernels.name, v, y[i], e)
				}
			}
			if math.Abs(sum-want) > 4e-6*want {
				t.Fatalf("%s: Σ e^(x − 1.5) over %d values = %g, want %g", kernels.name, n, sum, want)
			}
			act, dup, dgate := make([]float32, n), make([]float32, n), slices.Clone(src)
			kernels.swiglu(act, gate, up)
			kernels.back(dup, dgate, gate, up, dgate) // dgate aliases dact (= src)
			for i, g := range gate {
				s := 1 / (1 + math.Exp(-float64(g)))
				g, u, d := float64(g), float64(up[i]), float64(src[i])
				for _, c := range [][3]float64{{float64(act[i]), g * s * u, 0}, {float64(dup[i]), d * g * s, 1},
					{float64(dgate[i]), d * u * s * (1 + g*(1-s)), 2}} {
					// The scale of the terms before they cancel: float32 rounding is relative to it.
					if math.Abs(c[0]-c[1]) > 1e-6*(math.Abs(g)+1)*(math.Abs(u)+1)*(math.Abs(d)+1) {
						t.Fatalf("%s: SwiGLU value %d at gate %g, up %g, dact %g: %g, want %g", kernels.name, int(c[2]), g, u, d, c[0], c[1])
					}
				}
			}
		}
	}
}

// TestCPUTrainWorkersAgree runs a batch large enough for every elementwise pass to split over the workers with one
// worker and with four (and under -race, which the graph comparisons cannot run under: the Go backend trips
// checkptr), and checks that they agree.
func TestCPUTrainWorkersAgree(t *testing.T) {
	if !testbackend.IsGo() {
		t.Skip("the CPU trainer runs on the Go backend only")
	}
	cfg := Config{Architecture: "mistral", HiddenSize: 128, IntermediateSize: 160, NumLayers: 2, NumHeads: 4,
		NumKVHeads: 2, HeadDim: 32, VocabSize: 300, MaxPositions: 256, RMSNormEps: 1e-6, RopeTheta: 1e6,
		SlidingWindow: 50, BOSTokenID: -1, EOSTokenIDs: []int{0}}
	m := randomModel(t, cfg, "BF16", 4)
	run := func(workers int) (float64, [][]float32) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(workers))
		tc := newTrainCase(cfg, 2, 90, 3, []string{"0:v", "1:q", "1:o", "1:up"})
		tr, err := m.NewCPUTrainer(tc.adapters(), tc.batch, tc.seq)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		if tr.workers != workers {
			t.Fatalf("%d workers, want %d", tr.workers, workers)
		}
		sum, _, err := tr.LossAndGrad(tc.tokens, tc.targets, tc.weights)
		if err != nil {
			t.Fatal(err)
		}
		var grads [][]float32
		for _, l := range tc.loras {
			grads = append(grads, l.da, l.db)
		}
		return sum, grads
	}
	sum1, grads1 := run(1)
	sum4, grads4 := run(4)
	if math.Abs(sum1-sum4) > 1e-6*math.Abs(sum1) {
		t.Errorf("loss with 1 worker %v, with 4 %v", sum1, sum4)
	}
	for i := range grads1 {
		if d := maxRelDiff(grads4[i], grads1[i]); d > 1e-5 {
			t.Errorf("gradient %d: 4 workers differ from 1 by %.2e", i, d)
		}
	}
}

// TestCPUTrainRowKernels checks the norm and softmax-gradient row kernels (SIMD where built) against float64 sums,
// at lengths around the vector width.
func TestCPUTrainRowKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	near := func(what string, n int, got float32, want float64, scale float64) {
		if math.Abs(float64(got)-want) > 1e-5*(scale+1) {
			t.Fatalf("%s, n=%d: got %g, want %g", what, n, got, want)
		}
	}
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 24, 63, 64, 65, 300} {
		a, b, c, d := vec(n), vec(n), vec(n), vec(n)
		var ss, d3, pd, abs float64
		for i := range n {
			ss += float64(a[i]) * float64(a[i])
			d3 += float64(a[i]) * float64(b[i]) * float64(c[i])
			pd += float64(a[i]) * float64(d[i])
			abs += math.Abs(float64(a[i]) * float64(b[i]) * float64(c[i]))
		}
		near("sumSquares", n, sumSquares(a), ss, ss)
		near("dot3", n, dot3(a, b, c), d3, abs)
		dst := vec(n)
		mulScaled(dst, a, b, 0.5)
		for i := range n {
			near("mulScaled", n, dst[i], float64(a[i])*0.5*float64(b[i]), 1)
		}
		for _, set := range []bool{true, false} {
			dx := slices.Clone(d)
			normGrad(dx, a, b, c, 0.7, 0.3, set)
			for i := range n {
				want := 0.7*float64(a[i])*float64(b[i]) - 0.3*float64(c[i])
				if !set {
					want += float64(d[i])
				}
				near("normGrad", n, dx[i], want, 1)
			}
		}
		for _, inverse := range []bool{false, true} {
			x1, x2 := slices.Clone(a), slices.Clone(b)
			cs, sn := vec(n), vec(n)
			ropeHalves(x1, x2, cs, sn, 0.25, inverse)
			for i := range n {
				s := float64(sn[i])
				if inverse {
					s = -s
				}
				near("ropeHalves x1", n, x1[i], (float64(a[i])*float64(cs[i])-float64(b[i])*s)*0.25, 1)
				near("ropeHalves x2", n, x2[i], (float64(b[i])*float64(cs[i])+float64(a[i])*s)*0.25, 1)
			}
		}
		g := slices.Clone(d)
		softmaxBack(a, g)
		for i := range n {
			near("softmaxBack", n, g[i], float64(a[i])*(float64(d[i])-pd), math.Abs(pd)+1)
		}
	}
}
