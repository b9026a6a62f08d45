package main

// -write-shape NAME DIR: a random-weight HF folder with the exact tensor shapes, config.json and shard layout of a
// published model, and its real tokenizer. The weights are bf16, written one tensor at a time in 4 MiB chunks, so
// that even the 8B folder (16 GB) is written in constant memory.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// realShape is a published model: its config.json (values as on the Hub), where its tokenizer is cached, and the
// generation_config.json ids.
type realShape struct {
	Repo      string         // the Hub repository it copies
	Config    map[string]any // config.json, as published
	Tokenizer string         // folder under the saddle tokenizer cache (scripts/fetch-tokenizers.sh)
	// TokenizerJSONFallback is a second cache folder for tokenizer.json when Tokenizer's has only
	// tokenizer_config.json (fetch-tokenizers.sh keeps only the chat template of llama3_1; Llama 3 and 3.1
	// tokenizer.json differ only in the post_processor).
	TokenizerJSONFallback string
	Generation            map[string]any // generation_config.json
}

// maxShardBytes is transformers' default max_shard_size ("5GB", decimal): tensors go into a shard in state-dict
// order until the next would pass it. This reproduces the published shard layouts (Llama-3.1-8B: 4.98, 5.00, 4.92
// and 1.17 GB; the 0.6B and 1B models fit one model.safetensors).
const maxShardBytes = 5_000_000_000

// num is a JSON number written as the published file writes it (Python's json: 8.0, 1e-05), which encoding/json
// would shorten to 8 and 0.00001.
type num = json.Number

var llama3RopeScaling = func(factor string) map[string]any {
	return map[string]any{"factor": num(factor), "high_freq_factor": num("4.0"), "low_freq_factor": num("1.0"),
		"original_max_position_embeddings": 8192, "rope_type": "llama3"}
}

// realShapes are the config.json files of Qwen/Qwen3-0.6B, meta-llama/Llama-3.2-1B and meta-llama/Llama-3.1-8B.
// Llama-3.1-8B's published config has no head_dim (transformers derives 4096/32 = 128); it is written here
// explicitly with that value.
var realShapes = map[string]realShape{
	"qwen3-0.6b": {
		Repo: "Qwen/Qwen3-0.6B", Tokenizer: "qwen3",
		Config: map[string]any{
			"architectures": []string{"Qwen3ForCausalLM"}, "attention_bias": false, "attention_dropout": num("0.0"),
			"bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
			"hidden_size": 1024, "initializer_range": num("0.02"), "intermediate_size": 3072,
			"max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
			"num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": num("1e-06"),
			"rope_scaling": nil, "rope_theta": 1000000, "sliding_window": nil, "tie_word_embeddings": true,
			"torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": true,
			"use_sliding_window": false, "vocab_size": 151936,
		},
		Generation: map[string]any{"bos_token_id": 151643, "do_sample": true, "eos_token_id": []int{151645, 151643},
			"pad_token_id": 151643, "temperature": 0.6, "top_k": 20, "top_p": 0.95},
	},
	"llama-3.2-1b": {
		Repo: "meta-llama/Llama-3.2-1B", Tokenizer: "llama3_1", TokenizerJSONFallback: "llama3",
		Config: map[string]any{
			"architectures": []string{"LlamaForCausalLM"}, "attention_bias": false, "attention_dropout": num("0.0"),
			"bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
			"hidden_size": 2048, "initializer_range": num("0.02"), "intermediate_size": 8192,
			"max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
			"num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
			"rms_norm_eps": num("1e-05"), "rope_scaling": llama3RopeScaling("32.0"), "rope_theta": num("500000.0"),
			"tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0",
			"use_cache": true, "vocab_size": 128256,
		},
		Generation: map[string]any{"bos_token_id": 128000, "do_sample": true, "eos_token_id": 128001,
			"temperature": 0.6, "top_p": 0.9},
	},
	"llama-3.1-8b": {
		Repo: "meta-llama/Llama-3.1-8B", Tokenizer: "llama3_1", TokenizerJSONFallback: "llama3",
		Config: map[string]any{
			"architectures": []string{"LlamaForCausalLM"}, "attention_bias": false, "attention_dropout": num("0.0"),
			"bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 128, "hidden_act": "silu",
			"hidden_size": 4096, "initializer_range": num("0.02"), "intermediate_size": 14336,
			"max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
			"num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
			"rms_norm_eps": num("1e-05"), "rope_scaling": llama3RopeScaling("8.0"), "rope_theta": num("500000.0"),
			"tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0",
			"use_cache": true, "vocab_size": 128256,
		},
		Generation: map[string]any{"bos_token_id": 128000, "do_sample": true, "eos_token_id": 128001,
			"temperature": 0.6, "top_p": 0.9},
	},
}

func shapeNames() []string {
	names := make([]string, 0, len(realShapes))
	for n := range realShapes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// shapeTensor is one weight to write: its HF name, shape, and whether it is a norm weight (all ones).
type shapeTensor struct {
	Name  string
	Shape []int
	Ones  bool
}

func (t shapeTensor) elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// cfgInt reads an integer field of a config map (ints as written in realShapes; float64 after a JSON round trip).
func cfgInt(c map[string]any, key string) (int, error) {
	switch v := c[key].(type) {
	case int:
		return v, nil
	case float64:
		if v == math.Trunc(v) {
			return int(v), nil
		}
	}
	return 0, fmt.Errorf("config.json: %s is %v, want an integer", key, c[key])
}

// stateDict lists the tensors of a config in transformers' state-dict order (embedding, each layer's attention,
// MLP and norms, final norm, LM head when untied): the order its shards are filled in.
func stateDict(c map[string]any) ([]shapeTensor, error) {
	get := map[string]int{}
	for _, k := range []string{"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
		"num_key_value_heads", "head_dim", "vocab_size"} {
		v, err := cfgInt(c, k)
		if err != nil {
			return nil, err
		}
		if v <= 0 {
			return nil, fmt.Errorf("config.json: %s %d must be positive", k, v)
		}
		get[k] = v
	}
	d, ffn, vocab, hd := get["hidden_size"], get["intermediate_size"], get["vocab_size"], get["head_dim"]
	q, kv := get["num_attention_heads"]*hd, get["num_key_value_heads"]*hd
	qkNorm := c["model_type"] == "qwen3"
	tied, _ := c["tie_word_embeddings"].(bool)
	out := []shapeTensor{{Name: "model.embed_tokens.weight", Shape: []int{vocab, d}}}
	for l := range get["num_hidden_layers"] {
		p := fmt.Sprintf("model.layers.%d.", l)
		out = append(out,
			shapeTensor{Name: p + "self_attn.q_proj.weight", Shape: []int{q, d}},
			shapeTensor{Name: p + "self_attn.k_proj.weight", Shape: []int{kv, d}},
			shapeTensor{Name: p + "self_attn.v_proj.weight", Shape: []int{kv, d}},
			shapeTensor{Name: p + "self_attn.o_proj.weight", Shape: []int{d, q}})
		if qkNorm {
			out = append(out,
				shapeTensor{Name: p + "self_attn.q_norm.weight", Shape: []int{hd}, Ones: true},
				shapeTensor{Name: p + "self_attn.k_norm.weight", Shape: []int{hd}, Ones: true})
		}
		out = append(out,
			shapeTensor{Name: p + "mlp.gate_proj.weight", Shape: []int{ffn, d}},
			shapeTensor{Name: p + "mlp.up_proj.weight", Shape: []int{ffn, d}},
			shapeTensor{Name: p + "mlp.down_proj.weight", Shape: []int{d, ffn}},
			shapeTensor{Name: p + "input_layernorm.weight", Shape: []int{d}, Ones: true},
			shapeTensor{Name: p + "post_attention_layernorm.weight", Shape: []int{d}, Ones: true})
	}
	out = append(out, shapeTensor{Name: "model.norm.weight", Shape: []int{d}, Ones: true})
	if !tied {
		out = append(out, shapeTensor{Name: "lm_head.weight", Shape: []int{vocab, d}})
	}
	return out, nil
}

// planShards splits the state dict into shards of at most maxBytes bf16 bytes, in order (a tensor larger than the
// limit gets a shard of its own). One shard is model.safetensors; more are model-0000N-of-0000M.safetensors.
func planShards(tensors []shapeTensor, maxBytes int64) (names []string, shards [][]shapeTensor) {
	var cur []shapeTensor
	var size int64
	for _, t := range tensors {
		b := 2 * t.elements()
		if len(cur) > 0 && size+b > maxBytes {
			shards, cur, size = append(shards, cur), nil, 0
		}
		cur, size = append(cur, t), size+b
	}
	if len(cur) > 0 {
		shards = append(shards, cur)
	}
	if len(shards) == 1 {
		return []string{"model.safetensors"}, shards
	}
	for i := range shards {
		names = append(names, fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards)))
	}
	return names, shards
}

// writeShape writes the folder for a named real shape. config.json is written last: its presence marks a complete
// folder (scripts/bench.sh reuses one that has it).
func writeShape(name, dir, tokenizerCache string) error {
	s, ok := realShapes[name]
	if !ok {
		return fmt.Errorf("-write-shape %q: unknown shape (known: %s)", name, strings.Join(shapeNames(), ", "))
	}
	return writeShapeFolder(dir, s, tokenizerCache, maxShardBytes)
}

func writeShapeFolder(dir string, s realShape, tokenizerCache string, maxBytes int64) error {
	sd, err := stateDict(s.Config)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, "config.json")) // an interrupted rewrite must not look complete
	files, shards := planShards(sd, maxBytes)
	weightMap := map[string]string{}
	var total int64
	for i, shard := range shards {
		size, err := writeBF16Shard(filepath.Join(dir, files[i]), shard)
		if err != nil {
			return err
		}
		total += size
		for _, t := range shard {
			weightMap[t.Name] = files[i]
		}
	}
	if len(files) > 1 {
		index := map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}
		if err := writeJSON(filepath.Join(dir, "model.safetensors.index.json"), index); err != nil {
			return err
		}
	}
	if err := copyTokenizer(dir, s, tokenizerCache); err != nil {
		return err
	}
	if s.Generation != nil {
		if err := writeJSON(filepath.Join(dir, "generation_config.json"), s.Generation); err != nil {
			return err
		}
	}
	return writeJSON(filepath.Join(dir, "config.json"), s.Config)
}

