package lora

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/dtypes/float16"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/model"
)

var (
	pretrainedMu    sync.Mutex
	pretrainedCache = map[string]*model.Pretrained{}
)

func loadBase(t *testing.T, path string) *model.Pretrained {
	t.Helper()
	pretrainedMu.Lock()
	defer pretrainedMu.Unlock()
	if p := pretrainedCache[path]; p != nil {
		return p
	}
	p, err := model.Load(path)
	if err == nil {
		err = p.ReadAll()
	}
	if err != nil {
		t.Fatal(err)
	}
	pretrainedCache[path] = p
	return p
}

// trainedSet is a trained-looking adapter: every factor non-zero ("small" init at λ = 0.1), so ΔW ≠ 0.
func trainedSet(t *testing.T, cfg model.Config, depth int, mutate func(*Spec)) *Set {
	t.Helper()
	s := DefaultSpec()
	s.Init, s.Scale, s.Depth, s.Seed, s.Alpha = "small", 0.1, depth, 11, 64
	if depth > 2 {
		s.Alpha = 640 // the inner factors are 0.1·I: keep ΔW as large as at depth 2
	}
	if mutate != nil {
		mutate(&s)
	}
	set, err := Attach(cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

var storyTokens = []int32{1, 403, 407, 261, 378, 30, 324, 295, 261, 437, 511, 452, 259, 46, 376, 294, 288}

func hookOf(set *Set) func([]*Node) model.LinearHook {
	return func(p []*Node) model.LinearHook { return set.Hook(p, nil) }
}

// wideTensors is set.Tensors() in float64, for a float64 model.
func wideTensors(set *Set) []*tensors.Tensor {
	var out []*tensors.Tensor
	for _, a := range set.Adapters {
		for i, f := range a.Factors {
			out = append(out, tensors.FromFlatDataAndDimensions(toF64(f), a.FactorShape(i, set.Spec.Depth, set.Spec.Rank)...))
		}
	}
	return out
}

// logits runs the model from weights with an optional adapter, in float64: the float32 weights and factors are
// exact there, so what remains of a difference is the export's own rounding, not the runtime's.
func logits(t *testing.T, p *model.Pretrained, weights map[string]*model.Tensor, set *Set) [][]float32 {
	t.Helper()
	q := *p
	if weights != nil {
		q.Weights = weights
	}
	m, err := model.NewWithDType(testbackend.Get(t), &q, dtypes.Float64)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]float32
	if set == nil {
		out, err = m.Logits(storyTokens)
	} else {
		out, err = m.LogitsWith(storyTokens, hookOf(set), wideTensors(set))
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func maxDiff(a, b [][]float32) float64 {
	d := 0.0
	for i := range a {
		for j := range a[i] {
			d = max(d, math.Abs(float64(a[i][j])-float64(b[i][j])))
		}
	}
	return d
}

// checkAdapterMatters makes sure the adapter moves the logits far more than the tolerances used against it.
// writeAndLoad writes the merge of set into p with write (WriteMergedHF or WriteMergedGGUF) at path and loads
// the result.
func writeAndLoad(t *testing.T, write func(string, *model.Pretrained, *Set, MergeOptions) error, path string,
	p *model.Pretrained, set *Set, opts MergeOptions) *model.Pretrained {
	t.Helper()
	if err := write(path, p, set, opts); err != nil {
		t.Fatal(err)
	}
	q, err := model.Load(path)
	if err == nil {
		err = q.ReadAll()
	}
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func checkAdapterMatters(t *testing.T, base, adapted [][]float32) {
	t.Helper()
	d := maxDiff(base, adapted)
	t.Logf("the adapter moves logits by up to %g", d)
	if d < 1e-2 {
		t.Fatalf("the adapter changes logits by only %g: the comparisons would not see a lost adapter", d)
	}
}

func TestPEFTExportImportGivesTheSameLogits(t *testing.T) {
	_, hf := testenv.Stories260K(t)
	p := loadBase(t, hf)
	base := logits(t, p, nil, nil)
	for _, c := range []struct {
		name   string
		depth  int
		mutate func(*Spec)
	}{
		{"depth2", 2, nil},
		{"depth3-rslora", 3, func(s *Spec) { s.RSLoRA = true; s.Alpha = 160 }},
		{"depth2-layers", 2, func(s *Spec) { s.Targets, s.Layers = []string{"all-linear"}, []int{1, 3} }},
		{"depth2-grid-breaking-glob", 2, func(s *Spec) { s.Targets = []string{"q_proj", "model.layers.2.mlp.down_proj"} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			set := trainedSet(t, p.Config, c.depth, c.mutate)
			want := logits(t, p, nil, set)
			checkAdapterMatters(t, base, want)
			dir := t.TempDir()
			if err := WritePEFT(dir, set, PEFTOptions{BaseModel: hf, NumLayers: p.Config.NumLayers}); err != nil {
				t.Fatal(err)
			}
			got, err := LoadAny(dir, p.Config)
			if err != nil {
				t.Fatal(err)
			}
			// rsLoRA comes back as plain LoRA with α·√r (what the export writes for llama.cpp's converter): same scale.
			if s, w := got.Spec.Scaling(), set.Spec.Scaling(); got.Spec.Depth != 2 || got.Spec.Rank != set.Spec.Rank || got.Spec.RSLoRA || math.Abs(s-w) > 1e-12*w {
				t.Fatalf("imported spec %+v, exported %+v", got.Spec, set.Spec)
			}
			if len(got.Adapters) != len(set.Adapters) {
				t.Fatalf("imported %d adapters, exported %d", len(got.Adapters), len(set.Adapters))
			}
			for i, a := range set.Adapters {
				A, B := a.Fold(set.Spec.Depth, set.Spec.Rank)
				g := got.Adapters[i]
				if g.Module != a.Module || !slices.Equal(g.Factors[0], A) || !slices.Equal(g.Factors[1], B) {
					t.Fatalf("%s: imported factors differ from the folded export", a.Module)
				}
			}
			gotLogits := logits(t, p, nil, got)
			if c.depth == 2 {
				// Same factors, same graph: bit for bit.
				if d := maxDiff(gotLogits, want); d != 0 {
					t.Fatalf("imported adapter logits differ by %g", d)
				}
			} else if d := maxDiff(gotLogits, want); d > 1e-5 {
				// Folding B·M changes the float32 rounding order only.
				t.Fatalf("imported folded adapter logits differ by %g", d)
			}
			if c.name == "depth2-grid-breaking-glob" {
				var pc PEFTConfig
				data, _ := os.ReadFile(filepath.Join(dir, PEFTConfigFile))
				json.Unmarshal(data, &pc)
				if _, ok := pc.TargetModules.(string); !ok {
					t.Fatalf("modules that are not a (layers × names) grid need a regex target_modules, got %v", pc.TargetModules)
				}
			}
		})
	}
}

func TestMergedExportsLoadAsPlainModels(t *testing.T) {
	gguf, hf := testenv.Stories260K(t)
	for _, basePath := range []string{hf, gguf} {
		p := loadBase(t, basePath)
		for _, depth := range []int{2, 3} {
			t.Run(p.Format+"-depth"+string(rune('0'+depth)), func(t *testing.T) {
				set := trainedSet(t, p.Config, depth, func(s *Spec) { s.Targets = []string{"all-linear"} })
				want := logits(t, p, nil, set)
				checkAdapterMatters(t, logits(t, p, nil, nil), want)

				// In memory.
				merged, err := MergeWeights(p, set)
				if err != nil {
					t.Fatal(err)
				}
				if d := maxDiff(logits(t, p, merged, nil), want); d > 1e-5 {
					t.Errorf("merged weights: logits differ from base+adapter by %g", d)
				}

				// As an HF folder.
				dir := filepath.Join(t.TempDir(), "merged")
				q := writeAndLoad(t, WriteMergedHF, dir, p, set, MergeOptions{})
				if !reflect.DeepEqual(q.Config, p.Config) {
					t.Errorf("merged config %+v\nbase config   %+v", q.Config, p.Config)
				}
				if q.Format != "hf" || q.DType != "F32" {
					t.Errorf("merged folder loads as %s %s, want hf F32", q.Format, q.DType)
				}
				if d := maxDiff(logits(t, q, nil, nil), want); d > 1e-5 {
					t.Errorf("merged HF folder: logits differ from base+adapter by %g", d)
				}
				for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors"} {
					if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
						t.Errorf("merged folder lacks %s", f)
					}
				}

				// As a merged GGUF (GGUF bases only).
				if p.Format != "gguf" {
					if err := WriteMergedGGUF(filepath.Join(t.TempDir(), "m.gguf"), p, set, MergeOptions{}); err == nil {
						t.Error("merged-gguf from an HF base must be refused")
					}
					return
				}
				g := writeAndLoad(t, WriteMergedGGUF, filepath.Join(t.TempDir(), "merged.gguf"), p, set, MergeOptions{})
				if !reflect.DeepEqual(g.Config, p.Config) {
					t.Errorf("merged GGUF config %+v\nbase config %+v", g.Config, p.Config)
				}
				if d := maxDiff(logits(t, g, nil, nil), want); d > 1e-5 {
					t.Errorf("merged GGUF: logits differ from base+adapter by %g", d)
				}
				// Untouched tensors are copied exactly.
				for name, w := range p.Weights {
					if strings.HasSuffix(name, "norm.weight") && !slices.Equal(g.Weights[name].Data, w.Data) {
						t.Errorf("merged GGUF changed %s", name)
					}
				}
			})
		}
	}
}

// Greedy generation with the adapter hooked in equals greedy generation from the merged model.
func TestGenerateWithAdapterEqualsMergedModel(t *testing.T) {
	gguf, hf := testenv.Stories260K(t)
	for _, basePath := range []string{gguf, hf} {
		p := loadBase(t, basePath)
		set := trainedSet(t, p.Config, 3, func(s *Spec) { s.Targets = []string{"all-linear"} })
		q := writeAndLoad(t, WriteMergedHF, filepath.Join(t.TempDir(), "merged"), p, set, MergeOptions{})
		gen := func(p *model.Pretrained, set *Set) []int {
			m, err := model.New(testbackend.Get(t), p)
			if err != nil {
				t.Fatal(err)
			}
			var dec *model.Decoder
			if set == nil {
				dec, err = m.NewDecoder(64, nil, nil)
			} else {
				dec, err = m.NewDecoder(64, hookOf(set), set.Tensors())
			}
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Close()
			out, err := model.Generate(dec, []int{1, 403, 407, 261, 378}, 50, model.NewSampler(model.Sampling{}), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		withAdapter, fromMerged, plain := gen(p, set), gen(q, nil), gen(p, nil)
		if len(withAdapter) != 50 || !slices.Equal(withAdapter, fromMerged) {
			t.Errorf("%s: adapter generates %v\nmerged model generates %v", p.Format, withAdapter, fromMerged)
		}
		t.Logf("%s: plain %v\nadapted %v", p.Format, plain, withAdapter)
		if slices.Equal(withAdapter, plain) {
			t.Errorf("%s: the adapter does not change the generated text; the comparison proves nothing", p.Format)
		}
	}
}

// Merged HF folders keep the base's storage dtype unless told otherwise, rounding W + ΔW once.
func TestMergedKeepsTheBaseDType(t *testing.T) {
	_, hf := testenv.Stories260K(t)
	p := loadBase(t, hf)
	set := trainedSet(t, p.Config, 2, nil)
	half := filepath.Join(t.TempDir(), "f16")
	q := writeAndLoad(t, WriteMergedHF, half, p, set, MergeOptions{DType: "F16"})
	var cfg map[string]any
	data, _ := os.ReadFile(filepath.Join(half, "config.json"))
	json.Unmarshal(data, &cfg)
	if q.DType != "F16" || cfg["torch_dtype"] != "float16" || cfg["model_type"] != "llama" {
		t.Fatalf("--dtype F16 gave a %s folder with torch_dtype %v, model_type %v", q.DType, cfg["torch_dtype"], cfg["model_type"])
	}
	// That F16 folder as a base: the merge stays F16, each value float16(float32(W + ΔW)).
	set2 := trainedSet(t, q.Config, 3, func(s *Spec) { s.Seed = 99 })
	r := writeAndLoad(t, WriteMergedHF, filepath.Join(t.TempDir(), "again"), q, set2, MergeOptions{})
	if r.DType != "F16" {
		t.Fatalf("merging into an F16 base wrote %s", r.DType)
	}
	want, err := MergeWeights(q, set2)
	if err != nil {
		t.Fatal(err)
	}
	name := set2.Adapters[0].Module + ".weight"
	for i, v := range want[name].Data {
		if got := r.Weights[name].Data[i]; got != float16.FromFloat32(v).Float32() {
			t.Fatalf("%s[%d] = %g, want float16(%g)", name, i, got, v)
		}
	}
	if slices.Equal(r.Weights[name].Data, q.Weights[name].Data) {
		t.Fatalf("%s did not change", name)
	}
}

func TestMergedExportsRefuseToOverwriteTheBase(t *testing.T) {
	gguf, hf := testenv.Stories260K(t)
	// Work on copies: a regression must not be able to overwrite the shared models.
	tmp := t.TempDir()
	hfCopy := filepath.Join(tmp, "hf")
	os.MkdirAll(hfCopy, 0o755)
	for _, f := range []string{"config.json", "model.safetensors"} {
		testenv.CopyTree(t, filepath.Join(hf, f), filepath.Join(hfCopy, f))
	}
	ggufCopy := filepath.Join(tmp, "base.gguf")
	testenv.CopyTree(t, gguf, ggufCopy)
	for _, base := range []string{hfCopy, ggufCopy} {
		p, err := model.Load(base)
		if err != nil {
			t.Fatal(err)
		}
		set := trainedSet(t, p.Config, 2, nil)
		if p.Format == "hf" {
			err = WriteMergedHF(base, p, set, MergeOptions{})
		} else {
			err = WriteMergedGGUF(base, p, set, MergeOptions{})
		}
		if err == nil || !strings.Contains(err.Error(), "overwrite its base") {
			t.Fatalf("%s: writing the merge over the base: %v", base, err)
		}
	}
}
