// Package gguf reads and writes GGUF files: the header (metadata key/values and tensor descriptions), one
// tensor's data as float32, and whole files.
//
// GGUF headers are full of counts and lengths (strings, arrays, tensors, dimensions). Every one of them is
// checked against the bytes left in the file before anything is allocated from it, so a crafted file of a few
// bytes cannot make the reader allocate more than about twice the file's size. Nothing here panics on bad
// input; errors name the file and the byte offset, key or tensor.
//
// The model loader, the tokenizer and the exports all go through this package, so there is one parser to harden
// and one writer. ggml's tensor types appear here only, by name (TypeF32, TypeQ8_0, ...); their data codecs are
// in internal/dtype.
package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strconv"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/fileio"
)

// ValueType is the type of a metadata value (ggml's gguf_type).
type ValueType uint32

// Value types.
const (
	ValueUint8 ValueType = iota
	ValueInt8
	ValueUint16
	ValueInt16
	ValueUint32
	ValueInt32
	ValueFloat32
	ValueBool
	ValueString
	ValueArray
	ValueUint64
	ValueInt64
	ValueFloat64
	numValueTypes
)

var valueTypeNames = [numValueTypes]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
	"string", "array", "uint64", "int64", "float64"}

// scalarSize is the encoded size of a fixed-size value type (0 for string and array).
var scalarSize = [numValueTypes]int64{1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8}

// DefaultAlignment is the spec's general.alignment when the key is absent.
const DefaultAlignment = 32

// MaxDims is ggml's GGML_MAX_DIMS: a tensor has at most this many dimensions.
const MaxDims = 4

// KV is one metadata entry. Value holds a scalar as its Go type (uint8, int8, uint16, int16, uint32, int32,
// uint64, int64, float32, float64, bool, string) and an array as a slice of one of these ([]uint32, []string, ...).
type KV struct {
	Key   string
	Value any
}

// TensorInfo describes one tensor of the file.
type TensorInfo struct {
	Name   string
	Dims   []uint64   // GGUF order: ne[0], the innermost (fastest-varying) dimension, first
	Type   TensorType // ggml_type
	Offset uint64     // relative to File.DataOffset
	// Size is the tensor's byte size when its type's layout is known to this package (see TensorType.Size),
	// else -1. Tensors of known size are checked to lie inside the file and not to overlap.
	Size int64
}

// Shape is the tensor's dimensions outermost first (HF order, [out, in]): Dims reversed.
func (t *TensorInfo) Shape() []int {
	shape := make([]int, len(t.Dims))
	for i, d := range t.Dims {
		shape[len(shape)-1-i] = int(d)
	}
	return shape
}

// File is a parsed GGUF header.
type File struct {
	Path       string
	Version    uint32
	FileSize   int64
	KVs        []KV // in file order; keys are unique
	Tensors    []TensorInfo
	Alignment  int64
	DataOffset int64 // absolute offset of the tensor data section (aligned); 0 with ReadMetadata
	index      map[string]int
}

// Get returns the value of a metadata key.
func (f *File) Get(key string) (any, bool) {
	i, ok := f.index[key]
	if !ok {
		return nil, false
	}
	return f.KVs[i].Value, true
}

// Open reads the whole header of a GGUF file (metadata and tensor descriptions).
func Open(path string) (*File, error) { return open(path, false) }

// ReadMetadata reads only the magic, version and metadata of a GGUF file (the tensor descriptions are left
// unread and File.Tensors is empty).
func ReadMetadata(path string) (*File, error) { return open(path, true) }

func open(path string, metadataOnly bool) (*File, error) {
	f, size, err := fileio.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(bufio.NewReaderSize(f, 1<<16), size, path, metadataOnly)
}

// Parse reads a GGUF header from r, which holds size bytes in all; name is used in errors.
func Parse(r io.Reader, size int64, name string, metadataOnly bool) (*File, error) {
	p := &parser{r: r, size: size, name: name}
	f, err := p.file(metadataOnly)
	if err != nil {
		return nil, err
	}
	f.Path = name
	return f, nil
}

