package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/go-huggingface/models/gguf"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// TestLoadStoriesOracle loads the same model as GGUF (llama.cpp layout, Q/K permuted) and as an independently
// converted HF folder: configs and every weight must agree exactly.
func TestLoadStoriesOracle(t *testing.T) {
	ggufPath, hfPath := testenv.Stories260K(t)
	g, err := loadAll(ggufPath)
	if err != nil {
		t.Fatal(err)
	}
	h, err := loadAll(hfPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(g.ReadAll(), h.ReadAll()); err != nil {
		t.Fatal(err)
	}
	if g.Format != "gguf" || h.Format != "hf" || g.DType != "F32" || h.DType != "F32" {
		t.Errorf("format/dtype: gguf %s/%s, hf %s/%s", g.Format, g.DType, h.Format, h.DType)
	}
	// Expected hyperparameters from the shared README (the model card), not from this code.
	want := Config{Architecture: "llama", HiddenSize: 64, IntermediateSize: 172, NumLayers: 5, NumHeads: 8,
		NumKVHeads: 4, HeadDim: 8, VocabSize: 512, RMSNormEps: 1e-5, RopeTheta: 10000, TieEmbeddings: true,
		BOSTokenID: 1, EOSTokenIDs: []int{2}}
	for _, p := range []*Pretrained{g, h} {
		got := p.Config
		got.MaxPositions = 0 // the GGUF says 2048 (a converter default), config.json 512; checked below
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Errorf("%s config:\n got %+v\nwant %+v", p.Format, got, want)
		}
	}
	if g.Config.MaxPositions != 2048 || h.Config.MaxPositions != 512 {
		t.Errorf("max positions: gguf %d (want 2048), hf %d (want 512)", g.Config.MaxPositions, h.Config.MaxPositions)
	}
	if len(g.Weights) != len(h.Weights) || len(g.Weights) != 2+9*5 {
		t.Fatalf("tensor counts: gguf %d, hf %d, want %d", len(g.Weights), len(h.Weights), 2+9*5)
	}
	for name, hw := range h.Weights {
		gw, ok := g.Weights[name]
		if !ok {
			t.Errorf("gguf lacks %s", name)
			continue
		}
		if !slices.Equal(gw.Shape, hw.Shape) {
			t.Errorf("%s: shape gguf %v, hf %v", name, gw.Shape, hw.Shape)
			continue
		}
		for i := range hw.Data {
			if math.Float32bits(gw.Data[i]) != math.Float32bits(hw.Data[i]) {
				t.Errorf("%s[%d]: gguf %g, hf %g", name, i, gw.Data[i], hw.Data[i])
				break
			}
		}
	}
}

