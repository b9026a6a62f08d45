package model

// Fuzz targets for the two weight-file readers. Their seed corpora (the f.Add calls and testdata/fuzz/...) run
// as ordinary tests; `go test -fuzz FuzzLoadGGUF ./model` explores further.
//
// Properties checked on every input: no panic, an error names the file it is about, a successful load is
// self-consistent (every tensor the config needs, with its shape), and the bytes allocated stay within a
// fixed multiple of the input size: no count or length in a file may size an allocation unchecked.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/gguf"
	"github.com/saddle-ml/saddle/internal/testenv"
)

// fuzzConfig is a model small enough that whole files make good fuzz seeds (about 2 KB).
func fuzzConfig(arch string) Config {
	c := synthConfig(arch)
	c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKVHeads, c.HeadDim = 8, 8, 1, 2, 1, 4
	c.VocabSize, c.MaxPositions, c.RMSNormEps, c.RopeTheta = 6, 16, 1e-5, 10000
	return c
}

// fuzzGGUF writes c with weights stored as dtype (1-D tensors stay F32) and returns the file's bytes.
func fuzzGGUF(tb testing.TB, c Config, dtype string) []byte {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "seed.gguf")
	if err := gguf.Write(path, ggufMetadataFor(c), ggufTensorsFor(tb, c, synthWeights(c, 3), dtype)); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// fuzzSafetensors encodes weights as one safetensors file (F32, F16 or BF16), tensors in name order.
func fuzzSafetensors(weights map[string]*Tensor, dtype string) []byte {
	return safetensorsBytes(encodeTensors(weights, dtype))
}

// allocBudget is how many bytes loading an input of n bytes may allocate: the float32 weights are at most about
// 12.2× the stored bytes (Q2_K stores 256 values in 84 bytes), Q/K un-permuting copies them once more, and the
// header structures are a small multiple of their encoded size. The constant covers read buffers and maps.
func allocBudget(n int) uint64 { return 32*uint64(n) + 4<<20 }

// loadAll opens a model and reads every weight (Load alone reads headers only).
func loadAll(path string) (*Pretrained, error) {
	p, err := Load(path)
	if err != nil {
		return nil, err
	}
	if err := p.ReadAll(); err != nil {
		return nil, err
	}
	return p, nil
}

// checkLoaded verifies that a successful load is consistent with its own config.
func checkLoaded(t *testing.T, p *Pretrained) {
	t.Helper()
	c := p.Config
	if err := c.Validate(); err != nil {
		t.Fatalf("loaded an invalid config: %v", err)
	}
	want := c.ExpectedShapes()
	if len(p.Weights) != len(want) {
		t.Fatalf("%d weights, config needs %d", len(p.Weights), len(want))
	}
	for name, shape := range want {
		w := p.Weights[name]
		if w == nil || !slices.Equal(w.Shape, shape) {
			t.Fatalf("weight %s: %v, want shape %v", name, w, shape)
		}
		n, err := dtype.Elements(shape)
		if err != nil || int64(len(w.Data)) != n {
			t.Fatalf("weight %s: %d values for shape %v", name, len(w.Data), shape)
		}
	}
}

func FuzzLoadGGUF(f *testing.F) {
	for _, arch := range []string{"llama", "qwen2", "qwen3"} {
		f.Add(fuzzGGUF(f, fuzzConfig(arch), dtype.F32))
	}
	f.Add(fuzzGGUF(f, fuzzConfig("llama"), dtype.F16))
	f.Add(fuzzGGUF(f, fuzzConfig("llama"), dtype.BF16))
	// Q8_0 needs rows of whole 32-value blocks.
	q8 := fuzzConfig("llama")
	q8.HiddenSize, q8.IntermediateSize, q8.NumHeads, q8.NumKVHeads, q8.HeadDim = 32, 32, 2, 2, 16
	f.Add(fuzzGGUF(f, q8, dtype.Q8_0))
	f.Add(fuzzGGUF(f, q8, dtype.Q4_0))
	f.Add(fuzzGGUF(f, q8, dtype.Q5_1))
	f.Add([]byte("GGUF"))
	f.Add(append([]byte("GGUF\x03\x00\x00\x00"), make([]byte, 16)...))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.gguf")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		var p *Pretrained
		var err error
		if alloc, over := testenv.OverBudget(allocBudget(len(data)), func() { p, err = loadAll(path) }); over {
			t.Fatalf("loading %d bytes allocated %d bytes (err: %v)", len(data), alloc, err)
		}
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		checkLoaded(t, p)
	})
}