type parser struct {
	r    io.Reader
	off  int64 // bytes consumed
	size int64 // total bytes
	name string
	v1   bool // GGUF v1 uses 32-bit counts and lengths
	buf  [8]byte
}

func (p *parser) errf(format string, args ...any) error {
	return fmt.Errorf("%s: offset %d: %s", p.name, p.off, fmt.Sprintf(format, args...))
}

// left is the number of bytes not yet consumed.
func (p *parser) left() int64 { return max(p.size-p.off, 0) }

func (p *parser) read(b []byte) error {
	n, err := io.ReadFull(p.r, b)
	p.off += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return p.errf("unexpected end of file (the file has %d bytes)", p.size)
		}
		return p.errf("%v", err)
	}
	return nil
}

func (p *parser) u32() (uint32, error) {
	err := p.read(p.buf[:4])
	return binary.LittleEndian.Uint32(p.buf[:4]), err
}

func (p *parser) u64() (uint64, error) {
	err := p.read(p.buf[:8])
	return binary.LittleEndian.Uint64(p.buf[:8]), err
}

// count reads a count or length: 64-bit, or 32-bit in GGUF v1.
func (p *parser) count() (uint64, error) {
	if p.v1 {
		v, err := p.u32()
		return uint64(v), err
	}
	return p.u64()
}

// countSize is the encoded size of a count, the least a string can take.
func (p *parser) countSize() int64 {
	if p.v1 {
		return 4
	}
	return 8
}

// fits checks that n items of at least itemSize bytes each can be in the rest of the file.
func (p *parser) fits(what string, n uint64, itemSize int64) error {
	if left := uint64(p.left()); n > left/uint64(itemSize) {
		return p.errf("%s %d does not fit in the %d bytes left in the file", what, n, left)
	}
	return nil
}

func (p *parser) str(what string) (string, error) {
	n, err := p.count()
	if err != nil {
		return "", err
	}
	if err := p.fits(what+" length", n, 1); err != nil {
		return "", err
	}
	b := make([]byte, n)
	if err := p.read(b); err != nil {
		return "", err
	}
	return string(b), nil
}

func (p *parser) file(metadataOnly bool) (*File, error) {
	var magic [4]byte
	if err := p.read(magic[:]); err != nil {
		return nil, err
	}
	if string(magic[:]) != "GGUF" {
		return nil, fmt.Errorf("%s: not a GGUF file (magic %q)", p.name, magic[:])
	}
	version, err := p.u32()
	if err != nil {
		return nil, err
	}
	if version < 1 || version > 3 {
		return nil, p.errf("GGUF version %d is not supported (1 to 3)", version)
	}
	p.v1 = version == 1
	nTensors, err := p.count()
	if err != nil {
		return nil, err
	}
	nKV, err := p.count()
	if err != nil {
		return nil, err
	}
	// The smallest key/value: an empty key, its type and a 1-byte value.
	if err := p.fits("metadata count", nKV, p.countSize()+4+1); err != nil {
		return nil, err
	}
	f := &File{Version: version, FileSize: p.size, Alignment: DefaultAlignment, index: map[string]int{}}
	f.KVs = make([]KV, 0, min(nKV, 1024))
	for range nKV {
		key, err := p.str("key")
		if err != nil {
			return nil, err
		}
		if _, dup := f.index[key]; dup {
			return nil, p.errf("metadata key %q appears twice", key)
		}
		typ, err := p.u32()
		if err != nil {
			return nil, err
		}
		v, err := p.value(ValueType(typ), key, true)
		if err != nil {
			return nil, err
		}
		f.index[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{Key: key, Value: v})
	}
	if v, ok := f.Get("general.alignment"); ok {
		a, isU32 := v.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("%s: general.alignment must be a uint32 power of two, got %v (%s)", p.name, v, TypeName(v))
		}
		f.Alignment = int64(a)
	}
	if metadataOnly {
		return f, nil
	}
	// The smallest tensor description: an empty name, the dimension count, the type and the offset.
	if err := p.fits("tensor count", nTensors, p.countSize()+4+4+8); err != nil {
		return nil, err
	}
	f.Tensors = make([]TensorInfo, 0, min(nTensors, 4096))
	names := make(map[string]bool, min(nTensors, 4096))
	for range nTensors {
		t, err := p.tensorInfo()
		if err != nil {
			return nil, err
		}
		if names[t.Name] {
			return nil, p.errf("tensor %q appears twice", t.Name)
		}
		names[t.Name] = true
		f.Tensors = append(f.Tensors, t)
	}
	// The data section starts at the next multiple of the alignment.
	f.DataOffset = p.off
	if rem := p.off % f.Alignment; rem != 0 {
		f.DataOffset += f.Alignment - rem
	}
	if len(f.Tensors) > 0 && f.DataOffset > p.size {
		return nil, fmt.Errorf("%s: the tensor data would start at offset %d, past the end of the file (%d bytes)", p.name, f.DataOffset, p.size)
	}
	dataSize := uint64(max(p.size-f.DataOffset, 0))
	ranges := make([]dtype.Range, 0, len(f.Tensors))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if t.Offset%uint64(f.Alignment) != 0 {
			return nil, fmt.Errorf("%s: tensor %q: offset %d is not a multiple of the alignment %d", p.name, t.Name, t.Offset, f.Alignment)
		}
		if t.Offset > dataSize || (t.Size >= 0 && uint64(t.Size) > dataSize-t.Offset) {
			return nil, fmt.Errorf("%s: tensor %q: data [%d, +%d) lies outside the data section (%d bytes from offset %d)",
				p.name, t.Name, t.Offset, t.Size, dataSize, f.DataOffset)
		}
		if t.Size >= 0 {
			ranges = append(ranges, dtype.Range{Name: t.Name, Offset: f.DataOffset + int64(t.Offset), Size: t.Size})
		}
	}
	if err := dtype.CheckOverlap(p.name, ranges); err != nil {
		return nil, err
	}
	return f, nil
}

