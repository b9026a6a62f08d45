package lora

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/compute/dtypes/float16"
	"github.com/gomlx/go-huggingface/models/gguf"

	"github.com/saddle-ml/saddle/internal/safetensors"
	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/model"
)

// The PEFT files are checked by a reader that shares no code with saddle: a stdlib-only Python script that
// parses the safetensors header by the spec and recomputes s·B·A against saddle's ΔW.
func TestPEFTFilesPassAnIndependentReader(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		testenv.Missing(t, "python3 not found")
	}
	cfg := tinyConfig()
	for _, c := range []struct {
		name   string
		mutate func(*Spec)
	}{
		{"depth3-rslora-layers", func(s *Spec) { s.Depth, s.RSLoRA, s.Targets, s.Layers = 3, true, []string{"all-linear"}, []int{0, 2} }},
		{"depth2-attention", func(s *Spec) { s.Alpha = 12 }},
		{"depth4-glob", func(s *Spec) { s.Depth, s.Targets = 4, []string{"model.layers.1.mlp.*", "q_proj"} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := spec("small", 2)
			c.mutate(&s)
			set, err := Attach(cfg, s)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := WritePEFT(filepath.Join(dir, "peft"), set, PEFTOptions{BaseModel: "base", NumLayers: cfg.NumLayers}); err != nil {
				t.Fatal(err)
			}
			type refModule struct {
				Out   int       `json:"out"`
				In    int       `json:"in"`
				Delta []float64 `json:"delta"`
			}
			ref := struct {
				Scale   float64              `json:"scale"`
				Modules map[string]refModule `json:"modules"`
			}{Scale: set.Spec.Scaling(), Modules: map[string]refModule{}}
			for _, a := range set.Adapters {
				ref.Modules[a.Module] = refModule{a.Out, a.In, set.DeltaW(a)}
			}
			data, _ := json.Marshal(ref)
			refPath := filepath.Join(dir, "ref.json")
			if err := os.WriteFile(refPath, data, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(python, filepath.Join("testdata", "check_peft.py"), filepath.Join(dir, "peft"), refPath).CombinedOutput()
			if err != nil {
				t.Fatalf("check_peft.py: %v\n%s", err, out)
			}
			var summary struct {
				OK      bool `json:"ok"`
				Modules int  `json:"modules"`
			}
			if err := json.Unmarshal(out, &summary); err != nil || !summary.OK || summary.Modules != len(set.Adapters) {
				t.Fatalf("check_peft.py: %s", out)
			}
		})
	}
}

// A PEFT file with a wrong scale must fail the Python check (so the check can fail).
func TestPEFTIndependentReaderCatchesAWrongScale(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	set, err := Attach(tinyConfig(), spec("small", 2))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WritePEFT(filepath.Join(dir, "peft"), set, PEFTOptions{}); err != nil {
		t.Fatal(err)
	}
	modules := map[string]any{}
	for _, a := range set.Adapters {
		dw := set.DeltaW(a)
		for i := range dw {
			dw[i] *= 1.01
		}
		modules[a.Module] = map[string]any{"out": a.Out, "in": a.In, "delta": dw}
	}
	data, _ := json.Marshal(map[string]any{"scale": set.Spec.Scaling(), "modules": modules})
	refPath := filepath.Join(dir, "ref.json")
	os.WriteFile(refPath, data, 0o644)
	out, err := exec.Command(python, filepath.Join("testdata", "check_peft.py"), filepath.Join(dir, "peft"), refPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "differs from saddle") {
		t.Fatalf("a 1%% scale error passed the Python check: %s", out)
	}
}

