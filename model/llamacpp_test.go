package model_test

import (
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/gguf"
	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/tokenizer"
)

// wideDim is the hidden and FFN size of the widened stories260K model: K-quants need rows of 256 values.
const wideDim = 256

// widenStories writes stories260K with its hidden size (64) and FFN size (172) zero-padded to 256: the padded
// parts of every activation stay exactly zero, and RMSNorm sees a mean square 4 times smaller, which halving the
// norm weights and quartering ε undo, so the widened model computes the same function (checked below). Every
// matrix whose rows are whole blocks of quant is stored as quant ("" keeps F32); attn_output's rows stay 64
// (the 8 heads of 8), too short for the K-quants' blocks of 256, so it is F32 then. With embedOnly, only the
// embedding is quantized and the output projection is a separate F32 copy of it (stories260K's file has one), so that llama.cpp uses the
// quantized tensor only to look rows up, which it dequantizes exactly.
func widenStories(t *testing.T, src, dst, quant string, embedOnly bool) {
	t.Helper()
	f, tensors, err := gguf.Read(src)
	if err != nil {
		t.Fatal(err)
	}
	const arch = "llama."
	var kvs []gguf.KV
	var dim, ffn int
	for _, kv := range f.KVs {
		switch kv.Key {
		case arch + "embedding_length":
			dim = int(kv.Value.(uint32))
			kv.Value = uint32(wideDim)
		case arch + "feed_forward_length":
			ffn = int(kv.Value.(uint32))
			kv.Value = uint32(wideDim)
		case arch + "attention.layer_norm_rms_epsilon":
			kv.Value = kv.Value.(float32) / 4
		case arch + "attention.key_length", arch + "attention.value_length":
			continue // written below
		}
		kvs = append(kvs, kv)
	}
	heads, ok := f.Get(arch + "attention.head_count")
	if !ok || dim == 0 || ffn == 0 || dim > wideDim || ffn > wideDim {
		t.Fatalf("%s: unexpected config (dim %d, ffn %d)", src, dim, ffn)
	}
	headDim := uint32(dim) / heads.(uint32)
	kvs = append(kvs, gguf.KV{Key: arch + "attention.key_length", Value: headDim},
		gguf.KV{Key: arch + "attention.value_length", Value: headDim})
	var out []gguf.Tensor
	for _, info := range tensors {
		data, shape := info.Data, info.Shape
		grow := func(n int) int { // the widened size of a dimension of n
			if n == dim || n == ffn {
				return wideDim
			}
			return n
		}
		tt := gguf.Tensor{Name: info.Name}
		switch {
		case len(shape) == 1: // a norm's weight: halved, zero-padded
			tt.Shape = []int{grow(shape[0])}
			tt.Data = make([]float32, tt.Shape[0])
			for j, v := range data {
				tt.Data[j] = v / 2
			}
		case len(shape) == 2:
			rows, cols := shape[0], shape[1]
			if strings.HasSuffix(info.Name, "attn_q.weight") || strings.HasSuffix(info.Name, "attn_k.weight") ||
				strings.HasSuffix(info.Name, "attn_v.weight") || info.Name == "token_embd.weight" || info.Name == "output.weight" {
				tt.Shape = []int{rows, grow(cols)} // head rows and vocabulary rows keep their count
			} else {
				tt.Shape = []int{grow(rows), grow(cols)}
			}
			if info.Name == "blk.0.attn_output.weight" || strings.HasSuffix(info.Name, "attn_output.weight") {
				tt.Shape = []int{grow(rows), cols} // [hidden, heads·head dim]
			}
			tt.Data = make([]float32, tt.Shape[0]*tt.Shape[1])
			for r := range rows {
				copy(tt.Data[r*tt.Shape[1]:], data[r*cols:(r+1)*cols])
			}
			if embedOnly && info.Name == "token_embd.weight" && !slices.ContainsFunc(tensors, func(ti gguf.Tensor) bool {
				return ti.Name == "output.weight"
			}) {
				out = append(out, gguf.Tensor{Name: "output.weight", Shape: tt.Shape, Data: tt.Data})
			}
			if quant != "" && tt.Shape[1]%dtype.BlockSize(quant) == 0 && (!embedOnly || info.Name == "token_embd.weight") {
				tt.DType = quant
			}
		default:
			t.Fatalf("%s: tensor %q has shape %v", src, info.Name, shape)
		}
		out = append(out, tt)
	}
	if err := gguf.Write(dst, kvs, out); err != nil {
		t.Fatal(err)
	}
}