// FuzzLoadHF fuzzes an HF folder: config.json, model.safetensors and, when index is not empty, a sharded
// model.safetensors.index.json naming the safetensors file as its only shard.
func FuzzLoadHF(f *testing.F) {
	for _, arch := range []string{"llama", "qwen2", "qwen3"} {
		c := fuzzConfig(arch)
		cfg, _ := json.Marshal(hfConfigJSON(c))
		for _, dt := range []string{dtype.F32, dtype.F16, dtype.BF16} {
			f.Add(cfg, fuzzSafetensors(synthWeights(c, 5), dt), []byte(nil))
		}
	}
	c := fuzzConfig("llama")
	cfg, _ := json.Marshal(hfConfigJSON(c))
	weights := synthWeights(c, 6)
	weightMap := map[string]string{}
	for n := range weights {
		weightMap[n] = "model-00001-of-00001.safetensors"
	}
	index, _ := json.Marshal(map[string]any{"weight_map": weightMap})
	f.Add(cfg, fuzzSafetensors(weights, dtype.F32), index)
	f.Add(cfg, []byte("\x02\x00\x00\x00\x00\x00\x00\x00{}"), []byte(nil))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, config, st, index []byte) {
		d, err := os.MkdirTemp(dir, "hf")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(d)
		files := map[string][]byte{"config.json": config}
		if len(index) > 0 {
			files["model.safetensors.index.json"] = index
			files["model-00001-of-00001.safetensors"] = st
		} else {
			files["model.safetensors"] = st
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var p *Pretrained
		if alloc, over := testenv.OverBudget(allocBudget(len(config)+len(st)+len(index)), func() { p, err = loadAll(d) }); over {
			t.Fatalf("loading %d+%d+%d bytes allocated %d bytes (err: %v)", len(config), len(st), len(index), alloc, err)
		}
		if err != nil {
			if !strings.Contains(err.Error(), d) {
				t.Fatalf("error does not name the folder or a file in it: %v", err)
			}
			return
		}
		checkLoaded(t, p)
	})
}

// TestFuzzSeedsLoad makes sure the seeds are valid models, so that the fuzzers start from files that load.
func TestFuzzSeedsLoad(t *testing.T) {
	dir := t.TempDir()
	for _, arch := range []string{"llama", "qwen2", "qwen3"} {
		path := filepath.Join(dir, arch+".gguf")
		if err := os.WriteFile(path, fuzzGGUF(t, fuzzConfig(arch), dtype.F16), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := loadAll(path)
		if err != nil {
			t.Fatal(err)
		}
		checkLoaded(t, p)
		hf := filepath.Join(dir, arch)
		os.Mkdir(hf, 0o755)
		c := fuzzConfig(arch)
		cfg, _ := json.Marshal(hfConfigJSON(c))
		os.WriteFile(filepath.Join(hf, "config.json"), cfg, 0o644)
		os.WriteFile(filepath.Join(hf, "model.safetensors"), fuzzSafetensors(synthWeights(c, 5), dtype.BF16), 0o644)
		if p, err = loadAll(hf); err != nil {
			t.Fatal(err)
		}
		checkLoaded(t, p)
	}
}

// TestLoadAllocationIsBounded feeds headers whose counts claim far more than the file holds; each must fail
// after allocating little. This is the regression test for go-huggingface's gguf.Open, which trusted metadata
// array counts up to 2^24 and allocated hundreds of MiB for a 60-byte file.
func TestLoadAllocationIsBounded(t *testing.T) {
	le := binary.LittleEndian
	hdr := func(nTensors, nKV uint64) []byte {
		b := append([]byte("GGUF"), le.AppendUint32(nil, 3)...)
		return le.AppendUint64(le.AppendUint64(b, nTensors), nKV)
	}
	kv := func(b []byte, key string, typ uint32) []byte {
		b = append(le.AppendUint64(b, uint64(len(key))), key...)
		return le.AppendUint32(b, typ)
	}
	cases := map[string][]byte{
		"array of 2^24 uint64":  le.AppendUint64(le.AppendUint32(kv(hdr(0, 1), "k", 9), 10), 1<<24),
		"array of 2^40 strings": le.AppendUint64(le.AppendUint32(kv(hdr(0, 1), "k", 9), 8), 1<<40),
		"string of 2^31 bytes":  le.AppendUint64(kv(hdr(0, 1), "k", 8), 1<<31),
		"key of 2^40 bytes":     le.AppendUint64(hdr(0, 1), 1<<40),
		"2^40 metadata entries": hdr(0, 1<<40),
		"2^50 tensors":          hdr(1<<50, 0),
	}
	st := binary.LittleEndian.AppendUint64(nil, 1<<40)
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.gguf")
			os.WriteFile(path, b, 0o644)
			var err error
			alloc, over := testenv.OverBudget(1<<20, func() { _, err = Load(path) })
			wantErr(t, err, path)
			if over {
				t.Errorf("a %d-byte file made Load allocate %d bytes", len(b), alloc)
			}
		})
	}
	t.Run("safetensors header length 2^40", func(t *testing.T) {
		dir := t.TempDir()
		cfg, _ := json.Marshal(hfConfigJSON(fuzzConfig("llama")))
		os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644)
		os.WriteFile(filepath.Join(dir, "model.safetensors"), append(st, "{}"...), 0o644)
		var err error
		alloc, over := testenv.OverBudget(1<<20, func() { _, err = Load(dir) })
		wantErr(t, err, "model.safetensors", "header length")
		if over {
			t.Errorf("allocated %d bytes", alloc)
		}
	})
	t.Run("config with 2^24 layers", func(t *testing.T) {
		dir := t.TempDir()
		c := fuzzConfig("llama")
		cj := hfConfigJSON(c)
		cj["num_hidden_layers"] = 1 << 24
		cfg, _ := json.Marshal(cj)
		os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644)
		os.WriteFile(filepath.Join(dir, "model.safetensors"), fuzzSafetensors(synthWeights(c, 1), dtype.F32), 0o644)
		var err error
		alloc, over := testenv.OverBudget(4<<20, func() { _, err = Load(dir) })
		wantErr(t, err, dir, "model.layers.1.self_attn.q_proj.weight", "missing", "16777216 layers")
		if over {
			t.Errorf("allocated %d bytes", alloc)
		}
	})
}

