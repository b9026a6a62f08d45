package main

import (
	"encoding/json"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/saddle-ml/saddle/internal/safetensors"
	"github.com/saddle-ml/saddle/model"
)

// expectedConfig is the model.Config saddle should parse from a shape's config.json (the fields that size it).
func expectedConfig(t *testing.T, c map[string]any) model.Config {
	t.Helper()
	var mc model.Config
	for _, f := range []struct {
		key string
		dst *int
	}{{"hidden_size", &mc.HiddenSize}, {"intermediate_size", &mc.IntermediateSize},
		{"num_hidden_layers", &mc.NumLayers}, {"num_attention_heads", &mc.NumHeads},
		{"num_key_value_heads", &mc.NumKVHeads}, {"head_dim", &mc.HeadDim}, {"vocab_size", &mc.VocabSize},
		{"max_position_embeddings", &mc.MaxPositions}} {
		v, err := cfgInt(c, f.key)
		if err != nil {
			t.Fatal(err)
		}
		*f.dst = v
	}
	mc.Architecture, _ = c["model_type"].(string)
	mc.TieEmbeddings, _ = c["tie_word_embeddings"].(bool)
	mc.QKNorm = mc.Architecture == "qwen3"
	return mc
}

func shapesOf(sd []shapeTensor) map[string][]int {
	m := map[string][]int{}
	for _, t := range sd {
		m[t.Name] = t.Shape
	}
	return m
}

// The state dict holds exactly the tensors saddle's model expects, and the published parameter counts.
func TestStateDictMatchesModel(t *testing.T) {
	params := map[string]int64{"qwen3-0.6b": 596_049_920, "llama-3.2-1b": 1_235_814_400, "llama-3.1-8b": 8_030_261_248}
	for _, name := range shapeNames() {
		sd, err := stateDict(realShapes[name].Config)
		if err != nil {
			t.Fatal(err)
		}
		if len(sd) != len(shapesOf(sd)) {
			t.Errorf("%s: duplicate tensor names", name)
		}
		cfg := expectedConfig(t, realShapes[name].Config)
		if got, want := shapesOf(sd), cfg.ExpectedShapes(); !maps.EqualFunc(got, want, slices.Equal) {
			t.Errorf("%s: state dict differs from model.Config.ExpectedShapes", name)
		}
		var n int64
		for _, t := range sd {
			n += t.elements()
		}
		if n != params[name] {
			t.Errorf("%s: %d parameters, want %d", name, n, params[name])
		}
	}
}

// Llama-3.1-8B's published layout: four shards of 4.98, 5.00, 4.92 and 1.17 GB, 16,060,522,496 bytes in all.
func TestShardLayout8B(t *testing.T) {
	sd, err := stateDict(realShapes["llama-3.1-8b"].Config)
	if err != nil {
		t.Fatal(err)
	}
	names, shards := planShards(sd, maxShardBytes)
	if len(names) != 4 || names[0] != "model-00001-of-00004.safetensors" {
		t.Fatalf("shards %v", names)
	}
	var total int64
	var gb []float64
	for _, s := range shards {
		var b int64
		for _, t := range s {
			b += 2 * t.elements()
		}
		total += b
		gb = append(gb, math.Round(float64(b)/1e7)/100)
	}
	if total != 16_060_522_496 || !slices.Equal(gb, []float64{4.98, 5.00, 4.92, 1.17}) {
		t.Errorf("total %d bytes, shards %v GB", total, gb)
	}
	for _, name := range []string{"qwen3-0.6b", "llama-3.2-1b"} {
		sd, _ := stateDict(realShapes[name].Config)
		if names, _ := planShards(sd, maxShardBytes); !slices.Equal(names, []string{"model.safetensors"}) {
			t.Errorf("%s: shards %v, want one model.safetensors", name, names)
		}
	}
}

// small is a real shape with its sizes cut down (everything else as published), so that writing and loading it is
// quick.
func small(name string) realShape {
	s := realShapes[name]
	c := maps.Clone(s.Config)
	c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"] = 64, 96, 3
	c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"] = 4, 2, 16
	s.Config = c
	return s
}

