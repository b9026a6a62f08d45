package gguf

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/saddle-ml/saddle/internal/dtype"
)

// TestQuantizedTensorsAreSized: a K-quant tensor's size is known, so a truncated or mis-sized one is an error
// naming the file and the tensor.
func TestQuantizedTensorsAreSized(t *testing.T) {
	f, err := parse(newBuilder(3, 1, 0).tensor("w", TypeQ4_K, 0, 256, 2).pad(2 * 144).b)
	if err != nil || f.Tensors[0].Size != 2*144 {
		t.Fatalf("%v, %+v", err, f)
	}
	_, err = parse(newBuilder(3, 1, 0).tensor("w", TypeQ4_K, 0, 256, 2).pad(144).b)
	wantErr(t, err, "t.gguf", `tensor "w"`, "outside the data section")
	_, err = parse(newBuilder(3, 1, 0).tensor("w", TypeQ6_K, 0, 64, 2).pad(210).b)
	wantErr(t, err, "t.gguf", `tensor "w"`, "not whole Q6_K blocks of 256")
}

// TestWriteRawAndLoad writes one tensor from bytes (copied as they are) and one made when it is written; both
// read back, and raw bytes that do not fit the shape are refused before anything is written.
func TestWriteRawAndLoad(t *testing.T) {
	x := make([]float32, 512)
	for i := range x {
		x[i] = float32(i%37) - 18
	}
	var q4k bytes.Buffer
	if err := dtype.Encode(&q4k, dtype.Q4_K, x); err != nil {
		t.Fatal(err)
	}
	loads := 0
	tensors := []Tensor{
		{Name: "raw", Shape: []int{2, 256}, DType: "Q4_K", Raw: io.NewSectionReader(bytes.NewReader(q4k.Bytes()), 0, int64(q4k.Len()))},
		{Name: "lazy", Shape: []int{2, 256}, DType: "Q6_K", Load: func() ([]float32, error) { loads++; return x, nil }},
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := Write(path, nil, tensors); err != nil {
		t.Fatal(err)
	}
	if loads != 1 {
		t.Errorf("Load called %d times", loads)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	want, _ := dtype.ReadAt(bytes.NewReader(q4k.Bytes()), 0, dtype.Q4_K, 512)
	got, err := f.ReadTensor(fh, &f.Tensors[0])
	if err != nil || !slices.Equal(got, want) || f.Tensors[0].Type != TypeQ4_K {
		t.Errorf("raw tensor: %v, %s", err, f.Tensors[0].Type)
	}
	if got, err := f.ReadTensor(fh, &f.Tensors[1]); err != nil || f.Tensors[1].Type != TypeQ6_K || len(got) != 512 {
		t.Errorf("loaded tensor: %v, %s", err, f.Tensors[1].Type)
	}

	bad := filepath.Join(t.TempDir(), "bad.gguf")
	tensors[0].Raw = io.NewSectionReader(bytes.NewReader(q4k.Bytes()), 0, int64(q4k.Len()-1))
	err = Write(bad, nil, tensors[:1])
	wantErr(t, err, "bad.gguf", `tensor "raw"`, "do not hold shape")
	if _, statErr := os.Stat(bad); statErr == nil {
		t.Error("a file was written")
	}
}
