package gguf

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// builder writes GGUF bytes by hand, so tests can describe exactly the (broken) header they need.
type builder struct {
	b  []byte
	v1 bool
}

func newBuilder(version uint32, nTensors, nKV uint64) *builder {
	w := &builder{b: []byte("GGUF"), v1: version == 1}
	w.u32(version)
	w.count(nTensors)
	w.count(nKV)
	return w
}

func (w *builder) u32(v uint32) *builder { w.b = binary.LittleEndian.AppendUint32(w.b, v); return w }
func (w *builder) u64(v uint64) *builder { w.b = binary.LittleEndian.AppendUint64(w.b, v); return w }
func (w *builder) count(v uint64) *builder {
	if w.v1 {
		return w.u32(uint32(v))
	}
	return w.u64(v)
}
func (w *builder) vt(t ValueType) *builder { return w.u32(uint32(t)) }
func (w *builder) str(s string) *builder   { w.count(uint64(len(s))); w.b = append(w.b, s...); return w }
func (w *builder) raw(b ...byte) *builder  { w.b = append(w.b, b...); return w }

// tensor writes one tensor description.
func (w *builder) tensor(name string, typ TensorType, offset uint64, dims ...uint64) *builder {
	w.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		if w.v1 {
			w.u32(uint32(d))
		} else {
			w.u64(d)
		}
	}
	return w.u32(uint32(typ)).u64(offset)
}

// pad appends zero bytes up to a multiple of 32 and then n more.
func (w *builder) pad(n int) *builder {
	for len(w.b)%DefaultAlignment != 0 {
		w.b = append(w.b, 0)
	}
	w.b = append(w.b, make([]byte, n)...)
	return w
}

