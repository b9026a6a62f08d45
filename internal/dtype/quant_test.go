package dtype

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

var quantNames = []string{Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K}

// TestQuantLayouts checks each block's size against ggml's block structs: bits per value plus the scales.
func TestQuantLayouts(t *testing.T) {
	want := map[string][2]int{Q8_0: {32, 34}, Q4_0: {32, 18}, Q4_1: {32, 20}, Q5_0: {32, 22}, Q5_1: {32, 24},
		Q2_K: {256, 84}, Q3_K: {256, 110}, Q4_K: {256, 144}, Q5_K: {256, 176}, Q6_K: {256, 210}}
	for _, name := range quantNames {
		if got := [2]int{BlockSize(name), BlockBytes(name)}; got != want[name] || !Known(name) || !Quantized(name) {
			t.Errorf("%s: block %v, want %v", name, got, want[name])
		}
	}
	if Quantized(F16) {
		t.Error("F16 is not a quantization")
	}
}

// TestQuantRoundTrip encodes random rows and checks every decoded value against the type's resolution: within
// (a little more than) half a step of its block, the step being the block's range over its number of levels.
func TestQuantRoundTrip(t *testing.T) {
	// Relative error bound on max|x| of a super-block; K-quant scales are themselves quantized, so they get more.
	// Q4_0 and Q5_0 are symmetric with one level more on the negative side (−8..7, −16..15): a block whose largest
	// magnitude is negative clips its positive maximum by a whole step.
	bound := map[string]float64{Q8_0: 0.5/127 + 1.0/2048, // half a step, and the f16 rounding of the scale
		Q4_0: 1.0 / 8 * 1.01, Q4_1: 0.5 / 15 * 2, Q5_0: 1.0 / 16 * 1.01, Q5_1: 0.5 / 31 * 2,
		Q2_K: 0.5 / 3 * 2 * 1.3, Q3_K: 0.5 / 3 * 1.3, Q4_K: 0.5 / 15 * 2 * 1.3, Q5_K: 0.5 / 31 * 2 * 1.3, Q6_K: 0.5 / 31 * 1.3}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, name := range quantNames {
		x := make([]float32, 4*256)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 0.02)
			if i%97 == 0 {
				x[i] *= 10 // outliers, as real weights have
			}
		}
		for i := 512; i < 512+32; i++ {
			x[i] = 0 // an all-zero block must decode to zeros
		}
		var buf bytes.Buffer
		if err := Encode(&buf, name, x); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if size, _ := Size(name, int64(len(x))); int64(buf.Len()) != size {
			t.Fatalf("%s: %d bytes, want %d", name, buf.Len(), size)
		}
		got, err := ReadAt(bytes.NewReader(buf.Bytes()), 0, name, int64(len(x)))
		if err != nil {
			t.Fatal(err)
		}
		block := BlockSize(name)
		var worst float64
		for b := 0; b < len(x); b += block {
			var amax float64
			for _, v := range x[b : b+block] {
				amax = max(amax, math.Abs(float64(v)))
			}
			for i := b; i < b+block; i++ {
				e := math.Abs(float64(got[i] - x[i]))
				if amax == 0 && e != 0 {
					t.Fatalf("%s: value %d of an all-zero block decodes to %g", name, i, got[i])
				}
				if amax > 0 {
					worst = max(worst, e/amax)
				}
			}
		}
		if worst > bound[name] {
			t.Errorf("%s: worst error %.4f of the block's max|x|, bound %.4f", name, worst, bound[name])
		}
		t.Logf("%s: worst error %.4f of the block's max|x|", name, worst)
	}
}