func (p *parser) tensorInfo() (TensorInfo, error) {
	var t TensorInfo
	var err error
	if t.Name, err = p.str("tensor name"); err != nil {
		return t, err
	}
	nDims, err := p.u32()
	if err != nil {
		return t, err
	}
	if nDims > MaxDims {
		return t, p.errf("tensor %q: %d dimensions (at most %d)", t.Name, nDims, MaxDims)
	}
	t.Dims = make([]uint64, nDims)
	elems := uint64(1)
	for i := range t.Dims {
		var d uint64
		if p.v1 {
			var d32 uint32
			d32, err = p.u32()
			d = uint64(d32)
		} else {
			d, err = p.u64()
		}
		if err != nil {
			return t, err
		}
		hi, lo := bits.Mul64(elems, d)
		if hi != 0 || lo > math.MaxInt64 {
			return t, p.errf("tensor %q: dimensions %v... overflow", t.Name, append(t.Dims[:i:i], d))
		}
		t.Dims[i], elems = d, lo
	}
	typ, err := p.u32()
	if err != nil {
		return t, err
	}
	t.Type = TensorType(typ)
	if t.Offset, err = p.u64(); err != nil {
		return t, err
	}
	t.Size = -1
	if l, known := tensorTypes[t.Type]; known && l.blockSize > 0 {
		n, ok := t.Type.Size(elems)
		if !ok {
			return t, p.errf("tensor %q: %d elements (dims %v) are not whole %s blocks of %d", t.Name, elems, t.Dims,
				l.name, l.blockSize)
		}
		t.Size = n
	}
	return t, nil
}

// value reads one value of type typ; arrays are allowed only at the top level.
func (p *parser) value(typ ValueType, key string, top bool) (any, error) {
	b := p.buf[:]
	switch typ {
	case ValueUint8, ValueInt8, ValueBool:
		if err := p.read(b[:1]); err != nil {
			return nil, err
		}
		switch typ {
		case ValueUint8:
			return b[0], nil
		case ValueInt8:
			return int8(b[0]), nil
		}
		return b[0] != 0, nil
	case ValueUint16, ValueInt16:
		if err := p.read(b[:2]); err != nil {
			return nil, err
		}
		v := binary.LittleEndian.Uint16(b)
		if typ == ValueInt16 {
			return int16(v), nil
		}
		return v, nil
	case ValueUint32, ValueInt32, ValueFloat32:
		v, err := p.u32()
		if err != nil {
			return nil, err
		}
		switch typ {
		case ValueUint32:
			return v, nil
		case ValueInt32:
			return int32(v), nil
		}
		return math.Float32frombits(v), nil
	case ValueUint64, ValueInt64, ValueFloat64:
		v, err := p.u64()
		if err != nil {
			return nil, err
		}
		switch typ {
		case ValueUint64:
			return v, nil
		case ValueInt64:
			return int64(v), nil
		}
		return math.Float64frombits(v), nil
	case ValueString:
		return p.str("key " + strconv.Quote(key) + ": string")
	case ValueArray:
		if !top {
			return nil, p.errf("key %q: nested arrays are not supported", key)
		}
		et32, err := p.u32()
		if err != nil {
			return nil, err
		}
		et := ValueType(et32)
		if et >= numValueTypes || et == ValueArray {
			return nil, p.errf("key %q: array element type %d is not supported", key, et)
		}
		n, err := p.count()
		if err != nil {
			return nil, err
		}
		minSize := scalarSize[et]
		if et == ValueString {
			minSize = p.countSize()
		}
		if err := p.fits(fmt.Sprintf("key %q: array count", key), n, minSize); err != nil {
			return nil, err
		}
		return p.array(et, int(n), key)
	}
	return nil, p.errf("key %q: unknown value type %d", key, typ)
}

