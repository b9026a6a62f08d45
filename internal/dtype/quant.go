package dtype

import (
	"encoding/binary"
	"math"

	"github.com/gomlx/compute/dtypes/float16"
)

// ggml's block quantizations. Each block of blockSize values is stored in blockBytes bytes; values are rebuilt as
// scale·q (or scale·q − min) from small integers q and f16 (super-)block scales. The bit layouts are those of ggml's
// block_* structs (ggml-common.h) and dequantize_row_* functions (ggml-quants.c); the code here is written from
// those descriptions. The "legacy" types work on blocks of 32 with one scale; the K-quants on super-blocks of 256
// split into sub-blocks of 16 or 32, whose scales (and mins) are themselves quantized to 4, 6 or 8 bits.
//
// The encoders are simple (no search for the scale that minimizes the error, unlike ggml's quantize tool) but
// produce valid blocks that ggml decodes to the same values: each block's scale comes from its extreme values, and
// every q is the nearest level.
const (
	Q4_0 = "Q4_0"
	Q4_1 = "Q4_1"
	Q5_0 = "Q5_0"
	Q5_1 = "Q5_1"
	Q2_K = "Q2_K"
	Q3_K = "Q3_K"
	Q4_K = "Q4_K"
	Q5_K = "Q5_K"
	Q6_K = "Q6_K"
)

// qk is the super-block size of the K-quants (ggml's QK_K).
const qk = 256

// quant is one block quantization: its layout and the codec of one block.
type quant struct {
	layout
	decode func(b []byte, dst []float32) // one block: len(b) = blockBytes, len(dst) = blockSize
	encode func(x []float32, out []byte) // one block: len(x) = blockSize, len(out) = blockBytes (zeroed)
}

var quants = map[string]quant{
	Q8_0: {layout{Q8BlockSize, Q8BlockBytes}, decodeQ8_0, quantizeQ8_0},
	Q4_0: {layout{32, 2 + 16}, decodeQ4_0, encodeQ4_0},
	Q4_1: {layout{32, 4 + 16}, decodeQ4_1, encodeQ4_1},
	Q5_0: {layout{32, 2 + 4 + 16}, decodeQ5_0, encodeQ5_0},
	Q5_1: {layout{32, 4 + 4 + 16}, decodeQ5_1, encodeQ5_1},
	Q2_K: {layout{qk, 16 + 64 + 4}, decodeQ2_K, encodeQ2_K},
	Q3_K: {layout{qk, 32 + 64 + 12 + 2}, decodeQ3_K, encodeQ3_K},
	Q4_K: {layout{qk, 4 + 12 + 128}, decodeQ4_K, encodeQ4_K},
	Q5_K: {layout{qk, 4 + 12 + 32 + 128}, decodeQ5_K, encodeQ5_K},
	Q6_K: {layout{qk, 128 + 64 + 16 + 2}, decodeQ6_K, encodeQ6_K},
}

// Quantized reports whether name is one of the block quantizations (Q8_0, Q4_K, ...).
func Quantized(name string) bool {
	_, ok := quants[name]
	return ok
}

// BlockBytes is the byte size of one block of name (2 for F16, 34 for Q8_0); 0 for an unknown name.
func BlockBytes(name string) int { return int(layouts[name].blockBytes) }

func f16(b []byte) float32 { return float16.FromBits(binary.LittleEndian.Uint16(b)).Float32() }

// putF16 stores v as f16 and returns the value stored.
func putF16(out []byte, v float32) float32 {
	h := float16.FromFloat32(v)
	binary.LittleEndian.PutUint16(out, h.Bits())
	return h.Float32()
}

// nearest rounds v to the nearest integer (half away from zero) and clamps it to [lo, hi]; NaN gives lo.
func nearest(v float32, lo, hi int) int {
	r := math.Round(float64(v))
	if !(r >= float64(lo)) {
		return lo
	}
	return int(min(r, float64(hi)))
}

// extremes returns the minimum and maximum of x, and the value of largest magnitude (with its sign).
func extremes(x []float32) (lo, hi, big float32) {
	lo, hi = x[0], x[0]
	for _, v := range x {
		lo, hi = min(lo, v), max(hi, v)
		if abs32(v) > abs32(big) {
			big = v
		}
	}
	return lo, hi, big
}

func abs32(v float32) float32 { return float32(math.Abs(float64(v))) }

func inv(d float32) float32 {
	if d == 0 {
		return 0
	}
	return 1 / d
}

// --- Q8_0: f16 d, 32 int8 q; value = d·q.

func decodeQ8_0(b []byte, dst []float32) {
	d := f16(b)
	for j := range Q8BlockSize {
		dst[j] = d * float32(int8(b[2+j]))
	}
}

