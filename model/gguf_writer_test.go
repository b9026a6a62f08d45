package model

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gomlx/go-huggingface/models/gguf"
)

// TestWriteGGUFReadBack reads a written file with go-huggingface's independent GGUF reader.
func TestWriteGGUFReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.gguf")
	md := []GGUFKeyValue{
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
	tensors := []GGUFTensor{
		{Name: "f32", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "f16", Shape: []int{3}, Data: []float32{1, -2, 65504}, Type: "F16"},
		{Name: "bf16", Shape: []int{2}, Data: []float32{1, 3.140625}, Type: "BF16"},
		{Name: "q8", Shape: []int{1, 32}, Data: q8, Type: "Q8_0"},
	}
	if err := WriteGGUF(path, md, tensors); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
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
	r, err := gguf.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	wantInfo := map[string]struct {
		shape []uint64
		typ   gguf.TensorType
		raw   []byte
	}{
		"f32":  {[]uint64{3, 2}, gguf.TensorTypeF32, le32(1, 2, 3, 4, 5, 6)},
		"f16":  {[]uint64{3}, gguf.TensorTypeF16, le16(0x3C00, 0xC000, 0x7BFF)},
		"bf16": {[]uint64{2}, gguf.TensorTypeBF16, le16(0x3F80, 0x4049)},
		"q8":   {[]uint64{32, 1}, gguf.TensorTypeQ8_0, q8Block(0x3400, q8)}, // f16 0x3400 = 0.25
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

// TestQuantizeQ8_0Rounding checks ggml's rounding: half away from zero, and an all-zero block.
func TestQuantizeQ8_0Rounding(t *testing.T) {
	x := make([]float32, 32)
	x[0] = 127 // d = 1
	x[1], x[2], x[3], x[4] = 2.5, -2.5, 0.49, -126.5
	out := make([]byte, q8BlockBytes)
	quantizeQ8_0(x, out)
	if d := binary.LittleEndian.Uint16(out); d != 0x3C00 {
		t.Errorf("d bits %#x, want 0x3C00 (1.0)", d)
	}
	if got := []int8{int8(out[2]), int8(out[3]), int8(out[4]), int8(out[5]), int8(out[6])}; !slices.Equal(got, []int8{127, 3, -3, 0, -127}) {
		t.Errorf("q = %v, want [127 3 -3 0 -127]", got)
	}
	quantizeQ8_0(make([]float32, 32), out)
	if !slices.Equal(out, make([]byte, q8BlockBytes)) {
		t.Errorf("zero block: %x", out)
	}
}

func TestWriteGGUFErrors(t *testing.T) {
	ok := GGUFTensor{Name: "t", Shape: []int{2}, Data: []float32{1, 2}}
	cases := []struct {
		name string
		md   []GGUFKeyValue
		ts   []GGUFTensor
		want string
	}{
		{"plain int", []GGUFKeyValue{{"k", 3}}, nil, "no GGUF type"},
		{"duplicate key", []GGUFKeyValue{{"k", "a"}, {"k", "b"}}, nil, "twice"},
		{"bad alignment", []GGUFKeyValue{{"general.alignment", uint32(12)}}, nil, "alignment"},
		{"duplicate tensor", nil, []GGUFTensor{ok, ok}, "twice"},
		{"data length", nil, []GGUFTensor{{Name: "t", Shape: []int{3}, Data: []float32{1}}}, "values"},
		{"q8 row", nil, []GGUFTensor{{Name: "t", Shape: []int{2, 16}, Data: make([]float32, 32), Type: "Q8_0"}}, "blocks"},
		{"dtype", nil, []GGUFTensor{{Name: "t", Shape: []int{2}, Data: []float32{1, 2}, Type: "Q4_0"}}, "Q4_0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "x.gguf")
			err := WriteGGUF(path, tc.md, tc.ts)
			wantErr(t, err, path, tc.want)
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("left files behind: %v", entries)
			}
		})
	}
}