// TestLoadRejectsOverlapsAndDuplicates covers what a map-based reader would silently accept.
func TestLoadRejectsOverlapsAndDuplicates(t *testing.T) {
	c := fuzzConfig("llama")
	cfg, _ := json.Marshal(hfConfigJSON(c))
	weights := synthWeights(c, 2)
	write := func(t *testing.T, st []byte) string {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644)
		os.WriteFile(filepath.Join(dir, "model.safetensors"), st, 0o644)
		return dir
	}
	good := fuzzSafetensors(weights, dtype.F32)
	hlen := binary.LittleEndian.Uint64(good)
	header := string(good[8 : 8+hlen])
	rebuild := func(h string) []byte {
		out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
		return append(append(out, h...), good[8+hlen:]...)
	}

	t.Run("safetensors duplicate tensor name", func(t *testing.T) {
		const name = `"model.norm.weight":`
		i := strings.Index(header, name)
		entry := header[i : i+strings.Index(header[i:], "}")+1]
		dir := write(t, rebuild(strings.Replace(header, "{", "{"+entry+",", 1)))
		_, err := Load(dir)
		wantErr(t, err, filepath.Join(dir, "model.safetensors"), "model.norm.weight", "twice")
	})
	t.Run("safetensors overlapping tensors", func(t *testing.T) {
		var h map[string]map[string]any
		json.Unmarshal([]byte(header), &h)
		// Two tensors of the same size: point the second at the first one's bytes.
		a, b := h["model.layers.0.mlp.gate_proj.weight"], h["model.layers.0.mlp.up_proj.weight"]
		b["data_offsets"] = a["data_offsets"]
		nh, _ := json.Marshal(h)
		dir := write(t, rebuild(string(nh)))
		_, err := Load(dir)
		wantErr(t, err, filepath.Join(dir, "model.safetensors"), "overlaps", "gate_proj", "up_proj")
	})
	t.Run("safetensors trailing garbage in header", func(t *testing.T) {
		dir := write(t, rebuild(header+"  x"))
		_, err := Load(dir)
		wantErr(t, err, filepath.Join(dir, "model.safetensors"), "unexpected bytes")
	})
	t.Run("gguf overlapping tensors", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "m.gguf")
		os.WriteFile(path, fuzzGGUF(t, c, dtype.F32), 0o644)
		// ffn_gate and ffn_up have the same shape; give up the gate's offset.
		b, _ := os.ReadFile(path)
		off := tensorInfoOffset(t, b, "blk.0.ffn_gate.weight")
		upOff := tensorInfoOffset(t, b, "blk.0.ffn_up.weight")
		copy(b[upOff:upOff+8], b[off:off+8])
		os.WriteFile(path, b, 0o644)
		_, err := Load(path)
		wantErr(t, err, path, "overlaps", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight")
	})
	t.Run("gguf duplicate tensor name", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "m.gguf")
		b := fuzzGGUF(t, c, dtype.F32)
		// attn_k and attn_q have names of the same length: renaming one keeps the file well-formed.
		j := bytes.Index(b, []byte("blk.0.attn_k.weight"))
		copy(b[j:], "blk.0.attn_q.weight")
		os.WriteFile(path, b, 0o644)
		_, err := Load(path)
		wantErr(t, err, path, "blk.0.attn_q.weight", "twice")
	})
}
