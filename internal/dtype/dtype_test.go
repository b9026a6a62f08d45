package dtype

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestElements(t *testing.T) {
	if n, err := Elements([]int{3, 4, 5}); err != nil || n != 60 {
		t.Errorf("got %d, %v", n, err)
	}
	for _, bad := range [][]int{{}, {0, 3}, {-1}, {1 << 30, 1 << 30, 1 << 30}} {
		if _, err := Elements(bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func TestSize(t *testing.T) {
	for _, c := range []struct {
		name string
		n    int64
		want int64
	}{{F32, 3, 12}, {F16, 3, 6}, {BF16, 5, 10}, {Q8_0, 64, 68}, {F32, 0, 0}} {
		if got, err := Size(c.name, c.n); err != nil || got != c.want {
			t.Errorf("Size(%s, %d) = %d, %v; want %d", c.name, c.n, got, err, c.want)
		}
	}
	for _, c := range []struct {
		name string
		n    int64
		want string
	}{{"I8", 4, "unsupported dtype I8"}, {Q8_0, 33, "multiple of 32"}, {F32, -1, "out of range"}, {F32, MaxElements + 1, "out of range"}} {
		if _, err := Size(c.name, c.n); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Size(%s, %d): error %v, want one mentioning %q", c.name, c.n, err, c.want)
		}
	}
}

// TestDecodeHalfBits checks F16/BF16 decoding against bit patterns from the IEEE 754 / bfloat16 definitions.
func TestDecodeHalfBits(t *testing.T) {
	cases := []struct {
		dtype string
		bits  uint16
		want  float32
	}{
		{"F16", 0x3C00, 1}, {"F16", 0xC000, -2}, {"F16", 0x3800, 0.5}, {"F16", 0x7BFF, 65504},
		{"F16", 0x0001, float32(math.Exp2(-24))}, {"F16", 0x3555, 0.333251953125},
		{"BF16", 0x3F80, 1}, {"BF16", 0xC000, -2}, {"BF16", 0x4049, 3.140625}, {"BF16", 0x3EAB, 0.333984375},
	}
	for _, c := range cases {
		dst := make([]float32, 1)
		if _, err := Decode(c.dtype, binary.LittleEndian.AppendUint16(nil, c.bits), dst); err != nil {
			t.Fatal(err)
		}
		if dst[0] != c.want {
			t.Errorf("%s %#04x: got %g, want %g", c.dtype, c.bits, dst[0], c.want)
		}
	}
}

// TestDequantQ8_0Spec decodes a hand-made Q8_0 block: f16 scale d, then 32 int8 q; value = d·q.
func TestDequantQ8_0Spec(t *testing.T) {
	block := []byte{0x00, 0xB8} // f16 0xB800 = -0.5
	qs := []int8{-128, -1, 0, 1, 127, 64, -64, 3}
	for j := range Q8BlockSize {
		block = append(block, byte(qs[j%len(qs)]))
	}
	block = append(block, 0x00, 0x3C) // second block: d = 1.0
	for j := range Q8BlockSize {
		block = append(block, byte(int8(j-16)))
	}
	dst := make([]float32, 2*Q8BlockSize)
	if _, err := Decode(Q8_0, block, dst); err != nil {
		t.Fatal(err)
	}
	for j := range Q8BlockSize {
		if want := -0.5 * float32(qs[j%len(qs)]); dst[j] != want {
			t.Errorf("block 0 [%d] = %g, want %g", j, dst[j], want)
		}
		if want := float32(j - 16); dst[Q8BlockSize+j] != want {
			t.Errorf("block 1 [%d] = %g, want %g", j, dst[Q8BlockSize+j], want)
		}
	}
}

// TestQuantizeQ8_0Rounding checks ggml's rounding: half away from zero, and an all-zero block.
func TestQuantizeQ8_0Rounding(t *testing.T) {
	x := make([]float32, 32)
	x[0] = 127 // d = 1
	x[1], x[2], x[3], x[4] = 2.5, -2.5, 0.49, -126.5
	out := make([]byte, Q8BlockBytes)
	quantizeQ8_0(x, out)
	if d := binary.LittleEndian.Uint16(out); d != 0x3C00 {
		t.Errorf("d bits %#x, want 0x3C00 (1.0)", d)
	}
	if got := []int8{int8(out[2]), int8(out[3]), int8(out[4]), int8(out[5]), int8(out[6])}; !slices.Equal(got, []int8{127, 3, -3, 0, -127}) {
		t.Errorf("q = %v, want [127 3 -3 0 -127]", got)
	}
	quantizeQ8_0(make([]float32, 32), out)
	if !slices.Equal(out, make([]byte, Q8BlockBytes)) {
		t.Errorf("zero block: %x", out)
	}
}

// TestEncodeKnownBytes pins the byte layout of each codec.
func TestEncodeKnownBytes(t *testing.T) {
	for _, c := range []struct {
		name string
		data []float32
		want []byte
	}{
		{F32, []float32{1, -2}, []byte{0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0}},
		{F16, []float32{1, -2, 65504}, []byte{0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B}},
		{BF16, []float32{1, 3.140625}, []byte{0x80, 0x3F, 0x49, 0x40}},
	} {
		var b bytes.Buffer
		if err := Encode(&b, c.name, c.data); err != nil || !bytes.Equal(b.Bytes(), c.want) {
			t.Errorf("%s: %x, %v; want %x", c.name, b.Bytes(), err, c.want)
		}
	}
}

// TestEncodeReadAtRoundTrip crosses ReadAt's and Encode's chunk boundaries and checks values that each codec
// holds exactly.
func TestEncodeReadAtRoundTrip(t *testing.T) {
	const n = 3 * 4096 * Q8BlockSize / 4 // several read and write chunks for every dtype
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(i%256-128) / 4 // multiples of 1/4 up to 32: exact in F16, BF16, and Q8_0 (max 32 = 127·d)
	}
	for blk := 0; blk < n; blk += Q8BlockSize {
		data[blk] = 31.75 // d = 0.25 in every block, so Q8_0 is exact
	}
	for _, name := range []string{F32, F16, BF16, Q8_0} {
		var b bytes.Buffer
		b.WriteString("pad")
		if err := Encode(&b, name, data); err != nil {
			t.Fatal(err)
		}
		if size, _ := Size(name, n); int64(b.Len()) != 3+size {
			t.Fatalf("%s: %d bytes, want %d", name, b.Len()-3, size)
		}
		got, err := ReadAt(bytes.NewReader(b.Bytes()), 3, name, n)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, data) {
			t.Errorf("%s: round trip differs", name)
		}
		if _, err := ReadAt(bytes.NewReader(b.Bytes()[:b.Len()-1]), 3, name, n); err == nil ||
			!strings.Contains(err.Error(), "reading") {
			t.Errorf("%s: truncated input: %v", name, err)
		}
	}
}