// The llama.cpp adapter GGUF, read back with go-huggingface's GGUF reader: keys, shapes in llama.cpp's
// orientation, and lora_b whose un-permuted rows are saddle's (folded) B.
func TestGGUFAdapterReadBack(t *testing.T) {
	ggufBase, hf := testenv.Stories260K(t)
	p := loadBase(t, hf)
	for _, c := range []struct {
		name   string
		mutate func(*Spec)
	}{
		{"depth2", nil},
		{"depth3-rslora-all-linear", func(s *Spec) { s.Depth, s.RSLoRA, s.Targets = 3, true, []string{"all-linear"} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			set := trainedSet(t, p.Config, 2, c.mutate)
			path := filepath.Join(t.TempDir(), "adapter.gguf")
			if err := WriteGGUFAdapter(path, set, p.Config, GGUFAdapterOptions{}); err != nil {
				t.Fatal(err)
			}
			f, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			str := func(k string) string { v, _ := f.GetKeyValue(k); return v.String() }
			if str("general.type") != "adapter" || str("adapter.type") != "lora" || f.Architecture() != "llama" {
				t.Fatalf("general.type %q adapter.type %q architecture %q", str("general.type"), str("adapter.type"), f.Architecture())
			}
			kv, ok := f.GetKeyValue("adapter.lora.alpha")
			alpha, isF32 := kv.Raw().(float32)
			if !ok || !isF32 {
				t.Fatalf("adapter.lora.alpha is %T, want float32", kv.Raw())
			}
			// llama.cpp: scale = alpha / rank with rank = ne[0] of lora_b.
			r := set.Spec.Rank
			if got := float64(alpha) / float64(r); math.Abs(got-set.Spec.Scaling()) > 1e-6*set.Spec.Scaling() {
				t.Fatalf("llama.cpp would scale by %g, saddle scales by %g", got, set.Spec.Scaling())
			}
			base, err := gguf.Open(ggufBase)
			if err != nil {
				t.Fatal(err)
			}
			rd, err := gguf.NewReader(f)
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			if len(f.TensorInfos) != 2*len(set.Adapters) {
				t.Fatalf("%d tensors for %d adapters", len(f.TensorInfos), len(set.Adapters))
			}
			permuted := 0
			for _, a := range set.Adapters {
				name, _ := model.GGUFNameFromHF(a.Module + ".weight")
				ia, okA := f.GetTensorInfo(name + ".lora_a")
				ib, okB := f.GetTensorInfo(name + ".lora_b")
				w, okW := base.GetTensorInfo(name)
				if !okA || !okB || !okW {
					t.Fatalf("%s: lora_a %v, lora_b %v, base tensor %v", name, okA, okB, okW)
				}
				// llama_adapter_lora_init_impl's checks.
				if w.Shape[0] != ia.Shape[0] || w.Shape[1] != ib.Shape[1] || ia.Shape[1] != ib.Shape[0] || ib.Shape[0] != uint64(r) {
					t.Fatalf("%s: base ne %v, lora_a ne %v, lora_b ne %v", name, w.Shape, ia.Shape, ib.Shape)
				}
				if ia.Type != gguf.TensorTypeF32 || ib.Type != gguf.TensorTypeF32 {
					t.Fatalf("%s: types %s %s", name, ia.Type, ib.Type)
				}
				A, B := a.Fold(set.Spec.Depth, r)
				gotA := readF32(t, rd, name+".lora_a")
				gotB := &model.Tensor{Shape: []int{a.Out, r}, Data: readF32(t, rd, name+".lora_b")}
				if !slices.Equal(gotA, A) {
					t.Fatalf("%s.lora_a differs from A", name)
				}
				if h := permutedHeads(p.Config, a.Module); h > 0 {
					if slices.Equal(gotB.Data, B) {
						t.Fatalf("%s.lora_b was not permuted", name)
					}
					if gotB, err = model.LlamaCppUnpermute(gotB, h); err != nil {
						t.Fatal(err)
					}
					permuted++
				}
				if !slices.Equal(gotB.Data, B) {
					t.Fatalf("%s.lora_b (un-permuted) differs from saddle's B", name)
				}
			}
			if permuted == 0 {
				t.Fatal("no q_proj/k_proj adapter: the permutation went untested")
			}
		})
	}
}

