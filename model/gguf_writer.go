package model

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/compute/dtypes/float16"
)

// GGUFTensor is one tensor for WriteGGUF.
type GGUFTensor struct {
	Name  string
	Shape []int     // outermost first (HF order, [out, in]); written innermost first as GGUF requires
	Data  []float32 // row-major, len = product of Shape
	Type  string    // storage: "F32" (when empty), "F16", "BF16" or "Q8_0" (rows must be whole blocks of 32)
}

// GGUFKeyValue is one metadata entry for WriteGGUF. Value must have an exact GGUF type: uint8, int8, uint16,
// int16, uint32, int32, uint64, int64, float32, float64, bool, string, or a slice of one of these. A plain
// int is refused because GGUF readers look keys up by exact type (llama.cpp wants uint32 for most counts).
type GGUFKeyValue struct {
	Key   string
	Value any
}

// GGUF value type tags (ggml's gguf_type) and tensor types (ggml_type).
const (
	ggufTypeUint8 uint32 = iota
	ggufTypeInt8
	ggufTypeUint16
	ggufTypeInt16
	ggufTypeUint32
	ggufTypeInt32
	ggufTypeFloat32
	ggufTypeBool
	ggufTypeString
	ggufTypeArray
	ggufTypeUint64
	ggufTypeInt64
	ggufTypeFloat64
)

var ggufTensorTypeIDs = map[string]uint32{dtF32: 0, dtF16: 1, dtQ8_0: 8, dtBF16: 30}

// ggufDefaultAlignment is the spec's default general.alignment.
const ggufDefaultAlignment = 32

