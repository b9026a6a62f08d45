package model

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/gguf"
	"github.com/saddle-ml/saddle/internal/testbackend"
)

// TestQuantizedWeightsStreamIntoF16: a quantized GGUF's matrices are dequantized a chunk at a time straight into
// their f16 backend tensors; the model computes exactly what it computes from the same values read whole as
// float32 (ReadAll) and rounded to f16, Q/K row order included. A NaN scale is an error naming the file, the tensor and the index.
func TestQuantizedWeightsStreamIntoF16(t *testing.T) {
	c := fuzzConfig("llama")
	c.HiddenSize, c.IntermediateSize, c.NumHeads, c.NumKVHeads, c.HeadDim = 32, 32, 2, 2, 16
	path := filepath.Join(t.TempDir(), "q.gguf")
	if err := gguf.Write(path, ggufMetadataFor(c), ggufTensorsFor(t, c, synthWeights(c, 5), dtype.Q4_1)); err != nil {
		t.Fatal(err)
	}
	backend := testbackend.Get(t)
	logitsOf := func(p *Pretrained) [][]float32 {
		t.Helper()
		m, err := New(backend, p)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Finalize()
		out, err := m.Logits([]int32{1, 2, 3, 4, 5})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	streamed, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if streamed.DType != dtype.Q4_1 {
		t.Fatalf("dtype %s, want Q4_1", streamed.DType)
	}
	// The same values read whole as float32, rounded to f16 as the streamed tensors hold them (in-memory weights
	// are held as float32; the Go backend multiplies f16 weights in float32).
	whole, err := Load(path)
	if err == nil {
		err = whole.ReadAll()
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range whole.Weights {
		if len(w.Shape) == 2 {
			var half bytes.Buffer
			if err := dtype.Encode(&half, dtype.F16, w.Data); err != nil {
				t.Fatal(err)
			}
			if _, err := dtype.Decode(dtype.F16, half.Bytes(), w.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	a, b := logitsOf(streamed), logitsOf(whole)
	for i := range a {
		if !slices.Equal(a[i], b[i]) {
			t.Fatalf("position %d: streamed %v, read whole %v", i, a[i], b[i])
		}
	}

	// A NaN block scale (f16 0x7E00) in the second block of blk.0.attn_q.weight.
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range f.Tensors {
		if info.Name == "blk.0.attn_q.weight" {
			at := f.DataOffset + int64(info.Offset) + int64(dtype.BlockBytes(dtype.Q4_1))
			data[at], data[at+1] = 0x00, 0x7E
		}
	}
	bad := filepath.Join(t.TempDir(), "nan.gguf")
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(bad)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(backend, p)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "blk.0.attn_q.weight") ||
		!strings.Contains(err.Error(), "NaN") || !strings.Contains(err.Error(), "index 32") {
		t.Errorf("NaN scale: %v", err)
	}
}