// TestStoriesGGUFIsPermuted makes sure the oracle test can fail: the raw GGUF q/k rows, read by the
// go-huggingface reader, are LlamaCppPermute of the HF rows and differ from them.
func TestStoriesGGUFIsPermuted(t *testing.T) {
	ggufPath, hfPath := testenv.Stories260K(t)
	h, err := loadAll(hfPath)
	if err == nil {
		err = h.ReadAll()
	}
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(ggufPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := gguf.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, c := range []struct {
		gguf, hf string
		heads    int
	}{{"blk.2.attn_q.weight", "model.layers.2.self_attn.q_proj.weight", 8}, {"blk.2.attn_k.weight", "model.layers.2.self_attn.k_proj.weight", 4}} {
		raw, _, err := r.ReadTensorRaw(c.gguf)
		if err != nil {
			t.Fatal(err)
		}
		rawF := make([]float32, len(raw)/4)
		for i := range rawF {
			rawF[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		hw := h.Weights[c.hf]
		if slices.Equal(rawF, hw.Data) {
			t.Errorf("%s: raw GGUF rows equal HF rows; the oracle would not detect a missing un-permutation", c.gguf)
		}
		p, err := LlamaCppPermute(hw, c.heads)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rawF, p.Data) {
			t.Errorf("%s: LlamaCppPermute(HF) differs from the GGUF rows", c.gguf)
		}
	}
}

func TestPermuteRowsSmall(t *testing.T) {
	// 2 heads of head_dim 4, 1 column: HF rows per head are (x0, x1 | y0, y1) with pairs (x_j, y_j);
	// llama.cpp interleaves them as (x0, y0, x1, y1).
	hf := &Tensor{Shape: []int{8}, Data: []float32{0, 1, 10, 11, 100, 101, 110, 111}}
	want := []float32{0, 10, 1, 11, 100, 110, 101, 111}
	p, err := LlamaCppPermute(hf, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Data, want) {
		t.Errorf("permute: got %v, want %v", p.Data, want)
	}
	u, err := LlamaCppUnpermute(p, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(u.Data, hf.Data) {
		t.Errorf("unpermute: got %v, want %v", u.Data, hf.Data)
	}
	if _, err := LlamaCppPermute(hf, 3); err == nil {
		t.Error("8 rows into 3 heads: no error")
	}
}

func TestRopeInverseFrequencies(t *testing.T) {
	base := []float64{1, 0.1, 0.01, 0.001} // 10000^(-2i/8)
	c := Config{HeadDim: 8, RopeTheta: 10000}
	check := func(name string, want []float64) {
		t.Helper()
		got, err := c.RopeInverseFrequencies()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-12*want[i] {
				t.Errorf("%s: inv_freq[%d] = %g, want %g", name, i, got[i], want[i])
			}
		}
	}
	check("plain", base)
	c.RopeScaling = &RopeScaling{Type: "linear", Factor: 4}
	check("linear", []float64{0.25, 0.025, 0.0025, 0.00025})
	// llama3 with original 1024, low 1, high 4: wavelengths 2π/f = 6.28, 62.8 (< 256: kept), 628 (smoothed),
	// 6283 (> 1024: divided by the factor 8). Smooth factor from transformers' formula.
	c.RopeScaling = &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 1024}
	s := (1024/(2*math.Pi/0.01) - 1) / (4 - 1)
	check("llama3", []float64{1, 0.1, (1-s)*0.01/8 + s*0.01, 0.001 / 8})
	c.RopeScaling = &RopeScaling{Type: "freq_factors", FreqFactors: []float64{1, 2, 4, 8}}
	check("freq_factors", []float64{1, 0.05, 0.0025, 0.000125})
	c.RopeScaling = &RopeScaling{Type: "yarn", Factor: 4}
	if _, err := c.RopeInverseFrequencies(); err == nil {
		t.Error("yarn: no error")
	}
}

// synthConfig is a small model whose rows are whole Q8_0 blocks.
func synthConfig(arch string) Config {
	c := Config{Architecture: arch, HiddenSize: 64, IntermediateSize: 96, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
		HeadDim: 16, VocabSize: 40, MaxPositions: 128, RMSNormEps: 1e-6, RopeTheta: 500000, BOSTokenID: 1,
		EOSTokenIDs: []int{2}}
	switch arch {
	case "qwen2":
		c.AttentionBias = true
	case "qwen3":
		c.QKNorm = true
		c.HeadDim = 32 // ≠ hidden/heads, as in real Qwen3
	}
	return c
}

// synthWeights fills every tensor of c with deterministic random values.
func synthWeights(c Config, seed uint64) map[string]*Tensor {
	rng := rand.New(rand.NewPCG(seed, 7))
	w := map[string]*Tensor{}
	for name, shape := range c.ExpectedShapes() {
		n := 1
		for _, d := range shape {
			n *= d
		}
		t := &Tensor{Shape: slices.Clone(shape), Data: make([]float32, n)}
		for i := range t.Data {
			t.Data[i] = float32(rng.NormFloat64() * 0.5)
		}
		w[name] = t
	}
	return w
}

// loadAs loads path and checks its config, storage dtype, format and path.
func loadAs(t *testing.T, path, format, dtype string, want Config) *Pretrained {
	t.Helper()
	p, err := loadAll(path)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", p.Config) != fmt.Sprintf("%+v", want) {
		t.Errorf("config:\n got %+v\nwant %+v", p.Config, want)
	}
	if p.DType != dtype || p.Format != format || p.Path != path {
		t.Errorf("dtype %q format %q path %q", p.DType, p.Format, p.Path)
	}
	return p
}

// compareWeights checks got against want with a per-element tolerance function.
func compareWeights(t *testing.T, got, want map[string]*Tensor, tol func(name string, w float32) float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d tensors, want %d", len(got), len(want))
	}
	for name, wt := range want {
		gt, ok := got[name]
		if !ok {
			t.Errorf("missing %s", name)
			continue
		}
		if !slices.Equal(gt.Shape, wt.Shape) {
			t.Errorf("%s: shape %v, want %v", name, gt.Shape, wt.Shape)
			continue
		}
		for i, v := range wt.Data {
			if d := math.Abs(float64(gt.Data[i] - v)); d > tol(name, v) {
				t.Errorf("%s[%d] = %g, want %g (diff %g)", name, i, gt.Data[i], v, d)
				break
			}
		}
	}
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one mentioning %q", parts)
	}
	t.Logf("error: %v", err)
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

func TestLoadNotAModel(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.bin")
	os.WriteFile(p, []byte("hello world"), 0o644)
	_, err := loadAll(p)
	wantErr(t, err, p, "neither")
	_, err = loadAll(filepath.Join(dir, "absent"))
	wantErr(t, err, "absent")
	_, err = loadAll(dir) // a folder without config.json
	wantErr(t, err, "config.json")
}