// quantizeQ8_0 stores one block as ggml's quantize_row_q8_0_ref does: d = max|x|/127, q = round(x/d) (half away
// from zero), d stored as f16.
func quantizeQ8_0(x []float32, out []byte) {
	var amax float32
	for _, v := range x {
		amax = max(amax, abs32(v))
	}
	d := amax / 127
	id := inv(d)
	putF16(out, d)
	for j, v := range x {
		out[2+j] = byte(int8(math.Round(float64(v * id))))
	}
}

// --- Q4_0: f16 d, 16 bytes of nibbles; value j is the low nibble of byte j, value j+16 the high one; value =
// d·(q − 8).

func decodeQ4_0(b []byte, dst []float32) {
	d := f16(b)
	for j := range 16 {
		dst[j] = d * float32(int(b[2+j]&0xF)-8)
		dst[j+16] = d * float32(int(b[2+j]>>4)-8)
	}
}

func encodeQ4_0(x []float32, out []byte) {
	_, _, big := extremes(x)
	id := inv(putF16(out, big/-8))
	for j := range 16 {
		out[2+j] = byte(nearest(x[j]*id+8, 0, 15) | nearest(x[j+16]*id+8, 0, 15)<<4)
	}
}

// --- Q4_1: f16 d, f16 m, 16 bytes of nibbles (as Q4_0); value = d·q + m.

func decodeQ4_1(b []byte, dst []float32) {
	d, m := f16(b), f16(b[2:])
	for j := range 16 {
		dst[j] = d*float32(b[4+j]&0xF) + m
		dst[j+16] = d*float32(b[4+j]>>4) + m
	}
}

func encodeQ4_1(x []float32, out []byte) {
	lo, hi, _ := extremes(x)
	id := inv(putF16(out, (hi-lo)/15))
	m := putF16(out[2:], lo)
	for j := range 16 {
		out[4+j] = byte(nearest((x[j]-m)*id, 0, 15) | nearest((x[j+16]-m)*id, 0, 15)<<4)
	}
}

// --- Q5_0: f16 d, 32 high bits qh (bit j belongs to value j), 16 bytes of low nibbles (as Q4_0); value =
// d·(q − 16).

func decodeQ5_0(b []byte, dst []float32) {
	d, qh := f16(b), binary.LittleEndian.Uint32(b[2:])
	for j := range 16 {
		lo := int(b[6+j]&0xF) | int(qh>>j&1)<<4
		hi := int(b[6+j]>>4) | int(qh>>(j+16)&1)<<4
		dst[j], dst[j+16] = d*float32(lo-16), d*float32(hi-16)
	}
}

func encodeQ5_0(x []float32, out []byte) {
	_, _, big := extremes(x)
	id := inv(putF16(out, big/-16))
	var q [32]int
	for j, v := range x {
		q[j] = nearest(v*id+16, 0, 31)
	}
	packQ5(q[:], out[2:6], out[6:])
}

// packQ5 stores 32 five-bit values as Q5_0/Q5_1 do: high bits in qh, low nibbles as Q4_0.
func packQ5(q []int, qh, qs []byte) {
	var h uint32
	for j, v := range q {
		h |= uint32(v>>4&1) << j
	}
	binary.LittleEndian.PutUint32(qh, h)
	for j := range 16 {
		qs[j] = byte(q[j]&0xF | (q[j+16]&0xF)<<4)
	}
}

// --- Q5_1: f16 d, f16 m, qh, low nibbles (as Q5_0); value = d·q + m.

func decodeQ5_1(b []byte, dst []float32) {
	d, m, qh := f16(b), f16(b[2:]), binary.LittleEndian.Uint32(b[4:])
	for j := range 16 {
		lo := int(b[8+j]&0xF) | int(qh>>j&1)<<4
		hi := int(b[8+j]>>4) | int(qh>>(j+16)&1)<<4
		dst[j], dst[j+16] = d*float32(lo)+m, d*float32(hi)+m
	}
}

func encodeQ5_1(x []float32, out []byte) {
	lo, hi, _ := extremes(x)
	id := inv(putF16(out, (hi-lo)/31))
	m := putF16(out[2:], lo)
	var q [32]int
	for j, v := range x {
		q[j] = nearest((v-m)*id, 0, 31)
	}
	packQ5(q[:], out[4:8], out[8:])
}

// --- Q2_K: 16 scale bytes (low nibble: scale, high nibble: min, of each sub-block of 16), 64 bytes of 2-bit q,
// f16 d, f16 dmin; value = d·scale·q − dmin·min. Value e of the super-block is bits 2·((e mod 128)/32) of byte
// 32·(e/128) + e mod 32.