// WriteGGUF writes a GGUF v3 file: metadata in the given order, then the tensors, each aligned to
// general.alignment (a uint32 in metadata, default 32). It writes a temporary file beside path and renames it,
// so path is either absent, the old file, or complete.
func WriteGGUF(path string, metadata []GGUFKeyValue, tensors []GGUFTensor) (err error) {
	alignment := uint64(ggufDefaultAlignment)
	keys := map[string]bool{}
	for _, kv := range metadata {
		if keys[kv.Key] {
			return fmt.Errorf("%s: metadata key %q appears twice", path, kv.Key)
		}
		keys[kv.Key] = true
		if kv.Key == "general.alignment" {
			a, ok := kv.Value.(uint32)
			if !ok || a == 0 || a%8 != 0 {
				return fmt.Errorf("%s: general.alignment must be a uint32 multiple of 8, got %v (%T)", path, kv.Value, kv.Value)
			}
			alignment = uint64(a)
		}
	}
	// Lay out tensor data first so that every problem is found before a file is created.
	offsets := make([]uint64, len(tensors))
	sizes := make([]uint64, len(tensors))
	names := map[string]bool{}
	var dataSize uint64
	for i := range tensors {
		t := &tensors[i]
		if names[t.Name] {
			return fmt.Errorf("%s: tensor %q appears twice", path, t.Name)
		}
		names[t.Name] = true
		dtype := t.Type
		if dtype == "" {
			dtype = dtF32
		}
		if _, ok := ggufTensorTypeIDs[dtype]; !ok {
			return fmt.Errorf("%s: tensor %q: cannot write dtype %q (F32, F16, BF16, Q8_0)", path, t.Name, t.Type)
		}
		n, err := numElements(t.Shape)
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", path, t.Name, err)
		}
		if int64(len(t.Data)) != n {
			return fmt.Errorf("%s: tensor %q: %d values for shape %v", path, t.Name, len(t.Data), t.Shape)
		}
		if dtype == dtQ8_0 && t.Shape[len(t.Shape)-1]%q8BlockSize != 0 {
			return fmt.Errorf("%s: tensor %q: Q8_0 needs rows that are whole blocks of %d, shape %v", path, t.Name, q8BlockSize, t.Shape)
		}
		nb, err := storageBytes(dtype, n)
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", path, t.Name, err)
		}
		offsets[i], sizes[i] = dataSize, uint64(nb)
		dataSize = alignUp(dataSize+uint64(nb), alignment)
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := &countWriter{w: bufio.NewWriterSize(tmp, 1<<20)}
	w.raw([]byte("GGUF"))
	w.u32(3)
	w.u64(uint64(len(tensors)))
	w.u64(uint64(len(metadata)))
	for _, kv := range metadata {
		w.str(kv.Key)
		if err := w.value(kv.Value); err != nil {
			return fmt.Errorf("%s: metadata %q: %w", path, kv.Key, err)
		}
	}
	for i, t := range tensors {
		w.str(t.Name)
		w.u32(uint32(len(t.Shape)))
		for d := len(t.Shape) - 1; d >= 0; d-- {
			w.u64(uint64(t.Shape[d]))
		}
		dtype := t.Type
		if dtype == "" {
			dtype = dtF32
		}
		w.u32(ggufTensorTypeIDs[dtype])
		w.u64(offsets[i])
	}
	w.pad(alignment)
	dataStart := w.n
	for i, t := range tensors {
		dtype := t.Type
		if dtype == "" {
			dtype = dtF32
		}
		if w.err == nil && uint64(w.n)-uint64(dataStart) != offsets[i] {
			return fmt.Errorf("%s: tensor %q: at data offset %d, laid out at %d", path, t.Name, uint64(w.n)-uint64(dataStart), offsets[i])
		}
		start := w.n
		encodeTensor(w, dtype, t.Data)
		if w.err == nil && uint64(w.n-start) != sizes[i] {
			return fmt.Errorf("%s: tensor %q: wrote %d bytes, laid out %d", path, t.Name, w.n-start, sizes[i])
		}
		w.pad(alignment) // the data section starts aligned, so this keeps w.n - start == offsets[i+1]
	}
	if w.err != nil {
		return fmt.Errorf("%s: %w", path, w.err)
	}
	if err := w.w.(*bufio.Writer).Flush(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// encodeTensor writes values in dtype's little-endian storage format.
func encodeTensor(w *countWriter, dtype string, data []float32) {
	var b [2 + q8BlockSize]byte
	switch dtype {
	case dtF32:
		for _, v := range data {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			w.raw(b[:4])
		}
	case dtF16:
		for _, v := range data {
			binary.LittleEndian.PutUint16(b[:], float16.FromFloat32(v).Bits())
			w.raw(b[:2])
		}
	case dtBF16:
		for _, v := range data {
			binary.LittleEndian.PutUint16(b[:], bfloat16.FromFloat32(v).Bits())
			w.raw(b[:2])
		}
	case dtQ8_0:
		for blk := 0; blk+q8BlockSize <= len(data); blk += q8BlockSize {
			quantizeQ8_0(data[blk:blk+q8BlockSize], b[:])
			w.raw(b[:])
		}
	}
}

// quantizeQ8_0 follows ggml's quantize_row_q8_0_ref: d = max|x|/127, q = round(x/d) (half away from zero),
// d stored as f16.
func quantizeQ8_0(x []float32, out []byte) {
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(out, float16.FromFloat32(d).Bits())
	for j, v := range x {
		out[2+j] = byte(int8(math.Round(float64(v * id))))
	}
}

// countWriter counts bytes written and keeps the first error, so the layout code stays linear.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) raw(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *countWriter) u32(v uint32) { c.raw(binary.LittleEndian.AppendUint32(nil, v)) }
func (c *countWriter) u64(v uint64) { c.raw(binary.LittleEndian.AppendUint64(nil, v)) }
func (c *countWriter) str(s string) { c.u64(uint64(len(s))); c.raw([]byte(s)) }

func (c *countWriter) pad(alignment uint64) {
	if rem := uint64(c.n) % alignment; rem != 0 {
		c.raw(make([]byte, alignment-rem))
	}
}

// value writes a typed metadata value (type tag, then payload).
func (c *countWriter) value(v any) error {
	le := binary.LittleEndian
	switch x := v.(type) {
	case string:
		c.u32(ggufTypeString)
		c.str(x)
	case bool:
		c.u32(ggufTypeBool)
		c.raw([]byte{boolByte(x)})
	case []string:
		c.u32(ggufTypeArray)
		c.u32(ggufTypeString)
		c.u64(uint64(len(x)))
		for _, s := range x {
			c.str(s)
		}
	case []bool:
		c.u32(ggufTypeArray)
		c.u32(ggufTypeBool)
		c.u64(uint64(len(x)))
		for _, b := range x {
			c.raw([]byte{boolByte(b)})
		}
	default:
		tag, ok := ggufNumericTag(v)
		if ok {
			c.u32(tag)
			return binary.Write(writerFunc(c.raw), le, v)
		}
		tag, n, ok := ggufNumericSliceTag(v)
		if !ok {
			return fmt.Errorf("value of type %T has no GGUF type", v)
		}
		c.u32(ggufTypeArray)
		c.u32(tag)
		c.u64(uint64(n))
		return binary.Write(writerFunc(c.raw), le, v)
	}
	return nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// writerFunc adapts countWriter.raw to io.Writer for binary.Write.
type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }

func ggufNumericTag(v any) (uint32, bool) {
	switch v.(type) {
	case uint8:
		return ggufTypeUint8, true
	case int8:
		return ggufTypeInt8, true
	case uint16:
		return ggufTypeUint16, true
	case int16:
		return ggufTypeInt16, true
	case uint32:
		return ggufTypeUint32, true
	case int32:
		return ggufTypeInt32, true
	case float32:
		return ggufTypeFloat32, true
	case uint64:
		return ggufTypeUint64, true
	case int64:
		return ggufTypeInt64, true
	case float64:
		return ggufTypeFloat64, true
	}
	return 0, false
}

func ggufNumericSliceTag(v any) (tag uint32, n int, ok bool) {
	switch x := v.(type) {
	case []uint8:
		return ggufTypeUint8, len(x), true
	case []int8:
		return ggufTypeInt8, len(x), true
	case []uint16:
		return ggufTypeUint16, len(x), true
	case []int16:
		return ggufTypeInt16, len(x), true
	case []uint32:
		return ggufTypeUint32, len(x), true
	case []int32:
		return ggufTypeInt32, len(x), true
	case []float32:
		return ggufTypeFloat32, len(x), true
	case []uint64:
		return ggufTypeUint64, len(x), true
	case []int64:
		return ggufTypeInt64, len(x), true
	case []float64:
		return ggufTypeFloat64, len(x), true
	}
	return 0, 0, false
}