// logSoftmax turns logits into log-probabilities, in float64.
func logSoftmax(logits []float32) []float64 {
	mx := float64(slices.Max(logits))
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v) - mx)
	}
	out := make([]float64, len(logits))
	for i, v := range logits {
		out[i] = float64(v) - mx - math.Log(z)
	}
	return out
}

// saddleLogProbs runs saddle on the model at path and returns log-probabilities [position][token].
func saddleLogProbs(t *testing.T, path string, tokens []int32) [][]float64 {
	t.Helper()
	m := loadModel(t, path)
	defer m.Finalize()
	logits, err := m.Logits(tokens)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]float64, len(logits))
	for i, row := range logits {
		out[i] = logSoftmax(row)
	}
	return out
}

// llamaCppLogProbs runs llama.cpp (scripts/llamacpp-oracle/logprobs.mjs) on the models at paths and returns
// their log-probabilities [model][position][token].
func llamaCppLogProbs(t *testing.T, node, modules string, tokens []int32, vocab int, paths ...string) [][][]float64 {
	t.Helper()
	ids, _ := json.Marshal(tokens)
	args := append([]string{filepath.Join("..", "scripts", "llamacpp-oracle", "logprobs.mjs"), modules, string(ids)}, paths...)
	cmd := exec.Command(node, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("llama.cpp: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(stdout)), "\n")
	if len(lines) != len(paths) {
		t.Fatalf("llama.cpp gave %d results for %d models\n%s", len(lines), len(paths), stderr.String())
	}
	all := make([][][]float64, len(paths))
	for m, line := range lines {
		var rows []map[string]float64
		if err := json.Unmarshal([]byte(line), &rows); err != nil {
			t.Fatalf("llama.cpp output for %s: %v", paths[m], err)
		}
		if len(rows) != len(tokens) {
			t.Fatalf("llama.cpp gave %d positions for %d tokens", len(rows), len(tokens))
		}
		out := make([][]float64, len(rows))
		for i, row := range rows {
			out[i] = make([]float64, vocab)
			for j := range out[i] {
				out[i][j] = math.Inf(-1)
			}
			for k, p := range row {
				id, err := strconv.Atoi(k)
				if err != nil || id < 0 || id >= vocab {
					t.Fatalf("llama.cpp output: token %q", k)
				}
				out[i][id] = math.Log(p)
			}
		}
		all[m] = out
	}
	return all
}

// logProbGap compares log-probabilities: the largest |a − b| over every position and token, the largest over the
// likely tokens (p > 1% on either side), and the number of positions whose most likely token differs.
func logProbGap(a, b [][]float64) (worst, likely float64, argmaxDiffer int) {
	for i := range a {
		for j := range a[i] {
			d := math.Abs(a[i][j] - b[i][j])
			worst = max(worst, d)
			if max(a[i][j], b[i][j]) > math.Log(0.01) {
				likely = max(likely, d)
			}
		}
		if argmax(a[i]) != argmax(b[i]) {
			argmaxDiffer++
		}
	}
	return worst, likely, argmaxDiffer
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// TestQuantizedGGUFMatchesLlamaCpp writes the widened stories260K in every quantization saddle reads (with
// saddle's encoders) and requires saddle's next-token log-probabilities on a real sentence to match llama.cpp's.
// llama.cpp multiplies quantized weights by activations it quantizes itself (to 8 bits: Q8_0, Q8_1 or Q8_K
// blocks), so its results differ from saddle's exact products by that rounding; the bound tol allows for it and
// is far below what a wrong bit layout does (the log-probabilities of a misread tensor are off by whole nats,
// and so is the quantization's own effect on this model for the types of 5 bits and less, reported as
// "quantization moved saddle by").
func TestQuantizedGGUFMatchesLlamaCpp(t *testing.T) {
	src, hf := testenv.Stories260K(t)
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node not found; run scripts/fetch-tokenizers.sh (needs npm and node)")
	}
	testenv.Cached(t, "llamacpp", "node_modules", "node-llama-cpp", "package.json")
	modules := filepath.Join(testenv.TokenizerCache(), "llamacpp", "node_modules")
	tok, err := tokenizer.FromFile(filepath.Join(hf, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tokens []int32
	for _, id := range tok.Encode(storiesGreedy, true) {
		tokens = append(tokens, int32(id))
	}
	dir := t.TempDir()
	wide := filepath.Join(dir, "wide-F32.gguf")
	widenStories(t, src, wide, "", false)
	reference := saddleLogProbs(t, src, tokens)
	vocab := len(reference[0])
	// The widening is lossless: the widened F32 model computes what the original does.
	if gap, _, _ := logProbGap(reference, saddleLogProbs(t, wide, tokens)); gap > 1e-4 {
		t.Fatalf("widened F32 model: log-probabilities differ from the original's by %g", gap)
	}
	quants := []string{dtype.Q8_0, dtype.Q4_0, dtype.Q4_1, dtype.Q5_0, dtype.Q5_1, dtype.Q2_K, dtype.Q3_K, dtype.Q4_K,
		dtype.Q5_K, dtype.Q6_K}
	paths := []string{wide}
	for _, q := range quants {
		embed, all := filepath.Join(dir, "embed-"+q+".gguf"), filepath.Join(dir, "all-"+q+".gguf")
		widenStories(t, src, embed, q, true)
		widenStories(t, src, all, q, false)
		paths = append(paths, embed, all)
	}
	llama := llamaCppLogProbs(t, node, modules, tokens, vocab, paths...)
	gap, likely, differ := logProbGap(saddleLogProbs(t, wide, tokens), llama[0])
	t.Logf("F32 : saddle vs llama.cpp: max |Δ log p| %.4f (likely tokens %.4f), argmax differs at %d of %d positions",
		gap, likely, differ, len(tokens))
	if gap > 1e-3 || differ > 0 {
		t.Errorf("F32: saddle and llama.cpp differ by %g (argmax at %d positions)", gap, differ)
	}
	for n, q := range quants {
		// The embedding alone in q: llama.cpp dequantizes the rows it looks up exactly, so the only difference
		// left is saddle holding the dequantized values in f16 (2⁻¹¹ relative).
		ours := saddleLogProbs(t, paths[1+2*n], tokens)
		moved, _, _ := logProbGap(reference, ours)
		gap, likely, differ := logProbGap(ours, llama[1+2*n])
		t.Logf("%-4s embedding only: saddle vs llama.cpp: max |Δ log p| %.4f (likely tokens %.4f), argmax differs at "+
			"%d of %d positions; quantization moved saddle by %.3f", q, gap, likely, differ, len(tokens), moved)
		if gap > 0.01 || differ > 0 {
			t.Errorf("%s embedding: saddle and llama.cpp log-probabilities differ by %g, argmax at %d positions", q, gap, differ)
		}

		// Every matrix in q: llama.cpp now rounds the activations it multiplies by quantized weights to 8 bits
		// (Q8_0, Q8_1 or Q8_K blocks), which moves the likely tokens' log-probabilities by up to 0.2 on this tiny
		// model (about what Q8_0 weights do); a misread tensor moves them by whole nats, like the coarse types'
		// own quantization error. Allowed: max(0.3, a quarter of the quantization's effect), and one position
		// whose most likely token differs (measured: at most 1).
		ours = saddleLogProbs(t, paths[2+2*n], tokens)
		moved, movedLikely, _ := logProbGap(reference, ours)
		gap, likely, differ = logProbGap(ours, llama[2+2*n])
		t.Logf("%-4s all matrices:   saddle vs llama.cpp: max |Δ log p| %.4f (likely tokens %.4f), argmax differs at "+
			"%d of %d positions; quantization moved saddle by %.3f (likely tokens %.3f)", q, gap, likely, differ,
			len(tokens), moved, movedLikely)
		if tol := max(0.3, movedLikely/4); likely > tol || differ > 1 {
			t.Errorf("%s: saddle and llama.cpp likely-token log-probabilities differ by %g (tolerance %g), argmax at %d positions",
				q, likely, tol, differ)
		}
	}
}