func decodeQ2_K(b []byte, dst []float32) {
	sc, qs := b[:16], b[16:80]
	d, dmin := f16(b[80:]), f16(b[82:])
	for e := range qk {
		s := sc[e/16]
		q := qs[32*(e/128)+e%32] >> (2 * (e % 128 / 32)) & 3
		dst[e] = d*float32(s&0xF)*float32(q) - dmin*float32(s>>4)
	}
}

func encodeQ2_K(x []float32, out []byte) {
	encodeMinK(x, 16, 3, 15, func(j, ls, lm int) { out[j] = byte(ls | lm<<4) }, out[80:], out[82:],
		func(e, q int) { out[16+32*(e/128)+e%32] |= byte(q << (2 * (e % 128 / 32))) })
}

// encodeMinK quantizes a K-quant super-block of the "scale and min" kind (Q2_K, Q4_K, Q5_K): each sub-block of
// sub values gets value = d·ls·q − dmin·lm with q in [0, qmax] and ls, lm in [0, smax]. putScale stores sub-block
// j's ls and lm, d and dmin are stored as f16 in dOut and dminOut, and putQ stores value e's q.
func encodeMinK(x []float32, sub, qmax, smax int, putScale func(j, ls, lm int), dOut, dminOut []byte,
	putQ func(e, q int)) {
	n := len(x) / sub
	scales, mins := make([]float32, n), make([]float32, n)
	var maxScale, maxMin float32
	for j := range n {
		lo, hi, _ := extremes(x[j*sub : (j+1)*sub])
		lo = min(lo, 0) // the min is subtracted: a sub-block of positive values starts at 0
		scales[j], mins[j] = (hi-lo)/float32(qmax), -lo
		maxScale, maxMin = max(maxScale, scales[j]), max(maxMin, mins[j])
	}
	d := putF16(dOut, maxScale/float32(smax))
	dmin := putF16(dminOut, maxMin/float32(smax))
	for j := range n {
		// Round the scale up so that the sub-block's range still fits in [0, qmax] levels.
		ls := min(int(math.Ceil(float64(scales[j]*inv(d)))), smax)
		lm := nearest(mins[j]*inv(dmin), 0, smax)
		putScale(j, ls, lm)
		step, off := d*float32(ls), dmin*float32(lm)
		for l := range sub {
			e := j*sub + l
			putQ(e, nearest((x[e]+off)*inv(step), 0, qmax))
		}
	}
}

// --- Q3_K: 32 bytes hmask, 64 bytes of 2-bit low q (as Q2_K), 12 bytes of 6-bit signed scales, f16 d; value =
// d·(scale − 32)·(q − 4), where q's third bit is bit 4·(e/128) + (e mod 128)/32 of hmask[e mod 32].
// Scale j: its low 4 bits are the low (j < 8) or high nibble of byte j mod 8, its high 2 bits are bits 2·(j/4)
// of byte 8 + j mod 4.

func q3Scale(sc []byte, j int) int {
	lo := sc[j%8] >> (4 * (j / 8)) & 0xF
	hi := sc[8+j%4] >> (2 * (j / 4)) & 3
	return int(lo|hi<<4) - 32
}

func decodeQ3_K(b []byte, dst []float32) {
	hm, qs, sc := b[:32], b[32:96], b[96:108]
	d := f16(b[108:])
	for e := range qk {
		q := int(qs[32*(e/128)+e%32] >> (2 * (e % 128 / 32)) & 3)
		if hm[e%32]>>(4*(e/128)+e%128/32)&1 == 0 {
			q -= 4
		}
		dst[e] = d * float32(q3Scale(sc, e/16)) * float32(q)
	}
}

func encodeQ3_K(x []float32, out []byte) {
	hm, qs, sc := out[:32], out[32:96], out[96:108]
	// Symmetric: each sub-block of 16 gets the scale that maps its largest magnitude to level −4.
	var s [16]float32
	var big float32
	for j := range 16 {
		_, _, s[j] = extremes(x[16*j : 16*j+16])
		s[j] /= -4
		if abs32(s[j]) > abs32(big) {
			big = s[j]
		}
	}
	d := putF16(out[108:], big/-32)
	for j := range 16 {
		ls := nearest(s[j]*inv(d), -32, 31) + 32
		sc[j%8] |= byte(ls&0xF) << (4 * (j / 8))
		sc[8+j%4] |= byte(ls>>4) << (2 * (j / 4))
		step := d * float32(ls-32)
		for l := range 16 {
			e := 16*j + l
			q := nearest(x[e]*inv(step), -4, 3) + 4
			if q > 3 {
				hm[e%32] |= 1 << (4*(e/128) + e%128/32)
			}
			qs[32*(e/128)+e%32] |= byte(q&3) << (2 * (e % 128 / 32))
		}
	}
}