func writeJSON(path string, v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fileio.WriteFile(path, append(js, '\n'))
}

// copyTokenizer copies tokenizer.json and tokenizer_config.json from the saddle tokenizer cache. A missing cache
// is a warning: the benchmark needs no tokenizer.
func copyTokenizer(dir string, s realShape, cache string) error {
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return err
		}
		cache = filepath.Join(home, ".cache", "saddle", "tokenizers")
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		src := filepath.Join(cache, s.Tokenizer, f)
		if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) && f == "tokenizer.json" && s.TokenizerJSONFallback != "" {
			src = filepath.Join(cache, s.TokenizerJSONFallback, f)
			fmt.Fprintf(os.Stderr, "bench: no %s tokenizer.json in the cache; copying %s's (same vocabulary)\n", s.Tokenizer, s.TokenizerJSONFallback)
		}
		data, err := os.ReadFile(src)
		if errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "bench: %s not found (scripts/fetch-tokenizers.sh fills the cache); the folder has no %s\n", src, f)
			continue
		} else if err != nil {
			return err
		}
		if err := fileio.WriteFile(filepath.Join(dir, f), data); err != nil {
			return err
		}
	}
	return nil
}

// writeBF16Shard streams one safetensors file: the header (tensors sorted by name, as the safetensors library
// writes them), then each tensor's bf16 values, generated 4 MiB at a time. Returns the data section's size.
func writeBF16Shard(path string, shard []shapeTensor) (int64, error) {
	sorted := slices.Clone(shard)
	slices.SortFunc(sorted, func(a, b shapeTensor) int { return strings.Compare(a.Name, b.Name) })
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var offset int64
	for _, t := range sorted {
		size := 2 * t.elements()
		header[t.Name] = map[string]any{"dtype": "BF16", "shape": t.Shape, "data_offsets": []int64{offset, offset + size}}
		offset += size
	}
	h, err := json.Marshal(header)
	if err != nil {
		return 0, err
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	buf := make([]byte, 4<<20)
	err = fileio.Write(path, func(w io.Writer) error {
		w.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(h))))
		w.Write(h)
		for _, t := range sorted {
			g := newBF16Source(t)
			for left := 2 * t.elements(); left > 0; {
				n := min(left, int64(len(buf)))
				g.fill(buf[:n])
				if _, err := w.Write(buf[:n]); err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				left -= n
			}
		}
		return nil
	})
	return offset, err
}

// weightStd is the standard deviation of the random matrices (transformers' initializer_range).
const weightStd = 0.02

// normalBF16 holds 65536 bf16 values at the quantiles (i+½)/65536 of N(0, weightStd²): 16 random bits pick one,
// so a sample costs a table lookup (the 8B folder's 8·10⁹ values take seconds, not minutes).
var normalBF16 = func() [1 << 16]uint16 {
	var t [1 << 16]uint16
	for i := range t {
		p := (float64(i) + 0.5) / float64(len(t))
		t[i] = toBF16(float32(weightStd * math.Sqrt2 * math.Erfinv(2*p-1)))
	}
	return t
}()

// toBF16 rounds to nearest even (values here are finite).
func toBF16(f float32) uint16 {
	b := math.Float32bits(f)
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// bf16Source generates one tensor's values: ones for norm weights, otherwise normal samples from a splitmix64
// stream seeded by the tensor's name (the same folder every time, whatever the shard layout).
type bf16Source struct {
	ones bool
	s    uint64
}

func newBF16Source(t shapeTensor) *bf16Source {
	h := fnv.New64a()
	h.Write([]byte(t.Name))
	return &bf16Source{ones: t.Ones, s: h.Sum64()}
}

// fill writes len(b)/2 little-endian bf16 values (len(b) is even).
func (g *bf16Source) fill(b []byte) {
	if g.ones {
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = 0x80, 0x3f // 1.0
		}
		return
	}
	i := 0
	for ; i+8 <= len(b); i += 8 {
		r := g.next()
		binary.LittleEndian.PutUint16(b[i:], normalBF16[r&0xffff])
		binary.LittleEndian.PutUint16(b[i+2:], normalBF16[(r>>16)&0xffff])
		binary.LittleEndian.PutUint16(b[i+4:], normalBF16[(r>>32)&0xffff])
		binary.LittleEndian.PutUint16(b[i+6:], normalBF16[r>>48])
	}
	for r := g.next(); i+1 < len(b); i, r = i+2, r>>16 {
		binary.LittleEndian.PutUint16(b[i:], normalBF16[r&0xffff])
	}
}

func (g *bf16Source) next() uint64 { // splitmix64
	g.s += 0x9e3779b97f4a7c15
	z := g.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
