package gguf

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	hfgguf "github.com/gomlx/go-huggingface/models/gguf"

	"github.com/saddle-ml/saddle/internal/dtype"
)

// TestWriteReadBack reads a written file with go-huggingface's independent GGUF reader.
func TestWriteReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.gguf")
	md := []KV{
		{"general.architecture", "llama"},
		{"general.alignment", uint32(64)},
		{"a.u8", uint8(200)}, {"a.i8", int8(-3)}, {"a.u16", uint16(60000)}, {"a.i16", int16(-300)},
		{"a.u32", uint32(4000000000)}, {"a.i32", int32(-7)}, {"a.u64", uint64(1 << 40)}, {"a.i64", int64(-1 << 40)},
		{"a.f32", float32(0.25)}, {"a.f64", 1e-300}, {"a.bool", true},
		{"a.strs", []string{"x", "", "héllo"}}, {"a.f32s", []float32{1, -2.5}}, {"a.i32s", []int32{-1, 5}},
		{"a.bools", []bool{true, false}},
	}
	// Q8_0 row: 31 multiples of 0.25 and 127·0.25, so d = 0.25 exactly and q = 4·x.
	q8 := make([]float32, 32)
	for j := range q8 {
		q8[j] = float32(j-16) * 0.25
	}
	q8[31] = 31.75
	tensors := []Tensor{
		{Name: "f32", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "f16", Shape: []int{3}, Data: []float32{1, -2, 65504}, DType: "F16"},
		{Name: "bf16", Shape: []int{2}, Data: []float32{1, 3.140625}, DType: "BF16"},
		{Name: "q8", Shape: []int{1, 32}, Data: q8, DType: "Q8_0"},
	}
	if err := Write(path, md, tensors); err != nil {
		t.Fatal(err)
	}
	f, err := hfgguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 3 || f.Alignment != 64 || f.DataOffset()%64 != 0 {
		t.Errorf("version %d alignment %d data offset %d", f.Version, f.Alignment, f.DataOffset())
	}
	for _, kv := range md {
		got, ok := f.GetKeyValue(kv.Key)
		if !ok {
			t.Errorf("%s missing", kv.Key)
			continue
		}
		if fmt.Sprintf("%T %v", got.Raw(), got.Raw()) != fmt.Sprintf("%T %v", kv.Value, kv.Value) {
			t.Errorf("%s = %T %v, want %T %v", kv.Key, got.Raw(), got.Raw(), kv.Value, kv.Value)
		}
	}
	r, err := hfgguf.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	wantInfo := map[string]struct {
		shape []uint64
		typ   hfgguf.TensorType
		raw   []byte
	}{
		"f32":  {[]uint64{3, 2}, hfgguf.TensorTypeF32, le32(1, 2, 3, 4, 5, 6)},
		"f16":  {[]uint64{3}, hfgguf.TensorTypeF16, le16(0x3C00, 0xC000, 0x7BFF)},
		"bf16": {[]uint64{2}, hfgguf.TensorTypeBF16, le16(0x3F80, 0x4049)},
		"q8":   {[]uint64{32, 1}, hfgguf.TensorTypeQ8_0, q8Block(0x3400, q8)}, // f16 0x3400 = 0.25
	}
	for name, w := range wantInfo {
		raw, info, err := r.ReadTensorRaw(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(info.Shape, w.shape) || info.Type != w.typ || info.Offset%64 != 0 {
			t.Errorf("%s: shape %v type %s offset %d, want %v %s aligned", name, info.Shape, info.Type, info.Offset, w.shape, w.typ)
		}
		if !slices.Equal(raw, w.raw) {
			t.Errorf("%s: bytes %x, want %x", name, raw, w.raw)
		}
	}
}

func le32(vals ...float32) []byte {
	var b []byte
	for _, v := range vals {
		b, _ = binary.Append(b, binary.LittleEndian, v)
	}
	return b
}