// --- Q4_K and Q5_K: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins of the 8 sub-blocks of 32, then (Q5_K)
// 32 bytes of high bits and 128 bytes of low nibbles; value = d·scale·q − dmin·min. Value e is the low (e mod 64
// < 32) or high nibble of byte 32·(e/64) + e mod 32; Q5_K's fifth bit is bit e/32 of qh[e mod 32].

// k4Scale unpacks sub-block j's scale and min (ggml's get_scale_min_k4).
func k4Scale(s []byte, j int) (sc, m byte) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	return s[j+4]&0xF | s[j-4]>>6<<4, s[j+4]>>4 | s[j]>>6<<4
}

func putK4Scale(s []byte, j, ls, lm int) {
	if j < 4 {
		s[j], s[j+4] = byte(ls), byte(lm)
		return
	}
	s[j+4] = byte(ls&0xF | (lm&0xF)<<4)
	s[j-4] |= byte(ls>>4) << 6
	s[j] |= byte(lm>>4) << 6
}

func decodeQ4_K(b []byte, dst []float32) {
	d, dmin, sc, qs := f16(b), f16(b[2:]), b[4:16], b[16:144]
	for e := range qk {
		s, m := k4Scale(sc, e/32)
		q := qs[32*(e/64)+e%32] >> (4 * (e % 64 / 32)) & 0xF
		dst[e] = d*float32(s)*float32(q) - dmin*float32(m)
	}
}

func encodeQ4_K(x []float32, out []byte) {
	encodeMinK(x, 32, 15, 63, func(j, ls, lm int) { putK4Scale(out[4:16], j, ls, lm) }, out, out[2:],
		func(e, q int) { out[16+32*(e/64)+e%32] |= byte(q) << (4 * (e % 64 / 32)) })
}

func decodeQ5_K(b []byte, dst []float32) {
	d, dmin, sc, qh, qs := f16(b), f16(b[2:]), b[4:16], b[16:48], b[48:176]
	for e := range qk {
		s, m := k4Scale(sc, e/32)
		q := qs[32*(e/64)+e%32]>>(4*(e%64/32))&0xF | (qh[e%32]>>(e/32)&1)<<4
		dst[e] = d*float32(s)*float32(q) - dmin*float32(m)
	}
}

func encodeQ5_K(x []float32, out []byte) {
	encodeMinK(x, 32, 31, 63, func(j, ls, lm int) { putK4Scale(out[4:16], j, ls, lm) }, out, out[2:],
		func(e, q int) {
			out[48+32*(e/64)+e%32] |= byte(q&0xF) << (4 * (e % 64 / 32))
			out[16+e%32] |= byte(q>>4) << (e / 32)
		})
}

// --- Q6_K: 128 bytes of low nibbles, 64 bytes of high 2 bits, 16 int8 scales (one per sub-block of 16), f16 d;
// value = d·scale·(q − 32). Within each half of 128 values (h = e/128, r = e mod 128), value r's low nibble is
// the low (r < 64) or high nibble of ql[64·h + r mod 64], and its high bits are bits 2·(r/32) of
// qh[32·h + r mod 32].

func decodeQ6_K(b []byte, dst []float32) {
	ql, qh, sc := b[:128], b[128:192], b[192:208]
	d := f16(b[208:])
	for e := range qk {
		h, r := e/128, e%128
		q := int(ql[64*h+r%64]>>(4*(r/64))&0xF | (qh[32*h+r%32]>>(2*(r/32))&3)<<4)
		dst[e] = d * float32(int8(sc[e/16])) * float32(q-32)
	}
}

func encodeQ6_K(x []float32, out []byte) {
	ql, qh, sc := out[:128], out[128:192], out[192:208]
	var s [16]float32
	var big float32
	for j := range 16 {
		_, _, s[j] = extremes(x[16*j : 16*j+16])
		s[j] /= -32
		if abs32(s[j]) > abs32(big) {
			big = s[j]
		}
	}
	d := putF16(out[208:], big/-128)
	for j := range 16 {
		ls := nearest(s[j]*inv(d), -128, 127)
		sc[j] = byte(int8(ls))
		step := d * float32(ls)
		for l := range 16 {
			e := 16*j + l
			h, r := e/128, e%128
			q := nearest(x[e]*inv(step), -32, 31) + 32
			ql[64*h+r%64] |= byte(q&0xF) << (4 * (r / 64))
			qh[32*h+r%32] |= byte(q>>4) << (2 * (r / 32))
		}
	}
}