// A written folder loads in saddle with the config it was given: sharded (a small shard limit forces an index),
// bf16, norms at 1 and matrices ~N(0, 0.02²); the tokenizer files are copied (with the llama3 fallback).
func TestWriteShapeLoads(t *testing.T) {
	cache := t.TempDir()
	for sub, files := range map[string][]string{"qwen3": {"tokenizer.json", "tokenizer_config.json"},
		"llama3": {"tokenizer.json"}, "llama3_1": {"tokenizer_config.json"}} {
		os.MkdirAll(filepath.Join(cache, sub), 0o755)
		for _, f := range files {
			os.WriteFile(filepath.Join(cache, sub, f), []byte(`{"from":"`+sub+`"}`), 0o644)
		}
	}
	for _, name := range shapeNames() {
		t.Run(name, func(t *testing.T) {
			s := small(name)
			dir := t.TempDir()
			if err := writeShapeFolder(dir, s, cache, 200_000); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "model.safetensors.index.json")); err != nil {
				t.Errorf("no shard index: %v", err)
			}
			p, err := model.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			want := expectedConfig(t, s.Config)
			c := p.Config
			if c.HiddenSize != want.HiddenSize || c.NumLayers != want.NumLayers || c.HeadDim != want.HeadDim ||
				c.NumKVHeads != want.NumKVHeads || c.VocabSize != want.VocabSize || c.MaxPositions != want.MaxPositions ||
				c.TieEmbeddings != want.TieEmbeddings || c.QKNorm != want.QKNorm || c.Architecture != want.Architecture {
				t.Errorf("config %+v, want %+v", c, want)
			}
			if s.Config["rope_scaling"] != nil && (c.RopeScaling == nil || c.RopeScaling.Type != "llama3") {
				t.Errorf("rope scaling %+v, want llama3", c.RopeScaling)
			}
			if p.DType != "BF16" {
				t.Errorf("dtype %s", p.DType)
			}
			for n, w := range p.Weights {
				if len(w.Shape) == 1 {
					for _, v := range w.Data {
						if v != 1 {
							t.Fatalf("%s: %g, want 1", n, v)
						}
					}
					continue
				}
				var sum, sq float64
				for _, v := range w.Data {
					sum += float64(v)
					sq += float64(v) * float64(v)
				}
				mean := sum / float64(len(w.Data))
				std := math.Sqrt(sq/float64(len(w.Data)) - mean*mean)
				if math.Abs(mean) > 0.002 || math.Abs(std-weightStd) > 0.002 {
					t.Errorf("%s: mean %g std %g", n, mean, std)
				}
			}
			tok, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
			if err != nil || string(tok) != `{"from":"`+map[bool]string{true: "qwen3", false: "llama3"}[name == "qwen3-0.6b"]+`"}` {
				t.Errorf("tokenizer.json %q, %v", tok, err)
			}
			if _, err := os.Stat(filepath.Join(dir, "tokenizer_config.json")); err != nil {
				t.Error(err)
			}
		})
	}
}

// Two writes give the same bytes (each tensor's stream is seeded by its name).
func TestWriteShapeDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if err := writeShapeFolder(d, small("llama-3.2-1b"), t.TempDir(), maxShardBytes); err != nil {
			t.Fatal(err)
		}
	}
	x, _ := os.ReadFile(filepath.Join(a, "model.safetensors"))
	y, _ := os.ReadFile(filepath.Join(b, "model.safetensors"))
	if len(x) == 0 || string(x) != string(y) {
		t.Error("two writes differ")
	}
}

// With SADDLE_BENCH_SHAPE_DIR set to a folder written by -write-shape NAME (SADDLE_BENCH_SHAPE=NAME), checks its
// config.json, shard index and every shard's header without reading the weights: the check for the 8B folder,
// whose weights do not fit this machine's memory as f32.
func TestWrittenShapeHeaders(t *testing.T) {
	dir, name := os.Getenv("SADDLE_BENCH_SHAPE_DIR"), os.Getenv("SADDLE_BENCH_SHAPE")
	if dir == "" || name == "" {
		t.Skip("set SADDLE_BENCH_SHAPE_DIR and SADDLE_BENCH_SHAPE to check a written folder")
	}
	s, ok := realShapes[name]
	if !ok {
		t.Fatalf("unknown shape %q", name)
	}
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.MarshalIndent(s.Config, "", "  ")
	if string(data) != string(want)+"\n" {
		t.Errorf("config.json\n%s\nwant\n%s", data, want)
	}
	sd, err := stateDict(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	files, shards := planShards(sd, maxShardBytes)
	if len(files) > 1 {
		var index struct {
			Metadata struct {
				TotalSize int64 `json:"total_size"`
			} `json:"metadata"`
			WeightMap map[string]string `json:"weight_map"`
		}
		data, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &index); err != nil {
			t.Fatal(err)
		}
		if len(index.WeightMap) != len(sd) {
			t.Errorf("index maps %d tensors, want %d", len(index.WeightMap), len(sd))
		}
		var total int64
		for _, t := range sd {
			total += 2 * t.elements()
		}
		if index.Metadata.TotalSize != total {
			t.Errorf("index total_size %d, want %d", index.Metadata.TotalSize, total)
		}
		for i, shard := range shards {
			for _, tt := range shard {
				if index.WeightMap[tt.Name] != files[i] {
					t.Errorf("%s in %q, want %q", tt.Name, index.WeightMap[tt.Name], files[i])
				}
			}
		}
	}
	want3 := shapesOf(sd)
	seen := 0
	for i, f := range files {
		path := filepath.Join(dir, f)
		h, err := safetensors.ReadHeader(path) // checks offsets against the file size
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Entries) != len(shards[i]) {
			t.Errorf("%s: %d tensors, want %d", f, len(h.Entries), len(shards[i]))
		}
		for _, e := range h.Entries {
			if e.DType != "BF16" || !slices.Equal(e.Shape, want3[e.Name]) {
				t.Errorf("%s: %s %s %v, want BF16 %v", f, e.Name, e.DType, e.Shape, want3[e.Name])
			}
			seen++
		}
	}
	if seen != len(sd) {
		t.Errorf("%d tensors in the shards, want %d", seen, len(sd))
	}
}
