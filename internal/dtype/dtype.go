// Package dtype holds the storage codecs of tensor data, by name: "F32", "F16", "BF16" and ggml's block
// quantizations "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1" and the K-quants "Q2_K" to "Q6_K" (quant.go). The
// safetensors and GGUF packages both use it, so each codec exists once.
// All data are little-endian; in memory, values are float32.
package dtype

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"

	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/compute/dtypes/float16"
)

// Storage types, by the names safetensors and ggml give them.
const (
	F32  = "F32"
	F16  = "F16"
	BF16 = "BF16"
	Q8_0 = "Q8_0"
)

// Q8BlockSize and Q8BlockBytes describe ggml's Q8_0 block: an f16 scale d, then 32 int8 q; value = d·q.
const (
	Q8BlockSize  = 32
	Q8BlockBytes = 2 + Q8BlockSize
)

// MaxElements bounds the element count of one tensor; it keeps size arithmetic far from overflow.
const MaxElements = 1 << 40

// layout is a storage type's block: blockSize elements take blockBytes bytes.
type layout struct{ blockSize, blockBytes int64 }

var layouts = map[string]layout{F32: {1, 4}, F16: {1, 2}, BF16: {1, 2}}

func init() {
	for name, q := range quants {
		layouts[name] = q.layout
	}
}

// Supported lists the names this package codes, for error messages.
const Supported = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K"

// Known reports whether name is a storage type this package decodes and encodes.
func Known(name string) bool {
	_, ok := layouts[name]
	return ok
}

// BlockSize is the number of elements that are stored together (32 for Q8_0, 256 for the K-quants, 1 for the
// float types); 0 for an unknown name.
func BlockSize(name string) int { return int(layouts[name].blockSize) }

// Elements multiplies the dimensions of a shape, refusing an empty shape, dimensions that are not positive, and
// more than MaxElements elements.
func Elements(shape []int) (int64, error) {
	if len(shape) == 0 {
		return 0, errors.New("tensor has no dimensions")
	}
	n := uint64(1)
	for _, d := range shape {
		if d <= 0 {
			return 0, fmt.Errorf("invalid dimension %d in shape %v", d, shape)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > MaxElements {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n = lo
	}
	return int64(n), nil
}

// Size is the byte size of n elements stored as name.
func Size(name string, n int64) (int64, error) {
	l, ok := layouts[name]
	if !ok {
		return 0, fmt.Errorf("unsupported dtype %s (supported: %s)", name, Supported)
	}
	if n < 0 || n > MaxElements {
		return 0, fmt.Errorf("%d elements is out of range", n)
	}
	if n%l.blockSize != 0 {
		return 0, fmt.Errorf("%s needs a multiple of %d elements, got %d", name, l.blockSize, n)
	}
	return n / l.blockSize * l.blockBytes, nil
}

// Decode converts b, whole elements (or blocks) stored as name, into the start of dst and returns the rest of
// dst.
func Decode(name string, b []byte, dst []float32) ([]float32, error) {
	l, ok := layouts[name]
	if !ok {
		return nil, fmt.Errorf("unsupported dtype %s (supported: %s)", name, Supported)
	}
	blocks := int64(len(b)) / l.blockBytes
	if int64(len(b))%l.blockBytes != 0 || int64(len(dst)) < blocks*l.blockSize {
		return nil, fmt.Errorf("%d bytes of %s do not decode into %d values", len(b), name, len(dst))
	}
	le := binary.LittleEndian
	switch name {
	case F32:
		for i := range blocks {
			dst[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
	case F16:
		for i := range blocks {
			dst[i] = float16.FromBits(le.Uint16(b[2*i:])).Float32()
		}
	case BF16:
		for i := range blocks {
			dst[i] = bfloat16.FromBits(le.Uint16(b[2*i:])).Float32()
		}
	default:
		q := quants[name]
		for k := range blocks {
			q.decode(b[k*l.blockBytes:(k+1)*l.blockBytes], dst[k*l.blockSize:(k+1)*l.blockSize])
		}
	}
	return dst[blocks*l.blockSize:], nil
}

// ReadAt reads n elements stored as name at offset off of r and decodes them, reading a bounded chunk at a time
// so that only the float32 result is allocated in full. Errors name the byte range, not the file.
func ReadAt(r io.ReaderAt, off int64, name string, n int64) ([]float32, error) {
	if _, err := Size(name, n); err != nil {
		return nil, err
	}
	out := make([]float32, 0, n)
	err := ReadChunks(r, off, name, n, func(values []float32) error {
		out = append(out, values...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReadChunks reads n elements stored as name at offset off of r and hands them to fn in order, decoded, about
// 64 Ki values at a time (fn must not keep the slice), so that a tensor can be converted without holding it all
// as float32. Errors name the byte range, not the file; fn's errors are returned as they are.
func ReadChunks(r io.ReaderAt, off int64, name string, n int64, fn func(values []float32) error) error {
	size, err := Size(name, n)
	if err != nil {
		return err
	}
	// Chunks of about 256 KiB hold whole blocks.
	l := layouts[name]
	chunk := (1 << 18) / l.blockBytes * l.blockBytes
	buf := make([]byte, min(chunk, size))
	values := make([]float32, int64(len(buf))/l.blockBytes*l.blockSize)
	for done := int64(0); done < size; {
		b := buf[:min(int64(len(buf)), size-done)]
		if _, err := r.ReadAt(b, off+done); err != nil {
			return fmt.Errorf("reading %d bytes at offset %d: %w", len(b), off+done, err)
		}
		v := values[:int64(len(b))/l.blockBytes*l.blockSize]
		if _, err := Decode(name, b, v); err != nil {
			return err
		}
		if err := fn(v); err != nil {
			return err
		}
		done += int64(len(b))
	}
	return nil
}

// Encode writes data stored as name to w (a float type, or a quantization for a whole number of blocks). Q8_0
// follows ggml's quantize_row_q8_0_ref; the other quantizations are simpler than ggml's (see quant.go). w's
// errors are returned.
func Encode(w io.Writer, name string, data []float32) error {
	l, ok := layouts[name]
	if !ok {
		return fmt.Errorf("unsupported dtype %s (supported: %s)", name, Supported)
	}
	if int64(len(data))%l.blockSize != 0 {
		return fmt.Errorf("%s needs a multiple of %d elements, got %d", name, l.blockSize, len(data))
	}
	chunkBlocks := max(1, 2048*32/int(l.blockSize))
	buf := make([]byte, 0, int64(chunkBlocks)*l.blockBytes)
	le := binary.LittleEndian
	for start := 0; start < len(data); {
		end := min(len(data), start+chunkBlocks*int(l.blockSize))
		b := buf[:0]
		switch name {
		case F32:
			for _, v := range data[start:end] {
				b = le.AppendUint32(b, math.Float32bits(v))
			}
		case F16:
			for _, v := range data[start:end] {
				b = le.AppendUint16(b, float16.FromFloat32(v).Bits())
			}
		case BF16:
			for _, v := range data[start:end] {
				b = le.AppendUint16(b, bfloat16.FromFloat32(v).Bits())
			}
		default:
			q, bs, bb := quants[name], int(l.blockSize), int(l.blockBytes)
			for blk := start; blk < end; blk += bs {
				b = b[:len(b)+bb]
				out := b[len(b)-bb:]
				clear(out)
				q.encode(data[blk:blk+bs], out)
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		start = end
	}
	return nil
}
