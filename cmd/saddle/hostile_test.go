package main

// Hostile input through the whole CLI: corrupt model files, tokenizer files and data, and contradictory or
// out-of-range flags. Every case must exit non-zero (2 for usage errors, 1 otherwise) with a message that names
// the file (and the tensor or line where there is one), must not print a panic or a goroutine dump, and must
// leave no file behind in --out. The hostile files are made in t.TempDir() from the real test models by
// truncating or patching bytes.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/internal/testenv"
)

// hostileCase is one command line that must fail.
type hostileCase struct {
	name string
	args []string
	code int      // expected exit code
	want []string // substrings of stderr: the file, the tensor or line, the reason
	out  string   // --out folder that must stay empty or absent
	// gap names the fix, outside this package's tests, that the case still waits for: until then a wrong exit
	// code skips the case (visibly) instead of failing the suite.
	gap string
}

// ggufLayout locates the fields of a GGUF v3 file that the cases patch.
type ggufLayout struct {
	kvValue    map[string]int // key → offset of its value (after the type tag)
	tensorName map[string]int // tensor → offset of its name's length prefix
	tensorType map[string]int // tensor → offset of its ggml type
	tensorDims map[string]int // tensor → offset of its first dimension
	infosStart int            // offset of the first tensor description
	infosEnd   int
}

func parseGGUFLayout(t *testing.T, b []byte) *ggufLayout {
	t.Helper()
	le := binary.LittleEndian
	l := &ggufLayout{kvValue: map[string]int{}, tensorName: map[string]int{}, tensorType: map[string]int{}, tensorDims: map[string]int{}}
	nTensors, nKV := int(le.Uint64(b[8:])), int(le.Uint64(b[16:]))
	off := 24
	str := func() string {
		n := int(le.Uint64(b[off:]))
		s := string(b[off+8 : off+8+n])
		off += 8 + n
		return s
	}
	size := map[uint32]int{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
	for range nKV {
		key := str()
		typ := le.Uint32(b[off:])
		off += 4
		l.kvValue[key] = off
		switch typ {
		case 8:
			str()
		case 9:
			et, n := le.Uint32(b[off:]), int(le.Uint64(b[off+4:]))
			off += 12
			if et == 8 {
				for range n {
					str()
				}
			} else {
				off += n * size[et]
			}
		default:
			off += size[typ]
		}
	}
	l.infosStart = off
	for range nTensors {
		l.tensorName[string(b[off+8:off+8+int(le.Uint64(b[off:]))])] = off
		name := str()
		nd := int(le.Uint32(b[off:]))
		l.tensorDims[name] = off + 4
		off += 4 + 8*nd
		l.tensorType[name] = off
		off += 12
	}
	l.infosEnd = off
	return l
}

// hostileFiles builds the corrupt files of the table under dir.
type hostileFiles struct {
	t    *testing.T
	dir  string
	gguf []byte
	lay  *ggufLayout
	hf   string // the real HF folder
	n    int
}

// file writes b to a new file with the given base name and returns its path.
func (h *hostileFiles) file(name string, b []byte) string {
	h.t.Helper()
	h.n++
	d := filepath.Join(h.dir, fmt.Sprintf("c%03d", h.n))
	if err := os.MkdirAll(d, 0o755); err != nil {
		h.t.Fatal(err)
	}
	p := filepath.Join(d, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// ggufWith returns a copy of the GGUF file after patch.
func (h *hostileFiles) ggufWith(patch func(b []byte) []byte) string {
	return h.file("model.gguf", patch(bytes.Clone(h.gguf)))
}

func (h *hostileFiles) putU32(off int, v uint32) func([]byte) []byte {
	return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b }
}

func (h *hostileFiles) putU64(off int, v uint64) func([]byte) []byte {
	return func(b []byte) []byte { binary.LittleEndian.PutUint64(b[off:], v); return b }
}

// hfWith copies the HF folder, lets change rewrite its files (name → content; nil deletes), and returns the
// folder.
func (h *hostileFiles) hfWith(change func(files map[string][]byte)) string {
	h.t.Helper()
	entries, err := os.ReadDir(h.hf)
	if err != nil {
		h.t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(h.hf, e.Name())); err == nil {
			files[e.Name()] = b
		}
	}
	change(files)
	h.n++
	d := filepath.Join(h.dir, fmt.Sprintf("hf%03d", h.n))
	if err := os.MkdirAll(d, 0o755); err != nil {
		h.t.Fatal(err)
	}
	for name, b := range files {
		if b == nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
			h.t.Fatal(err)
		}
	}
	return d
}

// editJSON decodes files[name], lets edit change it, and encodes it back.
func editJSON(t *testing.T, files map[string][]byte, name string, edit func(m map[string]any)) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(files[name], &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	files[name] = b
}