func TestCodecErrors(t *testing.T) {
	if err := Encode(&bytes.Buffer{}, Q8_0, make([]float32, 31)); err == nil {
		t.Error("Q8_0 of 31 values encoded")
	}
	if err := Encode(&bytes.Buffer{}, "IQ2_XXS", nil); err == nil {
		t.Error("IQ2_XXS encoded")
	}
	if _, err := Decode(F32, make([]byte, 6), make([]float32, 2)); err == nil {
		t.Error("decoded half an F32")
	}
	if _, err := Decode(F16, make([]byte, 6), make([]float32, 2)); err == nil {
		t.Error("decoded 3 F16 values into 2")
	}
	if _, err := Decode("I32", make([]byte, 4), make([]float32, 1)); err == nil {
		t.Error("decoded I32")
	}
	boom := errors.New("boom")
	if err := Encode(failWriter{boom}, F32, []float32{1}); err != boom {
		t.Errorf("writer error: %v", err)
	}
	if !Known(BF16) || Known("F64") || BlockSize(Q8_0) != Q8BlockSize || BlockSize(F16) != 1 {
		t.Error("Known/BlockSize")
	}
	var b bytes.Buffer
	Encode(&b, F16, []float32{float32(math.Inf(1))})
	if got, _ := ReadAt(bytes.NewReader(b.Bytes()), 0, F16, 1); !math.IsInf(float64(got[0]), 1) {
		t.Errorf("F16 +Inf read back as %g", got[0])
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }
