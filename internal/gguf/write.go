package gguf

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/fileio"
)

// Tensor is one tensor for Write. Its data come from Data, from Load, or from Raw.
type Tensor struct {
	Name  string
	Shape []int     // outermost first (HF order, [out, in]); written innermost first as GGUF requires
	Data  []float32 // row-major, len = product of Shape
	// DType is the storage type: "F32" (when empty), "F16", "BF16" or a quantization of internal/dtype such as
	// "Q8_0" or "Q4_K" (rows must then be whole blocks).
	DType string
	// Load, when Data is nil, makes the data as the tensor is written, so that a writer holds one tensor's floats
	// at a time.
	Load func() ([]float32, error)
	// Raw, when set, holds the tensor's bytes already stored as DType (of any ggml type whose size is known);
	// they are copied as they are.
	Raw *io.SectionReader
}

// Write writes a GGUF v3 file: metadata in the given order, then the tensors, each aligned to general.alignment
// (a uint32 in metadata, default 32). A metadata value must have an exact GGUF type: uint8, int8, uint16, int16,
// uint32, int32, uint64, int64, float32, float64, bool, string, or a slice of one of these; a plain int is
// refused because GGUF readers look keys up by exact type (llama.cpp wants uint32 for most counts). The file is
// streamed through fileio.Write, so path is either absent, the old file, or complete.
func Write(path string, metadata []KV, tensors []Tensor) error {
	alignment := uint64(DefaultAlignment)
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
	types := make([]TensorType, len(tensors))
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
		dt := storedDType(t.DType)
		typ, ok := TensorTypeByName(dt)
		if t.Raw != nil {
			var elems uint64
			if n, err := dtype.Elements(t.Shape); err == nil {
				elems = uint64(n)
			}
			nb, known := typ.Size(elems)
			if !ok || !known || nb != t.Raw.Size() {
				return fmt.Errorf("%s: tensor %q: %d bytes of %s do not hold shape %v", path, t.Name, t.Raw.Size(), dt, t.Shape)
			}
			types[i], offsets[i], sizes[i] = typ, dataSize, uint64(nb)
			dataSize = alignUp(dataSize+uint64(nb), alignment)
			continue
		}
		if !ok || !dtype.Known(dt) {
			return fmt.Errorf("%s: tensor %q: cannot write dtype %q (%s)", path, t.Name, t.DType, dtype.Supported)
		}
		n, err := dtype.Elements(t.Shape)
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", path, t.Name, err)
		}
		if t.Load == nil && int64(len(t.Data)) != n {
			return fmt.Errorf("%s: tensor %q: %d values for shape %v", path, t.Name, len(t.Data), t.Shape)
		}
		if block := dtype.BlockSize(dt); t.Shape[len(t.Shape)-1]%block != 0 {
			return fmt.Errorf("%s: tensor %q: %s needs rows that are whole blocks of %d, shape %v", path, t.Name, dt, block, t.Shape)
		}
		nb, err := dtype.Size(dt, n)
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", path, t.Name, err)
		}
		types[i], offsets[i], sizes[i] = typ, dataSize, uint64(nb)
		dataSize = alignUp(dataSize+uint64(nb), alignment)
	}

	return fileio.Write(path, func(out io.Writer) error {
		w := &countWriter{w: out}
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
			w.u32(uint32(types[i]))
			w.u64(offsets[i])
		}
		w.pad(alignment)
		dataStart := w.n
		for i, t := range tensors {
			if w.err == nil && uint64(w.n)-uint64(dataStart) != offsets[i] {
				return fmt.Errorf("%s: tensor %q: at data offset %d, laid out at %d", path, t.Name, uint64(w.n)-uint64(dataStart), offsets[i])
			}
			start := w.n
			switch data := t.Data; {
			case t.Raw != nil:
				if _, err := io.Copy(w, t.Raw); err != nil && w.err == nil {
					return fmt.Errorf("%s: tensor %q: copying its data: %w", path, t.Name, err)
				}
			case data == nil && t.Load != nil:
				var err error
				if data, err = t.Load(); err != nil {
					return err
				}
				if n, _ := dtype.Elements(t.Shape); int64(len(data)) != n { // Elements was checked in the layout
					return fmt.Errorf("%s: tensor %q: %d values for shape %v", path, t.Name, len(data), t.Shape)
				}
				fallthrough
			default:
				if err := dtype.Encode(w, storedDType(t.DType), data); err != nil && w.err == nil {
					return fmt.Errorf("%s: tensor %q: %w", path, t.Name, err)
				}
			}
			if w.err == nil && uint64(w.n-start) != sizes[i] {
				return fmt.Errorf("%s: tensor %q: wrote %d bytes, laid out %d", path, t.Name, w.n-start, sizes[i])
			}
			w.pad(alignment) // the data section starts aligned, so this keeps w.n - start == offsets[i+1]
		}
		if w.err != nil {
			return fmt.Errorf("%s: %w", path, w.err)
		}
		return nil
	})
}

func storedDType(d string) string {
	if d == "" {
		return dtype.F32
	}
	return d
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

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

// Write makes countWriter an io.Writer for dtype.Encode and binary.Write.
func (c *countWriter) Write(b []byte) (int, error) {
	c.raw(b)
	if c.err != nil {
		return 0, c.err
	}
	return len(b), nil
}

func (c *countWriter) u32(v uint32) { c.raw(binary.LittleEndian.AppendUint32(nil, v)) }
func (c *countWriter) u64(v uint64) { c.raw(binary.LittleEndian.AppendUint64(nil, v)) }
func (c *countWriter) str(s string) { c.u64(uint64(len(s))); c.raw([]byte(s)) }

func (c *countWriter) pad(alignment uint64) {
	if rem := uint64(c.n) % alignment; rem != 0 {
		c.raw(make([]byte, alignment-rem))
	}
}

// value writes a typed metadata value: type tag, then payload (an array: element type, count, elements).
// encoding/binary writes numbers little-endian and a bool as one byte, 1 or 0, as GGUF does.
func (c *countWriter) value(v any) error {
	typ, elem, ok := valueType(v)
	if !ok {
		return fmt.Errorf("value of type %T has no GGUF type", v)
	}
	c.u32(uint32(typ))
	switch x := v.(type) {
	case string:
		c.str(x)
	case []string:
		c.u32(uint32(elem))
		c.u64(uint64(len(x)))
		for _, s := range x {
			c.str(s)
		}
	default:
		if typ == ValueArray {
			c.u32(uint32(elem))
			c.u64(uint64(binary.Size(v) / int(scalarSize[elem])))
		}
		binary.Write(c, binary.LittleEndian, v) // its errors are c's, kept in c.err
	}
	return nil
}