// stHeader splits model.safetensors into its JSON header (decoded) and data section.
func stHeader(t *testing.T, st []byte) (map[string]any, []byte) {
	t.Helper()
	n := binary.LittleEndian.Uint64(st)
	var h map[string]any
	if err := json.Unmarshal(st[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	return h, st[8+n:]
}

func stJoin(header []byte, data []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(out, header...), data...)
}

// stEdit rewrites the safetensors header of a folder's model.safetensors.
func stEdit(t *testing.T, files map[string][]byte, edit func(h map[string]any)) {
	t.Helper()
	h, data := stHeader(t, files["model.safetensors"])
	edit(h)
	hb, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	files["model.safetensors"] = stJoin(hb, data)
}

func entry(h map[string]any, name string) map[string]any { return h[name].(map[string]any) }

func hostileCases(t *testing.T) []hostileCase {
	ggufPath, hfPath := testenv.Stories260K(t)
	g, err := os.ReadFile(ggufPath)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileFiles{t: t, dir: t.TempDir(), gguf: g, lay: parseGGUFLayout(t, g), hf: hfPath}
	lay := h.lay
	const q, o, k = "blk.0.attn_q.weight", "blk.0.attn_output.weight", "blk.0.attn_k.weight"
	const qHF = "model.layers.0.self_attn.q_proj.weight"
	info := func(model string) []string { return []string{"info", "--model", model} }
	gen := func(model string) []string {
		return []string{"generate", "--model", model, "--max-tokens", "2", "--temperature", "0"}
	}
	tok := func(file string) []string {
		return []string{"tokenize", "--tokenizer", file, "--text", "Once upon a time"}
	}
	var cases []hostileCase
	add := func(name string, code int, args []string, want ...string) {
		cases = append(cases, hostileCase{name: name, args: args, code: code, want: want})
	}

	// ---- GGUF model files ----
	trunc := func(n int) func([]byte) []byte { return func(b []byte) []byte { return b[:n] } }
	var p string
	p = h.ggufWith(trunc(0))
	add("gguf empty file", 1, info(p), p)
	p = h.ggufWith(trunc(3))
	add("gguf 3 bytes", 1, info(p), p, "neither a GGUF file")
	p = h.ggufWith(trunc(8))
	add("gguf only magic and version", 1, info(p), p, "end of file")
	p = h.ggufWith(trunc(1000))
	add("gguf truncated in the metadata", 1, info(p), p, "tokenizer.ggml.tokens")
	p = h.ggufWith(trunc(lay.tensorName[o] + 10))
	add("gguf truncated in the tensor descriptions", 1, info(p), p, "tensor count")
	p = h.ggufWith(trunc(len(g) - 4096))
	add("gguf truncated in the tensor data", 1, info(p), p, "blk.4.", "outside")
	p = h.ggufWith(trunc(len(g) - 1))
	add("gguf one byte short", 1, gen(p), p, "outside")
	p = h.ggufWith(h.putU32(4, 99))
	add("gguf version 99", 1, info(p), p, "version 99")
	p = h.ggufWith(h.putU64(8, 1<<40))
	add("gguf tensor count 2^40", 1, info(p), p, "tensor count")
	p = h.ggufWith(h.putU64(16, 1<<40))
	add("gguf metadata count 2^40", 1, info(p), p, "metadata count")
	p = h.ggufWith(h.putU64(lay.kvValue["tokenizer.ggml.tokens"]+4, 1<<40))
	add("gguf token array count 2^40 (tokenize)", 1, []string{"tokenize", "--model", p, "--text", "hi"}, p,
		"tokenizer.ggml.tokens", "array count")
	p = h.ggufWith(h.putU64(lay.kvValue["tokenizer.ggml.scores"]+4, 1<<24))
	add("gguf score array count 2^24", 1, info(p), p, "tokenizer.ggml.scores", "array count")
	p = h.ggufWith(h.putU64(lay.kvValue["general.architecture"], 1<<33))
	add("gguf string length 2^33", 1, info(p), p, "general.architecture", "string length")
	p = h.ggufWith(h.putU64(lay.tensorDims["token_embd.weight"], 1<<40))
	add("gguf absurd dimension", 1, info(p), p, "token_embd.weight", "outside")
	p = h.ggufWith(func(b []byte) []byte {
		h.putU64(lay.tensorDims[q], 1<<40)(b)
		return h.putU64(lay.tensorDims[q]+8, 1<<40)(b)
	})
	add("gguf overflowing dimensions", 1, info(p), p, q, "overflow")
	p = h.ggufWith(h.putU32(lay.tensorDims[q]-4, 7))
	add("gguf 7 dimensions", 1, info(p), p, q, "7 dimensions")
	p = h.ggufWith(h.putU32(lay.tensorType[q], 77))
	add("gguf unknown dtype", 1, info(p), p, q, "type 77", "not supported")
	p = h.ggufWith(h.putU32(lay.tensorType[q], 16))
	add("gguf IQ2_XXS dtype", 1, gen(p), p, q, "IQ2_XXS", "not supported")
	p = h.ggufWith(h.putU64(lay.tensorType[q]+4, 1<<40))
	add("gguf offset beyond the file", 1, info(p), p, q, "outside")
	p = h.ggufWith(h.putU64(lay.tensorType[q]+4, 262400+4))
	add("gguf misaligned offset", 1, info(p), p, q, "alignment")
	p = h.ggufWith(func(b []byte) []byte {
		copy(b[lay.tensorType[o]+4:lay.tensorType[o]+12], b[lay.tensorType[q]+4:lay.tensorType[q]+12])
		return b
	})
	add("gguf overlapping tensors", 1, info(p), p, q, o, "overlaps")
	p = h.ggufWith(func(b []byte) []byte { copy(b[lay.tensorName[k]+8:], q); return b })
	add("gguf duplicate tensor name", 1, info(p), p, q, "twice")
	p = h.ggufWith(func(b []byte) []byte {
		i := bytes.Index(b, []byte("tokenizer.ggml.bos_token_id"))
		copy(b[i:], "tokenizer.ggml.eos_token_id")
		return b
	})
	add("gguf duplicate metadata key", 1, info(p), p, "tokenizer.ggml.eos_token_id", "twice")
	p = h.ggufWith(func(b []byte) []byte { copy(b[lay.kvValue["general.architecture"]+8:], "mamba"); return b })
	add("gguf unknown architecture", 1, info(p), p, "mamba", "not supported")
	p = h.ggufWith(h.putU32(lay.kvValue["llama.block_count"], 1<<24))
	add("gguf 2^24 layers", 1, info(p), p, "blk.5.attn_q.weight", "missing")
	p = h.ggufWith(h.putU32(lay.kvValue["llama.block_count"], math.MaxInt32))
	add("gguf 2^31 layers", 1, info(p), p, "layer count", "out of range")
	p = h.ggufWith(h.putU32(lay.kvValue["llama.attention.head_count"], 0))
	add("gguf zero heads", 1, info(p), p, "head_count")
	p = h.ggufWith(h.putU32(lay.kvValue["llama.feed_forward_length"], 100))
	add("gguf feed-forward length disagrees with the tensors", 1, info(p), p, "blk.0.ffn_", "shape")
	p = h.ggufWith(h.putU32(lay.kvValue["llama.attention.layer_norm_rms_epsilon"], math.Float32bits(float32(math.NaN()))))
	add("gguf NaN rms epsilon", 1, info(p), p, "rms_norm_eps")
	p = h.ggufWith(h.putU32(lay.kvValue["llama.context_length"], 0))
	add("gguf zero context", 1, info(p), p, "max positions")
	p = h.ggufWith(h.putU32(lay.kvValue["tokenizer.ggml.bos_token_id"], 100000))
	add("gguf bos id outside the vocabulary", 1, info(p), p, "bos token id 100000")
	p = h.ggufWith(func(b []byte) []byte {
		// blk.0.attn_q.weight's data starts at the aligned end of the tensor descriptions + its offset.
		at := (lay.infosEnd+31)/32*32 + 262400 + 4*100
		binary.LittleEndian.PutUint32(b[at:], math.Float32bits(float32(math.NaN())))
		return b
	})
	add("gguf NaN in a weight", 1, gen(p), p, q, "NaN or infinite", "index 100")
	p = h.file("model.gguf", []byte("hello, I am not a model"))
	add("gguf text file", 1, info(p), p, "neither")
	b := append([]byte("GGUF"), binary.LittleEndian.AppendUint32(nil, 3)...)
	b = binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(b, 0), 0)
	p = h.file("empty.gguf", b)
	add("gguf header only", 1, info(p), p, "general.architecture")

	// ---- Hugging Face folders: safetensors, config.json, sharded index ----
	stFile := func(d string) string { return filepath.Join(d, "model.safetensors") }
	var d string
	d = h.hfWith(func(f map[string][]byte) { f["model.safetensors"] = f["model.safetensors"][:4] })
	add("safetensors 4 bytes", 1, info(d), stFile(d), "header length")
	d = h.hfWith(func(f map[string][]byte) { binary.LittleEndian.PutUint64(f["model.safetensors"], 1<<40) })
	add("safetensors header length beyond the file", 1, info(d), stFile(d), "does not fit")
	d = h.hfWith(func(f map[string][]byte) { binary.LittleEndian.PutUint64(f["model.safetensors"], 0) })
	add("safetensors header length 0", 1, info(d), stFile(d), "header")
	d = h.hfWith(func(f map[string][]byte) { copy(f["model.safetensors"][8:], "garbage!") })
	add("safetensors header not JSON", 1, info(d), stFile(d), "header")
	d = h.hfWith(func(f map[string][]byte) { f["model.safetensors"] = stJoin([]byte("[1, 2]"), nil) })
	add("safetensors header is an array", 1, info(d), stFile(d), "not a JSON object")
	d = h.hfWith(func(f map[string][]byte) {
		f["model.safetensors"] = f["model.safetensors"][:len(f["model.safetensors"])-100]
	})
	add("safetensors truncated data", 1, info(d), stFile(d), "outside")
	d = h.hfWith(func(f map[string][]byte) { stEdit(t, f, func(h map[string]any) { entry(h, qHF)["dtype"] = "F8_E4M3" }) })
	add("safetensors unknown dtype", 1, info(d), stFile(d), qHF, "F8_E4M3")
	d = h.hfWith(func(f map[string][]byte) { stEdit(t, f, func(h map[string]any) { entry(h, qHF)["dtype"] = "I32" }) })
	add("safetensors integer dtype", 1, info(d), stFile(d), qHF, "I32")
	d = h.hfWith(func(f map[string][]byte) {
		stEdit(t, f, func(h map[string]any) { entry(h, qHF)["shape"] = []int64{1 << 40, 1 << 40} })
	})
	add("safetensors absurd shape", 1, info(d), stFile(d), qHF, "too many elements")
	d = h.hfWith(func(f map[string][]byte) {
		stEdit(t, f, func(h map[string]any) { entry(h, qHF)["shape"] = []int{-64, -64} })
	})
	add("safetensors negative shape", 1, info(d), stFile(d), qHF, "invalid dimension")
	d = h.hfWith(func(f map[string][]byte) {
		stEdit(t, f, func(h map[string]any) { entry(h, qHF)["shape"] = []int{64, 32} })
	})
	add("safetensors shape disagrees with its bytes", 1, info(d), stFile(d), qHF, "bytes of data")
	d = h.hfWith(func(f map[string][]byte) {
		stEdit(t, f, func(h map[string]any) { entry(h, qHF)["data_offsets"] = []int64{0, 1 << 40} })
	})
	add("safetensors offsets out of range", 1, info(d), stFile(d), qHF, "outside")
	d = h.hfWith(func(f map[string][]byte) {
		stEdit(t, f, func(h map[string]any) {
			off := entry(h, qHF)["data_offsets"].([]any)
			entry(h, qHF)["data_offsets"] = []any{off[1], off[0]}
		})
	})
	add("safetensors offsets reversed", 1, info(d), stFile(d), qHF, "data_offsets")
	d = h.hfWith(func(f map[string][]byte) {
		stEdit(t, f, func(h map[string]any) {
			entry(h, "model.layers.0.self_attn.o_proj.weight")["data_offsets"] = entry(h, qHF)["data_offsets"]
		})
	})
	add("safetensors overlapping tensors", 1, info(d), stFile(d), qHF, "o_proj", "overlaps")
	d = h.hfWith(func(f map[string][]byte) {
		hdr, data := stHeader(t, f["model.safetensors"])
		qb, _ := json.Marshal(hdr[qHF])
		hb, _ := json.Marshal(hdr)
		f["model.safetensors"] = stJoin(append([]byte(fmt.Sprintf("{%q:%s,", qHF, qb)), hb[1:]...), data)
	})
	add("safetensors duplicate tensor name", 1, info(d), stFile(d), qHF, "twice")
	d = h.hfWith(func(f map[string][]byte) {
		hdr, data := stHeader(t, f["model.safetensors"])
		hb, _ := json.Marshal(hdr)
		f["model.safetensors"] = stJoin(append(hb, "{}"...), data)
	})
	add("safetensors trailing bytes in the header", 1, info(d), stFile(d), "unexpected bytes")
	d = h.hfWith(func(f map[string][]byte) {
		hdr, data := stHeader(t, f["model.safetensors"])
		start := int(entry(hdr, qHF)["data_offsets"].([]any)[0].(float64))
		binary.LittleEndian.PutUint32(data[start+4*7:], math.Float32bits(float32(math.Inf(-1))))
	})
	// info reads headers only; the weights are read (and checked) when a command runs the model.
	add("safetensors infinity in a weight", 1, []string{"generate", "--model", d, "--prompt", "Once", "--max-tokens", "2"},
		stFile(d), qHF, "NaN or infinite", "index 7")
	cfgFile := func(d string) string { return filepath.Join(d, "config.json") }
	d = h.hfWith(func(f map[string][]byte) { f["config.json"] = []byte(`{"model_type": "llama",`) })
	add("config.json malformed", 1, info(d), cfgFile(d))
	d = h.hfWith(func(f map[string][]byte) { f["config.json"] = nil })
	add("config.json missing", 1, info(d), cfgFile(d))
	d = h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "config.json", func(m map[string]any) { m["hidden_size"] = 32 })
	})
	add("config.json hidden size disagrees with the weights", 1, info(d), "model.embed_tokens.weight", "shape")
	d = h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "config.json", func(m map[string]any) { m["num_hidden_layers"] = 6 })
	})
	add("config.json one layer more than the weights", 1, info(d), d, "model.layers.5.", "missing")
	d = h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "config.json", func(m map[string]any) { m["num_hidden_layers"] = 1 << 24 })
	})
	add("config.json 2^24 layers", 1, info(d), d, "model.layers.5.self_attn.q_proj.weight", "missing")
	d = h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "config.json", func(m map[string]any) { m["vocab_size"] = 1000 })
	})
	add("config.json vocabulary disagrees with the weights", 1, info(d), "model.embed_tokens.weight", "shape")
	d = h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "config.json", func(m map[string]any) { m["model_type"] = "bert" })
	})
	add("config.json unknown model type", 1, info(d), cfgFile(d), `"bert"`, "not supported")
	d = h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "config.json", func(m map[string]any) { m["hidden_size"] = "64" })
	})
	add("config.json hidden size is a string", 1, info(d), cfgFile(d), "hidden_size")
	d = h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "config.json", func(m map[string]any) { m["rope_scaling"] = map[string]any{"type": "yarn", "factor": 4} })
	})
	add("config.json unknown rope scaling", 1, info(d), cfgFile(d), "yarn")
	d = h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "config.json", func(m map[string]any) { m["num_attention_heads"] = 0 })
	})
	add("config.json zero heads", 1, info(d), cfgFile(d), "num_attention_heads")
	d = h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "config.json", func(m map[string]any) { m["head_dim"] = 1 << 24 })
	})
	add("config.json head dim 2^24", 1, info(d), cfgFile(d), "head dim 16777216")
	d = h.hfWith(func(f map[string][]byte) { f["generation_config.json"] = []byte(`{"eos_token_id": 99999}`) })
	add("generation_config.json eos outside the vocabulary", 1, info(d), d, "eos", "99999")
	shardIndex := func(f map[string][]byte, shard string, rename string) {
		hdr, _ := stHeader(t, f["model.safetensors"])
		wm := map[string]string{}
		for name := range hdr {
			if name != "__metadata__" {
				wm[name] = shard
			}
		}
		ib, _ := json.Marshal(map[string]any{"weight_map": wm})
		f["model.safetensors.index.json"] = ib
		f[rename] = f["model.safetensors"]
		f["model.safetensors"] = nil
	}
	idxFile := func(d string) string { return filepath.Join(d, "model.safetensors.index.json") }
	d = h.hfWith(func(f map[string][]byte) { shardIndex(f, "model-00001-of-00002.safetensors", "other.safetensors") })
	add("sharded index names a missing shard", 1, info(d), idxFile(d), "model-00001-of-00002.safetensors", "is missing")
	d = h.hfWith(func(f map[string][]byte) { shardIndex(f, "../model.safetensors", "x.safetensors") })
	add("sharded index escapes the folder", 1, info(d), idxFile(d), "../model.safetensors", "not a plain file name")
	d = h.hfWith(func(f map[string][]byte) {
		shardIndex(f, "a.safetensors", "a.safetensors")
		f["model.safetensors.index.json"] = []byte(`{"weight_map": {`)
	})
	add("sharded index malformed", 1, info(d), idxFile(d))
	d = h.hfWith(func(f map[string][]byte) {
		shardIndex(f, "a.safetensors", "a.safetensors")
		editJSON(t, f, "model.safetensors.index.json", func(m map[string]any) {
			m["weight_map"].(map[string]any)["model.layers.9.mlp.up_proj.weight"] = "a.safetensors"
		})
	})
	add("sharded index names a tensor its shard lacks", 1, info(d), idxFile(d), "model.layers.9.mlp.up_proj.weight", "not found")
	d = h.hfWith(func(f map[string][]byte) {
		shardIndex(f, "a.safetensors", "a.safetensors")
		f["model.safetensors.index.json"] = []byte(`{"weight_map": {}}`)
	})
	add("sharded index empty", 1, info(d), idxFile(d), "empty weight_map")
	d = h.hfWith(func(f map[string][]byte) {
		shardIndex(f, "a.safetensors", "a.safetensors")
		editJSON(t, f, "model.safetensors.index.json", func(m map[string]any) { delete(m["weight_map"].(map[string]any), qHF) })
	})
	add("shard holds a tensor the index lacks", 1, info(d), idxFile(d), qHF, "not in the index")

	// ---- tokenizer files ----
	tokFile := func(d string) string { return filepath.Join(d, "tokenizer.json") }
	editTok := func(edit func(m map[string]any)) string {
		return tokFile(h.hfWith(func(f map[string][]byte) { editJSON(t, f, "tokenizer.json", edit) }))
	}
	modelOf := func(m map[string]any) map[string]any { return m["model"].(map[string]any) }
	p = tokFile(h.hfWith(func(f map[string][]byte) { f["tokenizer.json"] = f["tokenizer.json"][:500] }))
	add("tokenizer.json truncated", 1, tok(p), p)
	p = tokFile(h.hfWith(func(f map[string][]byte) { f["tokenizer.json"] = []byte{} }))
	add("tokenizer.json empty", 1, tok(p), p)
	p = editTok(func(m map[string]any) { modelOf(m)["type"] = "WordPiece" })
	add("tokenizer.json WordPiece model", 1, tok(p), p, "WordPiece", "unsupported")
	p = editTok(func(m map[string]any) {
		m["normalizer"] = map[string]any{"type": "Precompiled", "precompiled_charsmap": "AA=="}
	})
	add("tokenizer.json unknown normalizer", 1, tok(p), p, "Precompiled", "unsupported normalizer")
	p = editTok(func(m map[string]any) { m["pre_tokenizer"] = map[string]any{"type": "UnicodeScripts"} })
	add("tokenizer.json unknown pre-tokenizer", 1, tok(p), p, "UnicodeScripts")
	p = editTok(func(m map[string]any) { m["decoder"] = map[string]any{"type": "CTC"} })
	add("tokenizer.json unknown decoder", 1, tok(p), p, "CTC")
	p = editTok(func(m map[string]any) { delete(modelOf(m), "merges") })
	add("tokenizer.json without merges", 1, tok(p), p, "missing merges")
	p = editTok(func(m map[string]any) { modelOf(m)["merges"] = []any{"▁ t", "qq zz"} })
	add("tokenizer.json merge of unknown tokens", 1, tok(p), p, "merges[1]", "qq")
	p = editTok(func(m map[string]any) { modelOf(m)["vocab"].(map[string]any)["▁t"] = -3 })
	add("tokenizer.json negative id", 1, tok(p), p, "-3")
	p = editTok(func(m map[string]any) {
		m["post_processor"].(map[string]any)["special_tokens"].(map[string]any)["<s>"].(map[string]any)["ids"] = []int{100000}
	})
	add("tokenizer.json special id outside the vocabulary", 1, tok(p), p, "post_processor", "100000")
	p = editTok(func(m map[string]any) {
		m["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `(?<=a)b`}, "behavior": "Isolated"}
	})
	add("tokenizer.json lookbehind pattern", 1, tok(p), p, "pre_tokenizer")
	p = tokFile(h.hfWith(func(f map[string][]byte) { f["tokenizer_config.json"] = []byte(`{"bos_token": "<nope>"}`) }))
	add("tokenizer_config.json bos not in the vocabulary", 1, tok(p), "tokenizer_config.json", "<nope>")
	p = tokFile(h.hfWith(func(f map[string][]byte) { f["tokenizer_config.json"] = []byte(`{"bos_token": `) }))
	add("tokenizer_config.json malformed", 1, tok(p), "tokenizer_config.json")

	// ---- training data ----
	out := filepath.Join(h.dir, "out")
	train := func(data string, extra ...string) []string {
		return append([]string{"train", "--model", ggufPath, "--data", data, "--steps", "1", "--batch-size", "1",
			"--seq-len", "8", "--out", out}, extra...)
	}
	data := func(name, content string) string { return h.file(name, []byte(content)) }
	addTrain := func(name string, code int, args []string, want ...string) {
		cases = append(cases, hostileCase{name: name, args: args, code: code, want: want, out: out})
	}
	ok := `{"text": "Once upon a time there was a cat."}` + "\n"
	p = data("bad.jsonl", ok+ok+`{"text": "unterminated}`+"\n")
	addTrain("jsonl malformed line", 1, train(p), p+":3", "invalid JSON")
	p = data("ok.jsonl", ok+ok)
	addTrain("--dtype unknown", 2, train(p, "--dtype", "f8"), "--dtype", `"f8" is not one of`)
	addTrain("--trainer unknown", 2, train(p, "--trainer", "gpu"), "--trainer", `"gpu": use auto, cpu or graph`)
	if testbackend.IsGo() {
		addTrain("--trainer cpu with dropout", 2, train(p, "--trainer", "cpu", "--dropout", "0.1"), "--trainer", "dropout")
	} else {
		addTrain("--trainer cpu off the Go backend", 2, train(p, "--trainer", "cpu"), "--trainer", "Go backend")
	}
	if testbackend.IsGo() {
		addTrain("--dtype the Go backend computes wrongly", 2, train(p, "--dtype", "bf16"), "--dtype", "wrong results")
	}
	p = data("types.jsonl", ok+`{"text": 3}`+"\n")
	addTrain("jsonl number for text", 1, train(p), p+":2", "must be a string")
	p = data("msgtype.jsonl", `{"messages": "hi"}`+"\n")
	addTrain("jsonl string for messages", 1, train(p), p+":1", "must be an array")
	p = data("empty.jsonl", "")
	addTrain("jsonl empty file", 1, train(p), p, "no examples")
	p = data("blank.jsonl", "\n  \n\t\n")
	addTrain("jsonl blank lines only", 1, train(p), p, "no examples")
	p = data("emptytext.jsonl", ok+`{"text": "  "}`+"\n")
	addTrain("jsonl empty text", 1, train(p), p+":2", "empty")
	p = data("nocompletion.jsonl", `{"prompt": "Q?"}`+"\n")
	addTrain("jsonl prompt without completion", 1, train(p), p+":1", "prompt")
	p = data("utf8.jsonl", ok+"{\"text\": \"caf\xe9\"}\n")
	addTrain("jsonl invalid UTF-8", 1, train(p), p+":2", "invalid UTF-8")
	p = data("surrogate.jsonl", `{"text": "\ud83d alone"}`+"\n")
	addTrain("jsonl lone surrogate", 1, train(p), p+":1", "surrogate")
	p = data("dupkey.jsonl", `{"text": "a b c", "text": "d e f"}`+"\n")
	addTrain("jsonl duplicate key", 1, train(p), p+":1", "duplicate")
	p = data("nochat.jsonl", `{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}`+"\n")
	addTrain("jsonl chat without a chat template", 1, train(p), p+":1", "chat template")
	p = data("noassistant.jsonl", `{"messages": [{"role": "user", "content": "hi"}]}`+"\n")
	addTrain("jsonl chat without an assistant turn", 1, train(p), p+":1", "assistant")
	// A chat template is code from a model file: one that once hung the lexer, and one that floods memory.
	for name, tmpl := range map[string]string{"non-ASCII name": "{{ café }}",
		"doubling string": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"} {
		m := h.hfWith(func(f map[string][]byte) {
			editJSON(t, f, "tokenizer_config.json", func(m map[string]any) { m["chat_template"] = tmpl })
		})
		p = data("chat.jsonl", `{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}`+"\n")
		addTrain("hostile chat template: "+name, 1, append(train(p), "--model", m), p+":1", "chat template")
	}
	p = data("array.jsonl", "[1, 2, 3]\n")
	addTrain("jsonl array line", 1, train(p), p+":1", "object")
	long := `{"text": "` + strings.Repeat("Once upon a time there was a cat. ", 20) + `"}` + "\n"
	p = data("long.jsonl", ok+long+ok+long)
	addTrain("jsonl examples longer than the sequence (no truncation)", 1, train(p, "--pack=false", "--truncate=false", "--seq-len", "64"),
		p+":2", "more than sequence length", "2 of 4 examples are too long")
	p = data("evalbad.jsonl", ok+"{\n")
	addTrain("jsonl malformed eval data", 1, train(data("good.jsonl", ok+ok), "--eval-data", p), p+":2")
	missing := filepath.Join(h.dir, "absent.jsonl")
	addTrain("jsonl missing file", 1, train(missing), missing)
	addTrain("jsonl is a folder", 1, train(h.dir), h.dir)

	// ---- flags: usage errors (exit 2) ----
	good := data("flags.jsonl", ok+ok)
	usage := func(name string, args []string, want ...string) {
		cases = append(cases, hostileCase{name: name, args: args, code: 2, want: want, out: out})
	}
	for _, fc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--lr", "-1e-3"}, "--lr"}, {[]string{"--lr", "NaN"}, "--lr"}, {[]string{"--lr", "Inf"}, "--lr"},
		{[]string{"--rank", "0"}, "rank"}, {[]string{"--rank", "-4"}, "rank"},
		{[]string{"--optimizer", "steepest", "--q", "3"}, "q"}, {[]string{"--optimizer", "steepest", "--q", "0.5"}, "q"},
		{[]string{"--optimizer", "steepest"}, "q"}, {[]string{"--optimizer", "adam", "--q", "1.5"}, "q"},
		{[]string{"--depth", "1"}, "depth"}, {[]string{"--batch-size", "0"}, "--batch-size"},
		{[]string{"--seq-len", "1"}, "--seq-len"}, {[]string{"--steps", "0"}, "--steps"},
		{[]string{"--optimizer", "rmsprop2"}, "rmsprop2"}, {[]string{"--init", "xavier"}, "xavier"},
		{[]string{"--schedule", "exponential"}, "exponential"}, {[]string{"--grad-accum", "0"}, "--grad-accum"},
		{[]string{"--eval-split", "1"}, "--eval-split"}, {[]string{"--eval-split", "0.2", "--eval-data", good}, "not both"},
		{[]string{"--dropout", "1"}, "dropout"}, {[]string{"--alpha", "0"}, "alpha"},
		{[]string{"--init-scale", "-1"}, "init scale"}, {[]string{"--warmup", "-1"}, "warmup"},
		{[]string{"--min-lr-ratio", "2"}, "ratio"}, {[]string{"--clip-norm", "-1"}, "--clip-norm"},
		{[]string{"--escape-delta", "1"}, "--escape-delta"}, {[]string{"--escape-norm", "-1"}, "--escape-norm"},
		{[]string{"--eval-every", "-1"}, "--eval-every"}, {[]string{"--beta1", "1"}, "beta1"},
		{[]string{"--beta2", "1.5"}, "beta2"}, {[]string{"--eps", "-1"}, "eps"},
		{[]string{"--weight-decay", "-1"}, "weight-decay"}, {[]string{"--optimizer", "sgd", "--momentum", "-0.5"}, "momentum"},
		{[]string{"--wd-mode", "sideways"}, "sideways"}, {[]string{"--layers", "one"}, "--layers"},
		{[]string{"--layers", "-1"}, "layer -1"}, {[]string{"--optimizer", "sgd", "--nesterov"}, "nesterov"},
		{[]string{"--optimizer", "sgd", "--beta1", "0.9"}, "beta1"}, {[]string{"--batch-size", "many"}, "--batch-size"},
		{[]string{"--backend", "go", "--pjrt-plugin", "/x.so"}, "--pjrt-plugin"},
	} {
		usage("train "+strings.Join(fc.flags, " "), train(good, fc.flags...), fc.want)
	}
	gm := []string{"generate", "--model", ggufPath, "--max-tokens", "2"}
	for _, fc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--top-p", "1.5"}, "top-p"}, {[]string{"--top-p", "-0.1"}, "top-p"}, {[]string{"--top-k", "-1"}, "top-k"},
		{[]string{"--temperature", "-1"}, "temperature"}, {[]string{"--temperature", "NaN"}, "temperature"},
		{[]string{"--max-tokens", "-1"}, "--max-tokens"}, {[]string{"--seed", "-1"}, "--seed"},
		{[]string{"--stop-token", "x"}, "--stop-token"},
	} {
		usage("generate "+strings.Join(fc.flags, " "), append(append([]string(nil), gm...), fc.flags...), fc.want)
	}
	add("generate with a prompt beyond the context", 1, append(append([]string(nil), gm...), "--prompt",
		strings.Repeat("Once upon a time ", 3000)), "context of 2048")
	usage("unknown command", []string{"finetune"}, "unknown command")
	usage("unknown flag", []string{"train", "--learning-rate", "1"}, "unknown flag")
	usage("extra argument", []string{"info", "--model", ggufPath, "extra"}, "extra")
	usage("empty --model", []string{"info", "--model", " "}, "--model")
	usage("tokenize without --text", []string{"tokenize", "--model", ggufPath}, "--text")
	usage("tokenize with --model and --tokenizer", []string{"tokenize", "--model", ggufPath, "--tokenizer",
		filepath.Join(hfPath, "tokenizer.json"), "--text", "x"}, "not both")
	usage("train without --out", []string{"train", "--model", ggufPath}, "--out")
	yml := func(s string) string { return h.file("run.yaml", []byte(s)) }
	p = yml("lr: 1e-3\nlearning_rate: 2\n")
	usage("config file unknown key", train(good, "--config", p), p, "learning_rate")
	p = yml("lr: [1, 2\n")
	usage("config file malformed", train(good, "--config", p), p)
	p = yml("lr: fast\n")
	usage("config file wrong type", train(good, "--config", p), p, "lr")
	p = yml("rank: 0\n")
	usage("config file out-of-range value", train(good, "--config", p), "rank")

	// ---- waiting for fixes outside the files these tests own ----
	// Cases once listed as gaps, now enforced (fix names what closed them).
	gap := func(name, fix string, code int, args []string, want ...string) {
		cases = append(cases, hostileCase{name: name, args: args, code: code, want: want, out: out})
	}
	shortCtx := h.hfWith(func(f map[string][]byte) {
		editJSON(t, f, "config.json", func(m map[string]any) { m["max_position_embeddings"] = 16 })
	})
	gap("train --seq-len beyond the model context", "cmd/saddle/train.go: refuse SeqLen > MaxPositions", 2,
		[]string{"train", "--model", shortCtx, "--data", good, "--steps", "1", "--batch-size", "1", "--seq-len", "32", "--out", out},
		"--seq-len", "16")
	gap("train --rank beyond the adapted matrices", "lora.Spec/train.go: refuse rank > min(in, out)", 2, train(good, "--rank", "65"), "rank")
	gap("train --layers beyond the model", "cmd/saddle/train.go: check --layers against NumLayers as a usage error", 2,
		train(good, "--layers", "99"), "99")
	gap("train --targets that match nothing", "cmd/saddle/train.go: unmatched --targets is a usage error", 2,
		train(good, "--targets", "foo_proj"), "foo_proj")
	gap("train --init orthogonal with odd rank", "lora: odd rank for orthogonal init is a usage error", 2,
		train(good, "--init", "orthogonal", "--rank", "3"), "rank")
	gap("train --warmup beyond --steps", "optimizers.NewSchedule (via finetune.NewPlan): warmup > steps", 2, train(good, "--warmup", "5"), "warmup")
	gap("generate --temperature Inf", "model.Sampling.Validate: refuse infinite temperature", 2,
		append(append([]string(nil), gm...), "--temperature", "Inf"), "temperature")
	gap("generate --stop-token outside the vocabulary", "cmd/saddle/generate.go: check --stop-token ids", 2,
		append(append([]string(nil), gm...), "--stop-token", "99999"), "99999")
	gap("generate --backend with an unknown name", "backend.New: an unknown name is a usage error", 2,
		append(append([]string(nil), gm...), "--backend", "tpu9000"), "tpu9000")
	return cases
}