// TestQuantSpecBlocks decodes hand-made blocks of Q4_0, Q5_1, Q4_K and Q6_K, their values worked out from ggml's
// block descriptions (not from this package's encoders).
func TestQuantSpecBlocks(t *testing.T) {
	le := binary.LittleEndian
	one, half := uint16(0x3C00), uint16(0x3800) // f16 1.0 and 0.5

	// Q4_0: d = 0.5; byte j holds value j (low nibble) and value j+16 (high nibble); value = d·(q − 8).
	q40 := le.AppendUint16(nil, half)
	for j := range 16 {
		q40 = append(q40, byte(j)|byte(15-j)<<4)
	}
	check(t, Q4_0, q40, func(i int) float32 {
		if i < 16 {
			return 0.5 * float32(i-8)
		}
		return 0.5 * float32(15-(i-16)-8)
	})

	// Q5_1: d = 1, m = 0.5, qh bit i is value i's fifth bit (set for odd i); value = d·q + m.
	q51 := le.AppendUint16(le.AppendUint16(nil, one), half)
	q51 = le.AppendUint32(q51, 0xAAAAAAAA)
	for j := range 16 {
		q51 = append(q51, byte(j%16)|byte(3)<<4)
	}
	check(t, Q5_1, q51, func(i int) float32 {
		lo := map[bool]int{true: i % 16, false: 3}[i < 16]
		return float32(lo+16*(i%2)) + 0.5
	})

	// Q4_K: d = 1, dmin = 0.5; sub-block j (of 32) has scale j+1 and min 2j (6 bits each, packed as
	// get_scale_min_k4 reads them); every q is 5 in the low nibble and 9 in the high one.
	q4k := le.AppendUint16(le.AppendUint16(nil, one), half)
	sc := make([]byte, 12)
	for j := range 8 {
		ls, lm := j+1, 2*j
		if j < 4 {
			sc[j], sc[j+4] = byte(ls), byte(lm)
		} else {
			sc[j+4] = byte(ls&0xF | (lm&0xF)<<4)
			sc[j-4] |= byte(ls>>4) << 6
			sc[j] |= byte(lm>>4) << 6
		}
	}
	q4k = append(q4k, sc...)
	q4k = append(q4k, bytes.Repeat([]byte{0x95}, 128)...)
	check(t, Q4_K, q4k, func(i int) float32 {
		j := i / 32
		q := map[bool]float32{true: 5, false: 9}[i%64 < 32]
		return float32(j+1)*q - 0.5*float32(2*j)
	})

	// Q6_K: ql all 0x21 (low nibble 1, high nibble 2), qh all 0b11100100 (2-bit fields 0, 1, 2, 3), scales
	// −8..7, d = 0.5; value = d·scale·(q − 32) with q = nibble | field<<4.
	q6k := append(bytes.Repeat([]byte{0x21}, 128), bytes.Repeat([]byte{0xE4}, 64)...)
	for j := range 16 {
		q6k = append(q6k, byte(int8(j-8)))
	}
	q6k = le.AppendUint16(q6k, half)
	check(t, Q6_K, q6k, func(i int) float32 {
		r := i % 128
		nib := map[bool]int{true: 1, false: 2}[r < 64]
		q := nib | (r/32)<<4
		return 0.5 * float32(i/16-8) * float32(q-32)
	})
}

func check(t *testing.T, name string, block []byte, want func(i int) float32) {
	t.Helper()
	if len(block) != BlockBytes(name) {
		t.Fatalf("%s: test block has %d bytes, want %d", name, len(block), BlockBytes(name))
	}
	dst := make([]float32, BlockSize(name))
	if _, err := Decode(name, block, dst); err != nil {
		t.Fatal(err)
	}
	for i, v := range dst {
		if v != want(i) {
			t.Fatalf("%s: value %d = %g, want %g", name, i, v, want(i))
		}
	}
}

// TestQuantTruncated refuses data that are not whole blocks, and reads past the end of the data.
func TestQuantTruncated(t *testing.T) {
	for _, name := range quantNames {
		bb := BlockBytes(name)
		if _, err := Decode(name, make([]byte, bb+1), make([]float32, 2*BlockSize(name))); err == nil {
			t.Errorf("%s: a partial block decoded", name)
		}
		_, err := ReadAt(bytes.NewReader(make([]byte, bb)), 0, name, int64(2*BlockSize(name)))
		if err == nil || !strings.Contains(err.Error(), "reading") {
			t.Errorf("%s: truncated data: %v", name, err)
		}
		if _, err := Size(name, int64(BlockSize(name)+1)); err == nil {
			t.Errorf("%s: a partial block has a size", name)
		}
	}
}

// FuzzQuantDecode decodes arbitrary bytes as every quantization: no panic, and a value count that matches the
// bytes.
func FuzzQuantDecode(f *testing.F) {
	f.Add(make([]byte, 210), uint8(0))
	f.Add(bytes.Repeat([]byte{0xFF}, 176), uint8(8))
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		name := quantNames[int(which)%len(quantNames)]
		dst := make([]float32, len(b)/max(1, BlockBytes(name))*BlockSize(name))
		rest, err := Decode(name, b, dst)
		if len(b)%BlockBytes(name) != 0 {
			if err == nil {
				t.Fatalf("%s: %d bytes decoded", name, len(b))
			}
			return
		}
		if err != nil || len(rest) != 0 {
			t.Fatalf("%s: %d bytes: %v, %d values left", name, len(b), err, len(rest))
		}
		// Encoding any decoded finite values must work too.
		for i, v := range dst {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				dst[i] = 0
			}
		}
		if err := Encode(&bytes.Buffer{}, name, dst); err != nil {
			t.Fatal(err)
		}
	})
}