// array reads n elements of type et (n already checked against the file size).
func (p *parser) array(et ValueType, n int, key string) (any, error) {
	if et == ValueString {
		out := make([]string, n)
		for i := range out {
			s, err := p.str(fmt.Sprintf("key %q: element %d", key, i))
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	}
	raw := make([]byte, int64(n)*scalarSize[et])
	if err := p.read(raw); err != nil {
		return nil, err
	}
	var out any
	switch et {
	case ValueUint8:
		return raw, nil
	case ValueInt8:
		out = make([]int8, n)
	case ValueBool:
		out = make([]bool, n)
	case ValueUint16:
		out = make([]uint16, n)
	case ValueInt16:
		out = make([]int16, n)
	case ValueUint32:
		out = make([]uint32, n)
	case ValueInt32:
		out = make([]int32, n)
	case ValueFloat32:
		out = make([]float32, n)
	case ValueUint64:
		out = make([]uint64, n)
	case ValueInt64:
		out = make([]int64, n)
	case ValueFloat64:
		out = make([]float64, n)
	default:
		return nil, p.errf("key %q: array element type %d is not supported", key, et)
	}
	if _, err := binary.Decode(raw, binary.LittleEndian, out); err != nil {
		return nil, p.errf("key %q: %v", key, err)
	}
	return out, nil
}

// TypeName names the GGUF type of a value as returned in KV.Value ("uint32", "string", "array of float32").
func TypeName(v any) string {
	if v == nil {
		return "nothing"
	}
	typ, elem, ok := valueType(v)
	switch {
	case !ok:
		return fmt.Sprintf("%T", v)
	case typ == ValueArray:
		return "array of " + valueTypeNames[elem]
	}
	return valueTypeNames[typ]
}

// valueType is the GGUF type of a Go value as KV.Value holds it: a scalar's type, or ValueArray and the element
// type of a slice. ok is false for any other Go type (a plain int, say).
func valueType(v any) (typ, elem ValueType, ok bool) {
	switch v.(type) {
	case uint8:
		return ValueUint8, 0, true
	case int8:
		return ValueInt8, 0, true
	case uint16:
		return ValueUint16, 0, true
	case int16:
		return ValueInt16, 0, true
	case uint32:
		return ValueUint32, 0, true
	case int32:
		return ValueInt32, 0, true
	case uint64:
		return ValueUint64, 0, true
	case int64:
		return ValueInt64, 0, true
	case float32:
		return ValueFloat32, 0, true
	case float64:
		return ValueFloat64, 0, true
	case bool:
		return ValueBool, 0, true
	case string:
		return ValueString, 0, true
	case []uint8:
		return ValueArray, ValueUint8, true
	case []int8:
		return ValueArray, ValueInt8, true
	case []uint16:
		return ValueArray, ValueUint16, true
	case []int16:
		return ValueArray, ValueInt16, true
	case []uint32:
		return ValueArray, ValueUint32, true
	case []int32:
		return ValueArray, ValueInt32, true
	case []uint64:
		return ValueArray, ValueUint64, true
	case []int64:
		return ValueArray, ValueInt64, true
	case []float32:
		return ValueArray, ValueFloat32, true
	case []float64:
		return ValueArray, ValueFloat64, true
	case []bool:
		return ValueArray, ValueBool, true
	case []string:
		return ValueArray, ValueString, true
	}
	return 0, 0, false
}

// Int returns an integer scalar as an int64. ok is false for other types and for uint64 values past MaxInt64.
func Int(v any) (x int64, ok bool) {
	switch n := v.(type) {
	case uint8:
		return int64(n), true
	case int8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case int16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case uint64:
		if n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

// Ints returns an integer array as int64s; ok is false for other types and for uint64 values past MaxInt64.
func Ints(v any) ([]int64, bool) {
	conv := func(n int, at func(int) int64) []int64 {
		out := make([]int64, n)
		for i := range out {
			out[i] = at(i)
		}
		return out
	}
	switch a := v.(type) {
	case []uint8:
		return conv(len(a), func(i int) int64 { return int64(a[i]) }), true
	case []int8:
		return conv(len(a), func(i int) int64 { return int64(a[i]) }), true
	case []uint16:
		return conv(len(a), func(i int) int64 { return int64(a[i]) }), true
	case []int16:
		return conv(len(a), func(i int) int64 { return int64(a[i]) }), true
	case []uint32:
		return conv(len(a), func(i int) int64 { return int64(a[i]) }), true
	case []int32:
		return conv(len(a), func(i int) int64 { return int64(a[i]) }), true
	case []int64:
		return a, true
	case []uint64:
		for _, x := range a {
			if x > math.MaxInt64 {
				return nil, false
			}
		}
		return conv(len(a), func(i int) int64 { return int64(a[i]) }), true
	}
	return nil, false
}

// Floats returns a float32 or float64 array as float64s.
func Floats(v any) ([]float64, bool) {
	switch a := v.(type) {
	case []float32:
		out := make([]float64, len(a))
		for i, x := range a {
			out[i] = float64(x)
		}
		return out, true
	case []float64:
		return a, true
	}
	return nil, false
}

// Read reads a whole GGUF file: its header and every tensor as float32 in the form Write takes (shape outermost
// first, DType the file's type), so that a file can be rewritten with some tensors changed. It holds every tensor at
// once: for the small files of tests and tools (models load through ReadTensor, one tensor at a time).
func Read(path string) (*File, []Tensor, error) {
	f, err := Open(path)
	if err != nil {
		return nil, nil, err
	}
	fh, _, err := fileio.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer fh.Close()
	out := make([]Tensor, len(f.Tensors))
	for i := range f.Tensors {
		info := &f.Tensors[i]
		data, err := f.ReadTensor(fh, info)
		if err != nil {
			return nil, nil, err
		}
		out[i] = Tensor{Name: info.Name, Shape: info.Shape(), Data: data, DType: info.Type.String()}
	}
	return f, out, nil
}

// ReadTensor reads the data of tensor t of f from r (the file f was parsed from) as float32, in file order
// (ne[0] fastest). The type must be one internal/dtype decodes: F32, F16, BF16 or Q8_0.
func (f *File) ReadTensor(r io.ReaderAt, t *TensorInfo) ([]float32, error) {
	l := tensorTypes[t.Type]
	if !dtype.Known(l.name) || t.Size < 0 {
		return nil, fmt.Errorf("%s: tensor %q: type %s cannot be read as float32 (%s)", f.Path, t.Name, t.Type, dtype.Supported)
	}
	n := t.Size / l.blockBytes * l.blockSize
	data, err := dtype.ReadAt(r, f.DataOffset+int64(t.Offset), l.name, n)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", f.Path, t.Name, err)
	}
	return data, nil
}