func readF32(t *testing.T, rd *gguf.Reader, name string) []float32 {
	t.Helper()
	raw, _, err := rd.ReadTensorRaw(name)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// writePEFTDir writes a PEFT adapter by hand: config as given, tensors with their dtypes.
func writePEFTDir(t *testing.T, config map[string]any, tensors map[string]safetensors.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	data, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, PEFTConfigFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if tensors != nil {
		if err := safetensors.Write(filepath.Join(dir, PEFTWeightsFile), tensors, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// randomFactor is a [rows, cols] tensor of values exactly representable in dtype.
func randomFactor(rng *rand.Rand, rows, cols int, dtype string) safetensors.Tensor {
	d := make([]float32, rows*cols)
	for i := range d {
		v := float32(rng.NormFloat64() * 0.3)
		switch dtype {
		case "F16":
			v = float16.FromFloat32(v).Float32()
		case "BF16":
			v = bfloat16.FromFloat32(v).Float32()
		}
		d[i] = v
	}
	return safetensors.Tensor{Shape: []int{rows, cols}, Data: d, DType: dtype}
}

func baseConfig(extra map[string]any) map[string]any {
	c := map[string]any{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.05,
		"target_modules": []string{"q_proj", "v_proj"}, "bias": "none", "use_rslora": false, "use_dora": false,
		"fan_in_fan_out": false, "modules_to_save": nil, "rank_pattern": map[string]any{}, "alpha_pattern": map[string]any{}}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// Hand-written PEFT adapters as other tools save them import with ΔW = s_module·B·A for every module.
func TestImportHandWrittenPEFT(t *testing.T) {
	cfg := tinyConfig() // q_proj [16, 16], v_proj [8, 16]
	shapes := cfg.ExpectedShapes()
	type module struct {
		path  string
		rank  int
		scale float64
	}
	for _, c := range []struct {
		name    string
		config  map[string]any
		infix   string
		dtype   string
		modules []module
	}{
		{"default-naming-f16", baseConfig(nil), ".default", "F16", []module{
			{"model.layers.0.self_attn.q_proj", 4, 2}, {"model.layers.0.self_attn.v_proj", 4, 2}, {"model.layers.2.self_attn.q_proj", 4, 2}}},
		{"plain-naming-rslora-bf16", baseConfig(map[string]any{"use_rslora": true}), "", "BF16", []module{
			{"model.layers.1.self_attn.q_proj", 4, 4}, {"model.layers.1.self_attn.v_proj", 4, 4}}},
		{"alpha-pattern-f32", baseConfig(map[string]any{"alpha_pattern": map[string]any{"model.layers.1.self_attn.v_proj": 32}}), "", "F32", []module{
			{"model.layers.1.self_attn.q_proj", 4, 2}, {"model.layers.1.self_attn.v_proj", 4, 8}}},
		{"uniform-patterns", baseConfig(map[string]any{"rank_pattern": map[string]any{".*_proj": 4}, "alpha_pattern": map[string]any{".*_proj": 16}}), "", "F32", []module{
			{"model.layers.0.self_attn.q_proj", 4, 4}, {"model.layers.0.self_attn.v_proj", 4, 4}}},
		// PEFT takes the first pattern that matches, in file order: layer 0's q_proj gets rank 2, the others 3.
		{"rank-pattern-first-match", baseConfig(map[string]any{"rank_pattern": orderedJSONObject{{"layers\\.0\\.self_attn\\.q_proj", 2}, {"q_proj", 3}}}), "", "F32", []module{
			{"model.layers.0.self_attn.q_proj", 2, 4}, {"model.layers.1.self_attn.q_proj", 3, 8.0 / 3}, {"model.layers.1.self_attn.v_proj", 4, 2}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 5))
			tensors := map[string]safetensors.Tensor{}
			want := map[string][]float64{}
			for _, m := range c.modules {
				shape := shapes[m.path+".weight"]
				A := randomFactor(rng, m.rank, shape[1], c.dtype)
				B := randomFactor(rng, shape[0], m.rank, c.dtype)
				tensors[peftPrefix+m.path+".lora_A"+c.infix+".weight"] = A
				tensors[peftPrefix+m.path+".lora_B"+c.infix+".weight"] = B
				dw := matmul(toF64(B.Data), toF64(A.Data), shape[0], m.rank, shape[1])
				for i := range dw {
					dw[i] *= m.scale
				}
				want[m.path] = dw
			}
			set, err := LoadAny(writePEFTDir(t, c.config, tensors), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(set.Adapters) != len(c.modules) {
				t.Fatalf("imported %d adapters, want %d", len(set.Adapters), len(c.modules))
			}
			if c.name == "uniform-patterns" && (set.Spec.Alpha != 16 || set.Spec.Rank != 4) {
				t.Fatalf("uniform patterns should give the set alpha 16 and rank 4 as they are, got %+v", set.Spec)
			}
			for _, a := range set.Adapters {
				w, ok := want[a.Module]
				if !ok {
					t.Fatalf("unexpected module %s", a.Module)
				}
				got := set.DeltaW(a)
				peak := 0.0
				for _, v := range w {
					peak = max(peak, math.Abs(v))
				}
				for i := range w {
					if math.Abs(got[i]-w[i]) > 1e-6*peak {
						t.Fatalf("%s: ΔW[%d] = %g, want %g", a.Module, i, got[i], w[i])
					}
				}
			}
		})
	}
}

// orderedJSONObject marshals as a JSON object with keys in the given order.
type orderedJSONObject [][2]any

func (o orderedJSONObject) MarshalJSON() ([]byte, error) {
	var parts []string
	for _, kv := range o {
		k, _ := json.Marshal(kv[0])
		v, _ := json.Marshal(kv[1])
		parts = append(parts, string(k)+":"+string(v))
	}
	return []byte("{" + strings.Join(parts, ",") + "}"), nil
}

func TestImportRefusals(t *testing.T) {
	cfg := tinyConfig()
	rng := rand.New(rand.NewPCG(1, 2))
	q := "model.layers.0.self_attn.q_proj"
	good := func() map[string]safetensors.Tensor {
		return map[string]safetensors.Tensor{
			PEFTKey(q, "lora_A"): randomFactor(rng, 4, 16, "F32"),
			PEFTKey(q, "lora_B"): randomFactor(rng, 16, 4, "F32"),
		}
	}
	with := func(key string, t safetensors.Tensor) map[string]safetensors.Tensor {
		m := good()
		m[key] = t
		return m
	}
	vec := safetensors.Tensor{Shape: []int{16}, Data: make([]float32, 16)}
	for _, c := range []struct {
		name    string
		config  map[string]any
		tensors map[string]safetensors.Tensor
		want    string
	}{
		{"dora-config", baseConfig(map[string]any{"use_dora": true}), good(), "DoRA"},
		{"dora-tensor", baseConfig(nil), with(peftPrefix+q+".lora_magnitude_vector.weight", vec), "DoRA"},
		{"modules-to-save-config", baseConfig(map[string]any{"modules_to_save": []string{"lm_head"}}), good(), "modules_to_save"},
		{"modules-to-save-tensor", baseConfig(nil), with(peftPrefix+"lm_head.modules_to_save.default.weight", vec), "modules_to_save"},
		{"bias", baseConfig(map[string]any{"bias": "lora_only"}), good(), "bias"},
		{"lora-bias", baseConfig(nil), with(peftPrefix+q+".lora_B.bias", vec), "bias"},
		{"fan-in-fan-out", baseConfig(map[string]any{"fan_in_fan_out": true}), good(), "fan_in_fan_out"},
		{"unknown-target", baseConfig(map[string]any{"target_modules": []string{"q_proj", "embed_tokens"}}), good(), `"embed_tokens"`},
		{"unknown-module", baseConfig(nil), with(peftPrefix+"lm_head.lora_A.weight", randomFactor(rng, 4, 16, "F32")), "lm_head is not a linear layer"},
		{"not-lora", baseConfig(map[string]any{"peft_type": "IA3"}), good(), "IA3"},
		{"rank-mismatch", baseConfig(map[string]any{"r": 8}), good(), "rank 4"},
		{"missing-B", baseConfig(nil), map[string]safetensors.Tensor{PEFTKey(q, "lora_A"): randomFactor(rng, 4, 16, "F32")}, "only one of lora_A and lora_B"},
		{"wrong-shape", baseConfig(nil), with(PEFTKey(q, "lora_B"), randomFactor(rng, 8, 4, "F32")), "do not fit"},
		{"scalar-factor", baseConfig(nil), with(PEFTKey(q, "lora_A"), safetensors.Tensor{Shape: []int{}, Data: []float32{1}}), "do not fit"},
		{"two-adapters", baseConfig(nil), map[string]safetensors.Tensor{
			peftPrefix + q + ".lora_A.one.weight": randomFactor(rng, 4, 16, "F32"),
			peftPrefix + q + ".lora_B.two.weight": randomFactor(rng, 16, 4, "F32")}, "several adapters"},
		{"pickle-only", baseConfig(nil), nil, "adapter_model.bin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := writePEFTDir(t, c.config, c.tensors)
			if c.tensors == nil {
				os.WriteFile(filepath.Join(dir, "adapter_model.bin"), []byte("PK"), 0o644)
			}
			_, err := LoadAny(dir, cfg)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("error %q should name %s and say %q", err, dir, c.want)
			}
		})
	}
}

func TestResolveDirFollowsLatestCheckpoint(t *testing.T) {
	cfg := tinyConfig()
	set, err := Attach(cfg, spec("small", 3))
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	if _, err := LoadAny(run, cfg); err == nil || !strings.Contains(err.Error(), "checkpoints/latest") {
		t.Fatalf("empty folder: error %v should say what it looked for", err)
	}
	os.WriteFile(filepath.Join(run, "config.json"), []byte(`{"model": "base.gguf"}`), 0o644)
	for i, step := range []string{"step-000001", "step-000002"} {
		set.Adapters[0].Factors[0][0] = float32(i + 1)
		if err := Save(filepath.Join(run, "checkpoints", step), set, ""); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(run, "checkpoints", "latest"), []byte("step-000002\n"), 0o644)
	dir, err := ResolveDir(run)
	if err != nil || dir != filepath.Join(run, "checkpoints", "step-000002") {
		t.Fatalf("ResolveDir = %q, %v", dir, err)
	}
	got, err := LoadAny(run, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Adapters[0].Factors[0][0] != 2 || got.Spec.Depth != 3 {
		t.Fatalf("loaded the wrong checkpoint (first value %g, depth %d)", got.Adapters[0].Factors[0][0], got.Spec.Depth)
	}
	if b := BaseModelOf(dir); b != "base.gguf" {
		t.Fatalf("BaseModelOf(checkpoint) = %q, want the run's model", b)
	}
	for _, bad := range []string{"../elsewhere", "/abs", "step-999"} {
		os.WriteFile(filepath.Join(run, "checkpoints", "latest"), []byte(bad), 0o644)
		if _, err := ResolveDir(run); err == nil || !strings.Contains(err.Error(), "latest") {
			t.Errorf("latest = %q: error %v", bad, err)
		}
	}
	// A saddle adapter in the folder itself wins.
	if err := Save(run, set, "other.gguf"); err != nil {
		t.Fatal(err)
	}
	if dir, _ := ResolveDir(run); dir != run || BaseModelOf(run) != "other.gguf" {
		t.Fatalf("ResolveDir(run with adapter.json) = %q, base %q", dir, BaseModelOf(run))
	}
}