func TestHostileInputs(t *testing.T) {
	start := time.Now()
	cases := hostileCases(t)
	checked, gaps := 0, 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.out != "" {
				os.RemoveAll(tc.out)
			}
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			msg := stderr.String()
			if strings.Contains(msg, "panic") || strings.Contains(msg, "goroutine ") {
				t.Fatalf("saddle %q printed a panic or a goroutine dump:\n%s", tc.args, msg)
			}
			var problems []string
			if code != tc.code {
				problems = append(problems, fmt.Sprintf("exit %d, want %d", code, tc.code))
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					problems = append(problems, fmt.Sprintf("stderr does not mention %q", w))
				}
			}
			if tc.out != "" {
				if entries, err := os.ReadDir(tc.out); err == nil && len(entries) > 0 {
					names := make([]string, len(entries))
					for i, e := range entries {
						names[i] = e.Name()
					}
					problems = append(problems, fmt.Sprintf("--out holds %v after a failed run", names))
				}
			}
			if len(problems) == 0 {
				checked++
				return
			}
			if tc.gap != "" {
				gaps++
				t.Skipf("known gap, needs a fix in %s: %s\nstderr: %.300s", tc.gap, strings.Join(problems, "; "), msg)
			}
			t.Errorf("saddle %q: %s\nstderr: %s", tc.args, strings.Join(problems, "; "), msg)
		})
	}
	t.Logf("%d hostile cases (%d known gaps still open) in %v", len(cases), gaps, time.Since(start).Round(time.Millisecond))
	if len(cases) < 60 {
		t.Errorf("only %d cases", len(cases))
	}
}