func le16(vals ...uint16) []byte {
	var b []byte
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

// q8Block is the expected Q8_0 block for values that are exact multiples of 0.25 (q = 4·x).
func q8Block(d uint16, vals []float32) []byte {
	b := binary.LittleEndian.AppendUint16(nil, d)
	for _, v := range vals {
		b = append(b, byte(int8(v*4)))
	}
	return b
}

func TestWriteErrors(t *testing.T) {
	ok := Tensor{Name: "t", Shape: []int{2}, Data: []float32{1, 2}}
	cases := []struct {
		name string
		md   []KV
		ts   []Tensor
		want string
	}{
		{"plain int", []KV{{"k", 3}}, nil, "no GGUF type"},
		{"duplicate key", []KV{{"k", "a"}, {"k", "b"}}, nil, "twice"},
		{"bad alignment", []KV{{"general.alignment", uint32(12)}}, nil, "alignment"},
		{"duplicate tensor", nil, []Tensor{ok, ok}, "twice"},
		{"data length", nil, []Tensor{{Name: "t", Shape: []int{3}, Data: []float32{1}}}, "values"},
		{"q8 row", nil, []Tensor{{Name: "t", Shape: []int{2, 16}, Data: make([]float32, 32), DType: "Q8_0"}}, "blocks"},
		{"dtype", nil, []Tensor{{Name: "t", Shape: []int{2}, Data: []float32{1, 2}, DType: "IQ2_XXS"}}, "IQ2_XXS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "x.gguf")
			err := Write(path, tc.md, tc.ts)
			wantErr(t, err, path, tc.want)
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("left files behind: %v", entries)
			}
		})
	}
}

// TestWriteThenReadTensor reads every written tensor back through this package's own parser and ReadTensor.
func TestWriteThenReadTensor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.gguf")
	q8 := make([]float32, 64)
	for j := range q8 {
		q8[j] = float32(j%32-16) * 0.25
	}
	q8[0], q8[32] = 31.75, 31.75 // d = 0.25 in both blocks: exact
	tensors := []Tensor{
		{Name: "f32", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "f16", Shape: []int{3}, Data: []float32{1, -2, 65504}, DType: "F16"},
		{Name: "bf16", Shape: []int{2}, Data: []float32{1, 3.140625}, DType: "BF16"},
		{Name: "q8", Shape: []int{2, 32}, Data: q8, DType: "Q8_0"},
	}
	md := []KV{{"general.architecture", "llama"}, {"n", []uint32{1, 2}}}
	if err := Write(path, md, tensors); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Get("n"); !slices.Equal(v.([]uint32), []uint32{1, 2}) {
		t.Errorf("n = %v", v)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	for i, want := range tensors {
		info := &f.Tensors[i]
		if info.Name != want.Name || info.Type.String() != storedDType(want.DType) {
			t.Fatalf("tensor %d: %s %s, want %s %s", i, info.Name, info.Type, want.Name, storedDType(want.DType))
		}
		got, err := f.ReadTensor(fh, info)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want.Data) {
			t.Errorf("%s: read %v, wrote %v", want.Name, got, want.Data)
		}
	}
	unknown := TensorInfo{Name: "iq2", Type: 16, Size: -1}
	if _, err := f.ReadTensor(fh, &unknown); err == nil {
		t.Error("read an IQ2_XXS tensor")
	}
	// Read gives back what Write took: shapes outermost first, data, and the stored type.
	_, all, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range tensors {
		got := all[i]
		if got.Name != want.Name || !slices.Equal(got.Shape, want.Shape) || !slices.Equal(got.Data, want.Data) ||
			got.DType != storedDType(want.DType) {
			t.Errorf("Read: tensor %d is %s %v %s %v, wrote %s %v %s %v", i, got.Name, got.Shape, got.DType, got.Data,
				want.Name, want.Shape, storedDType(want.DType), want.Data)
		}
	}
}

// TestTensorTypeTable checks the table against internal/dtype's sizes and its name lookup.
func TestTensorTypeTable(t *testing.T) {
	// ggml's numbers for the types dtype codes (ggml.h's enum ggml_type).
	numbers := map[string]TensorType{"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8,
		"Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "BF16": 30}
	for name, typ := range numbers {
		if typ.String() != name || !dtype.Known(name) {
			t.Errorf("type %d is %s, want %s (dtype knows it: %v)", typ, typ, name, dtype.Known(name))
		}
		size, ok := typ.Size(512)
		want, err := dtype.Size(typ.String(), 512)
		if !ok || err != nil || size != want {
			t.Errorf("%s: %d bytes for 512 elements, dtype says %d (%v)", typ, size, want, err)
		}
		if back, ok := TensorTypeByName(typ.String()); !ok || back != typ {
			t.Errorf("TensorTypeByName(%s) = %d", typ, back)
		}
	}
	if _, ok := TensorTypeByName("Q9_9"); ok {
		t.Error("found Q9_9")
	}
}