func parse(b []byte) (*File, error) {
	return Parse(bytes.NewReader(b), int64(len(b)), "t.gguf", false)
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one mentioning %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

func TestParseValues(t *testing.T) {
	w := newBuilder(3, 1, 15)
	w.str("u8").vt(ValueUint8).raw(200)
	w.str("i8").vt(ValueInt8).raw(0xff)
	w.str("u16").vt(ValueUint16).raw(1, 2)
	w.str("i16").vt(ValueInt16).raw(0xfe, 0xff)
	w.str("u32").vt(ValueUint32).u32(1 << 31)
	w.str("i32").vt(ValueInt32).u32(math.MaxUint32)
	w.str("f32").vt(ValueFloat32).u32(math.Float32bits(1.5))
	w.str("bool").vt(ValueBool).raw(1)
	w.str("str").vt(ValueString).str("héllo")
	w.str("u64").vt(ValueUint64).u64(math.MaxUint64)
	w.str("i64").vt(ValueInt64).u64(uint64(1) << 62)
	w.str("f64").vt(ValueFloat64).u64(math.Float64bits(-2.25))
	w.str("strs").vt(ValueArray).vt(ValueString).u64(2).str("a").str("")
	w.str("i32s").vt(ValueArray).vt(ValueInt32).u64(3).u32(1).u32(math.MaxUint32).u32(7)
	w.str("general.alignment").vt(ValueUint32).u32(64)
	w.tensor("w", TypeF32, 0, 3, 2)
	for len(w.b)%64 != 0 {
		w.raw(0)
	}
	w.raw(make([]byte, 24)...)
	f, err := parse(w.b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"u8": uint8(200), "i8": int8(-1), "u16": uint16(0x0201), "i16": int16(-2), "u32": uint32(1 << 31),
		"i32": int32(-1), "f32": float32(1.5), "bool": true, "str": "héllo", "u64": uint64(math.MaxUint64),
		"i64": int64(1) << 62, "f64": -2.25, "general.alignment": uint32(64),
	}
	for k, v := range want {
		got, ok := f.Get(k)
		if !ok || got != v {
			t.Errorf("%s = %v (%T), want %v (%T)", k, got, got, v, v)
		}
	}
	if v, _ := f.Get("strs"); !slices.Equal(v.([]string), []string{"a", ""}) {
		t.Errorf("strs = %v", v)
	}
	if v, _ := f.Get("i32s"); !slices.Equal(v.([]int32), []int32{1, -1, 7}) {
		t.Errorf("i32s = %v", v)
	}
	if ints, ok := Ints(mustGet(f, "i32s")); !ok || !slices.Equal(ints, []int64{1, -1, 7}) {
		t.Errorf("Ints(i32s) = %v %v", ints, ok)
	}
	if _, ok := Int(mustGet(f, "u64")); ok {
		t.Error("Int accepted a uint64 past MaxInt64")
	}
	if x, ok := Int(mustGet(f, "i8")); !ok || x != -1 {
		t.Errorf("Int(i8) = %d %v", x, ok)
	}
	if f.Alignment != 64 || f.DataOffset%64 != 0 || len(f.Tensors) != 1 {
		t.Fatalf("alignment %d, data offset %d, %d tensors", f.Alignment, f.DataOffset, len(f.Tensors))
	}
	if tt := f.Tensors[0]; tt.Name != "w" || !slices.Equal(tt.Dims, []uint64{3, 2}) || tt.Size != 24 || tt.Type != TypeF32 {
		t.Errorf("tensor %+v", tt)
	}
	if f.DataOffset+24 != int64(len(w.b)) {
		t.Errorf("data offset %d for a %d-byte file", f.DataOffset, len(w.b))
	}
}

func mustGet(f *File, key string) any {
	v, _ := f.Get(key)
	return v
}

func TestParseV1(t *testing.T) {
	w := newBuilder(1, 1, 1)
	w.str("general.name").vt(ValueString).str("old")
	w.tensor("t", TypeF16, 0, 4)
	w.pad(8)
	f, err := parse(w.b)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Get("general.name"); v != "old" || f.Tensors[0].Size != 8 {
		t.Errorf("v1: %v %+v", v, f.Tensors[0])
	}
}

func TestParseErrors(t *testing.T) {
	big := func(key string, typ ValueType, n uint64) []byte {
		return newBuilder(3, 0, 1).str(key).vt(ValueArray).vt(typ).u64(n).b
	}
	cases := []struct {
		name string
		b    []byte
		want []string
	}{
		{"empty", nil, []string{"unexpected end of file"}},
		{"bad magic", []byte("GGML\x03\x00\x00\x00"), []string{"not a GGUF file"}},
		{"version 4", newBuilder(4, 0, 0).b, []string{"version 4"}},
		{"truncated header", newBuilder(3, 0, 0).b[:12], []string{"unexpected end of file"}},
		{"tensor count", newBuilder(3, 1<<40, 0).b, []string{"tensor count"}},
		{"metadata count", newBuilder(3, 0, 1<<40).b, []string{"metadata count"}},
		{"key length", newBuilder(3, 0, 1).u64(1 << 40).raw(make([]byte, 16)...).b, []string{"key length"}},
		{"string length", newBuilder(3, 0, 1).str("k").vt(ValueString).u64(1 << 33).b, []string{`"k"`, "string length"}},
		{"array count", big("k", ValueUint64, 1<<24), []string{`"k"`, "array count"}},
		{"string array count", big("k", ValueString, 1<<50), []string{`"k"`, "array count"}},
		{"nested array", big("k", ValueArray, 1), []string{`"k"`, "element type 9"}},
		{"unknown array type", big("k", 13, 1), []string{`"k"`, "element type 13"}},
		{"unknown value type", newBuilder(3, 0, 1).str("k").u32(99).b, []string{`"k"`, "unknown value type 99"}},
		{"truncated string", newBuilder(3, 0, 1).str("k").vt(ValueString).u64(5).raw('a', 'b').b, []string{"string length 5"}},
		{"duplicate key", newBuilder(3, 0, 2).str("k").vt(ValueUint8).raw(1).str("k").vt(ValueUint8).raw(2).b,
			[]string{`"k"`, "twice"}},
		{"alignment type", newBuilder(3, 0, 1).str("general.alignment").vt(ValueUint64).u64(32).b,
			[]string{"general.alignment", "uint64"}},
		{"alignment zero", newBuilder(3, 0, 1).str("general.alignment").vt(ValueUint32).u32(0).b,
			[]string{"general.alignment"}},
		{"alignment not a power of two", newBuilder(3, 0, 1).str("general.alignment").vt(ValueUint32).u32(48).b,
			[]string{"general.alignment", "48"}},
		{"too many dims", newBuilder(3, 1, 0).tensor("t", TypeF32, 0, 1, 1, 1, 1, 1).b, []string{`"t"`, "5 dimensions"}},
		{"dims overflow", newBuilder(3, 1, 0).tensor("t", TypeF32, 0, 1<<40, 1<<40).pad(0).b, []string{`"t"`, "overflow"}},
		{"size overflow", newBuilder(3, 1, 0).tensor("t", TypeF32, 0, 1<<62).pad(0).b, []string{`"t"`, "F32 blocks"}},
		{"q8 partial block", newBuilder(3, 1, 0).tensor("t", TypeQ8_0, 0, 33).pad(64).b, []string{`"t"`, "Q8_0 blocks"}},
		{"duplicate tensor", newBuilder(3, 2, 0).tensor("t", TypeF32, 0, 1).tensor("t", TypeF32, 32, 1).pad(64).b,
			[]string{`"t"`, "twice"}},
		{"misaligned offset", newBuilder(3, 1, 0).tensor("t", TypeF32, 4, 1).pad(64).b, []string{`"t"`, "alignment"}},
		{"data past the end", newBuilder(3, 1, 0).tensor("t", TypeF32, 0, 100).pad(64).b, []string{`"t"`, "outside"}},
		{"offset past the end", newBuilder(3, 1, 0).tensor("t", TypeF32, 1<<40, 1).pad(64).b, []string{`"t"`, "outside"}},
		{"no data section", newBuilder(3, 1, 0).tensor("t", TypeF32, 0, 1).b, []string{"past the end"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parse(tc.b)
			if err == nil {
				t.Fatalf("parsed: %+v", f)
			}
			wantErr(t, err, append([]string{"t.gguf"}, tc.want...)...)
		})
	}
}

func TestUnknownTensorTypeIsNamedNotSized(t *testing.T) {
	w := newBuilder(3, 2, 0).tensor("iq2", 16, 0, 64).tensor("x", 77, 64, 8).pad(96)
	f, err := parse(w.b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Tensors[0].Size != -1 || TensorType(16).String() != "IQ2_XXS" || TensorType(77).String() != "type 77" {
		t.Errorf("%+v %s %s", f.Tensors[0], TensorType(16), TensorType(77))
	}
}

func TestReadMetadataSkipsTensors(t *testing.T) {
	w := newBuilder(3, 1, 1).str("a").vt(ValueBool).raw(0)
	w.raw(0xff, 0xff) // garbage where the tensor descriptions start
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, w.b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := ReadMetadata(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := f.Get("a"); !ok || v != false || len(f.Tensors) != 0 {
		t.Errorf("a = %v, %d tensors", v, len(f.Tensors))
	}
	_, err = Open(path)
	wantErr(t, err, path)
	_, err = Open(filepath.Dir(path))
	wantErr(t, err, "not a regular file")
}

// FuzzParse checks that no input panics, that errors name the file, that a parsed header is consistent, and
// that parsing allocates at most a small multiple of the input size.
func FuzzParse(f *testing.F) {
	w := newBuilder(3, 2, 3)
	w.str("general.architecture").vt(ValueString).str("llama")
	w.str("tokenizer.ggml.tokens").vt(ValueArray).vt(ValueString).u64(3).str("<s>").str("a").str("b")
	w.str("tokenizer.ggml.scores").vt(ValueArray).vt(ValueFloat32).u64(3).u32(0).u32(0).u32(0)
	w.tensor("a", TypeF32, 0, 2, 2).tensor("b", TypeQ8_0, 32, 32)
	f.Add(w.pad(64).b)
	f.Add(newBuilder(1, 1, 0).tensor("t", TypeF16, 0, 4).pad(8).b)
	f.Add(newBuilder(2, 0, 1).str("general.alignment").vt(ValueUint32).u32(16).b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var file *File
		var err error
		parse := func() { file, err = Parse(bytes.NewReader(data), int64(len(data)), "fuzz.gguf", false) }
		if alloc, over := testenv.OverBudget(32*uint64(len(data))+4<<20, parse); over {
			t.Fatalf("parsing %d bytes allocated %d", len(data), alloc)
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.gguf: ") {
				t.Fatalf("error does not start with the file name: %v", err)
			}
			return
		}
		if file.Alignment <= 0 || file.DataOffset%file.Alignment != 0 {
			t.Fatalf("alignment %d, data offset %d", file.Alignment, file.DataOffset)
		}
		names := map[string]bool{}
		for _, tt := range file.Tensors {
			if names[tt.Name] {
				t.Fatalf("duplicate tensor %q", tt.Name)
			}
			names[tt.Name] = true
			if tt.Size >= 0 && file.DataOffset+int64(tt.Offset)+tt.Size > int64(len(data)) {
				t.Fatalf("tensor %q [%d, +%d) past the end of %d bytes", tt.Name, tt.Offset, tt.Size, len(data))
			}
		}
		if len(file.KVs) != len(file.index) {
			t.Fatalf("%d key/values, %d indexed", len(file.KVs), len(file.index))
		}
	})
}

func TestParseRefusesOverlappingTensors(t *testing.T) {
	w := newBuilder(3, 3, 0).tensor("a", TypeF32, 0, 16).tensor("b", TypeF32, 32, 8).tensor("c", TypeF16, 64, 8).pad(96)
	_, err := parse(w.b)
	wantErr(t, err, "t.gguf", `tensor "b"`, `tensor "a"`, "overlaps")
	// Touching ranges, and tensors of unknown size, are fine.
	w = newBuilder(3, 3, 0).tensor("a", TypeF32, 0, 8).tensor("b", TypeF32, 32, 8).tensor("iq2", 16, 0, 32).pad(64)
	if _, err := parse(w.b); err != nil {
		t.Fatal(err)
	}
}
