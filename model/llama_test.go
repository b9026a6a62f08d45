package model_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/tokenizer"
)

const storiesGreedy = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."

func newBackend(t testing.TB) compute.Backend {
	t.Helper()
	return testbackend.Get(t)
}

func loadModel(t testing.TB, path string) *model.Model {
	t.Helper()
	p, err := model.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(newBackend(t), p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func greedy(t *testing.T, m *model.Model, prompt []int, n int) []int {
	t.Helper()
	d, err := m.NewDecoder(len(prompt)+n, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out, err := model.Generate(d, prompt, n, model.NewSampler(model.Sampling{}), []int{1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGreedyStoriesGGUFAndHFAgree(t *testing.T) {
	gguf, hf := testenv.Stories260K(t)
	tok, err := tokenizer.FromFile(filepath.Join(hf, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	fromGGUF := greedy(t, loadModel(t, gguf), []int{1}, 60)
	fromHF := greedy(t, loadModel(t, hf), []int{1}, 60)
	if !slices.Equal(fromGGUF, fromHF) {
		t.Fatalf("GGUF and HF greedy tokens differ:\n%v\n%v", fromGGUF, fromHF)
	}
	text := tok.Decode(fromGGUF, true)
	if !strings.HasPrefix(text, storiesGreedy) {
		t.Fatalf("greedy text %q does not begin with %q", text, storiesGreedy)
	}
}

func softmax(logits []float32) []float64 {
	mx := float64(slices.Max(logits))
	p := make([]float64, len(logits))
	var z float64
	for i, v := range logits {
		p[i] = math.Exp(float64(v) - mx)
		z += p[i]
	}
	for i := range p {
		p[i] /= z
	}
	return p
}

func TestNextTokenProbabilityOfComma(t *testing.T) {
	_, hf := testenv.Stories260K(t)
	tok, err := tokenizer.FromFile(filepath.Join(hf, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode("Once upon a time", true)
	comma := tok.Encode(",", false)
	// SentencePiece encodes a lone "," as "▁,"; the continuation token is the bare ",".
	commaID := -1
	for id := range tok.VocabSize() {
		if tok.TokenString(id) == "," {
			commaID = id
		}
	}
	if commaID < 0 {
		t.Fatalf("no bare ',' token in the vocabulary (lone encode gives %v)", comma)
	}
	logits, err := loadModel(t, hf).Logits(toInt32(ids))
	if err != nil {
		t.Fatal(err)
	}
	p := softmax(logits[len(ids)-1])[commaID]
	if p < 0.96 || p > 0.98 {
		t.Fatalf("P(',' | 'Once upon a time') = %.4f, want 0.96–0.98", p)
	}
	t.Logf("P(',' | 'Once upon a time') = %.4f", p)
}

func toInt32(ids []int) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

// TestKVCacheMatchesFullForward compares prefill + one-token steps against the full-sequence forward. In float64
// both paths agree to rounding; in float32 they differ only by summation order in differently shaped matmuls.
func TestKVCacheMatchesFullForward(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	p, err := model.Load(gguf)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dtype dtypes.DType
		tol   float64
	}{{dtypes.Float64, 1e-5}, {dtypes.Float32, testbackend.Tol(t, 1e-4)}} {
		m, err := model.NewWithDType(newBackend(t), p, tc.dtype)
		if err != nil {
			t.Fatal(err)
		}
		seq := []int{1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338}
		full, err := m.Logits(toInt32(seq))
		if err != nil {
			t.Fatal(err)
		}
		d, err := m.NewDecoder(64, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		// A prefill of 5 tokens (padded to 8), then one token at a time.
		got := map[int][]float32{}
		if got[4], err = d.Prefill(seq[:5]); err != nil {
			t.Fatal(err)
		}
		for i := 5; i < len(seq); i++ {
			if got[i], err = d.Step(seq[i]); err != nil {
				t.Fatal(err)
			}
		}
		d.Close()
		worst := 0.0
		for pos, l := range got {
			for j := range l {
				worst = max(worst, math.Abs(float64(l[j]-full[pos][j])))
			}
		}
		if worst > tc.tol {
			t.Fatalf("%s: KV-cached logits differ from the full forward by %g (> %g)", tc.dtype, worst, tc.tol)
		}
		t.Logf("%s: max |cached - full| = %g", tc.dtype, worst)
	}
}

// TestBlockGradientFiniteDifferences checks autodiff through one transformer block (attention with GQA and rotary,
// SwiGLU MLP, both RMSNorms, q/k norms and biases) in float64 against central finite differences.
func TestBlockGradientFiniteDifferences(t *testing.T) {
	cfg := model.Config{Architecture: "qwen3", HiddenSize: 8, IntermediateSize: 12, NumLayers: 1, NumHeads: 4,
		NumKVHeads: 2, HeadDim: 4, VocabSize: 11, MaxPositions: 16, RMSNormEps: 1e-6, RopeTheta: 10000,
		TieEmbeddings: true, AttentionBias: true, QKNorm: true}
	names, values := tinyWeights(cfg, 1)
	checkHiddenGradient(t, cfg, names, values, []int32{3, 7, 1, 9, 4}, 2)
}

// checkHiddenGradient compares autodiff with central finite differences, in float64, for the loss
// Σ hidden·probe (a fixed random probe) at three entries of every weight: the first, the one at len/at, the last.
func checkHiddenGradient(t *testing.T, cfg model.Config, names []string, values [][]float64, tokens []int32, at int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	probe := make([]float64, len(tokens)*cfg.HiddenSize)
	for i := range probe {
		probe[i] = rng.NormFloat64()
	}
	shapesByName := cfg.ExpectedShapes()
	lossOf := func(inputs []*Node) *Node {
		w := model.Weights{Nodes: map[string]*Node{}}
		for i, n := range names {
			w.Nodes[n] = inputs[i]
		}
		tok := inputs[len(names)]
		h := cfg.Hidden(w, tok, ScalarZero(tok.Graph(), dtypes.Int32), nil, nil)
		return ReduceAllSum(Mul(h, Reshape(Const(tok.Graph(), probe), 1, len(tokens), cfg.HiddenSize)))
	}
	args := func() []any {
		a := make([]any, 0, len(names)+1)
		for i, n := range names {
			a = append(a, tensors.FromFlatDataAndDimensions(slices.Clone(values[i]), shapesByName[n]...))
		}
		return append(a, tensors.FromFlatDataAndDimensions(tokens, 1, len(tokens)))
	}
	b := newBackend(t)
	lossExec := MustNewExec(b, func(inputs []*Node) *Node { return lossOf(inputs) })
	gradExec := MustNewExec(b, func(inputs []*Node) []*Node {
		return Gradient(lossOf(inputs), inputs[:len(names)]...)
	})
	grads := gradExec.MustExec(args()...)
	loss := func() float64 { return lossExec.MustExec(args()...)[0].Value().(float64) }
	const eps = 1e-6
	checked := 0
	for i, n := range names {
		analytic := tensors.MustCopyFlatData[float64](grads[i])
		for _, j := range []int{0, len(values[i]) / at, len(values[i]) - 1} {
			orig := values[i][j]
			values[i][j] = orig + eps
			up := loss()
			values[i][j] = orig - eps
			down := loss()
			values[i][j] = orig
			numeric := (up - down) / (2 * eps)
			if diff := math.Abs(numeric - analytic[j]); diff > 1e-6*max(1, math.Abs(numeric)) {
				t.Errorf("%s[%d]: autodiff %.9g, finite differences %.9g", n, j, analytic[j], numeric)
			}
			checked++
		}
	}
	t.Logf("checked %d gradient entries over %d tensors", checked, len(names))
}
