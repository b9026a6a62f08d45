package model

import (
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/dtype"
)

// Names lists the weights in name order.
func (p *Pretrained) Names() []string {
	set := maps.Clone(p.Weights)
	if set == nil {
		set = map[string]*Tensor{}
	}
	for name := range p.sources {
		set[name] = nil
	}
	return slices.Sorted(maps.Keys(set))
}

// Shape returns a weight's HF-layout shape, or nil when there is no such weight.
func (p *Pretrained) Shape(name string) []int {
	if t := p.Weights[name]; t != nil {
		return t.Shape
	}
	if src := p.sources[name]; src != nil {
		return src.shape
	}
	return nil
}

// Tensor returns one weight as a float32 host tensor in HF layout, reading it from its file when it is not in
// memory. It refuses NaN and infinite values.
func (p *Pretrained) Tensor(name string) (*Tensor, error) {
	if t := p.Weights[name]; t != nil {
		return t, nil
	}
	src := p.sources[name]
	if src == nil {
		return nil, fmt.Errorf("%s: no weight %q", p.Path, name)
	}
	f, err := os.Open(src.file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := readTensor(f, src)
	if err != nil {
		return nil, err
	}
	if heads, ok := p.permute[name]; ok {
		if t, err = LlamaCppUnpermute(t, heads); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", src.file, src.name, err)
		}
	}
	return t, nil
}

// ReadAll reads every weight into p.Weights as float32 (small models and tests; large models stay in their files).
func (p *Pretrained) ReadAll() error {
	all := make(map[string]*Tensor, len(p.sources))
	for _, name := range p.Names() {
		t, err := p.Tensor(name)
		if err != nil {
			return err
		}
		all[name] = t
	}
	p.Weights = all
	return nil
}

// Compute types of the frozen base's matmuls (the --dtype values).
const (
	ComputeAuto = "auto"
	ComputeF32  = "f32"
	ComputeBF16 = "bf16"
	ComputeF16  = "f16"
)

// ComputeTypes lists the --dtype values.
var ComputeTypes = []string{ComputeAuto, ComputeF32, ComputeBF16, ComputeF16}

// ResolveCompute turns a --dtype value into a concrete one for backend b and checks that b supports it. "auto" is
// f32 on the Go backend, the only type it multiplies correctly at real sizes (and faster: measured on a 2-core AVX2
// machine, 87-113 GFLOP/s converting bf16 weights to f32 per matmul, 58-65 GFLOP/s in its bf16 kernels), and bf16
// elsewhere (XLA), where accelerators multiply half-precision matrices fastest.
func ResolveCompute(b compute.Backend, name string) (string, error) {
	switch name {
	case "", ComputeAuto:
		name = ComputeBF16
		if isGoBackend(b) {
			name = ComputeF32
		}
	case ComputeF32, ComputeBF16, ComputeF16:
	default:
		return "", fmt.Errorf("%q is not one of %s", name, strings.Join(ComputeTypes, ", "))
	}
	dt := computeDType(name)
	if isGoBackend(b) && dt != dtypes.Float32 {
		// Measured with compute v0.1.14 on AVX2: bf16 × bf16 → f32 products of [128, 64]×[64, 512] are off by up to
		// 0.19 (values ≤ 1.2) and of [512, 2048]×[2048, 512] by up to 1.5 (values ≤ 2.5); small ones are exact.
		return "", fmt.Errorf("%s: the Go backend's half-precision matmuls give wrong results at real sizes; "+
			"use f32 (bf16 weights stay bf16 in memory either way) or an XLA backend", name)
	}
	if caps := b.Capabilities(); caps.DTypes != nil && !caps.DTypes[dt] {
		return "", fmt.Errorf("%s: the %s backend does not support %s (use f32)", name, b.Name(), dt)
	}
	return name, nil
}

// isGoBackend tells the pure-Go backend from XLA.
func isGoBackend(b compute.Backend) bool {
	return strings.HasPrefix(strings.ToLower(b.Name()), "go")
}

func computeDType(compute string) dtypes.DType {
	switch compute {
	case ComputeBF16:
		return dtypes.BFloat16
	case ComputeF16:
		return dtypes.Float16
	}
	return dtypes.Float32
}

// storageDType is the dtype a weight is held in on the backend: matrices (the embedding and every projection) stay
// in their file's dtype when the compute type is f32 (a quantized type such as Q8_0 or Q4_K becomes f16, which holds
// its values to 2⁻¹¹), or take
// the half-precision compute type; vectors (norms, biases) are tiny and held in the activations' dtype.
func storageDType(fileDType string, rank int, activation, compute dtypes.DType) dtypes.DType {
	switch {
	case activation == dtypes.Float64 || rank < 2:
		return activation
	case compute != dtypes.Float32:
		return compute
	}
	switch {
	case fileDType == dtype.BF16:
		return dtypes.BFloat16
	case fileDType == dtype.F16 || dtype.Quantized(fileDType):
		return dtypes.Float16
	}
	return dtypes.Float32
}

// fileDTypeName is the internal/dtype name of a backend dtype.
func fileDTypeName(dt dtypes.DType) string {
	switch dt {
	case dtypes.BFloat16:
		return dtype.BF16
	case dtypes.Float16:
		return dtype.F16
	}
	return dtype.F32
}

// weightTensor builds the backend tensor of one weight in dtype dt. A weight stored on disk in dt is read straight
// into backend memory (no host copy on the Go backend, whose tensors share its buffers); others are converted one
// tensor at a time.
func (p *Pretrained) weightTensor(b compute.Backend, name string, dt dtypes.DType) (*tensors.Tensor, error) {
	src := p.sources[name]
	if src != nil && p.Weights[name] == nil && dt == dtypes.Float16 && dtype.Quantized(src.dtype) {
		return newBackendTensor(b, dt, src.shape, func(buf []byte) error { return p.dequantizeInto(buf, name, src) })
	}
	if src == nil || p.Weights[name] != nil || dt == dtypes.Float64 || fileDTypeName(dt) != src.dtype {
		t, err := p.Tensor(name)
		if err != nil {
			return nil, err
		}
		return hostTensor(b, t, dt, p.describe(name))
	}
	return newBackendTensor(b, dt, src.shape, func(buf []byte) error {
		f, err := os.Open(src.file)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.ReadAt(buf, src.offset); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%s: tensor %q: %w", src.file, src.name, err)
		}
		if bad, first := nonFinite(buf, dt); bad > 0 {
			return fmt.Errorf("%s: tensor %q: %d values are NaN or infinite (the first at index %d)", src.file, src.name, bad, first)
		}
		if heads, ok := p.permute[name]; ok {
			permuteRowBytes(buf, src.shape[0], heads, true)
		}
		return nil
	})
}

// dequantizeInto decodes a quantized weight into buf as f16, a chunk at a time (never the whole tensor as float32),
// refusing NaN and infinite values and values beyond f16's range, and restores HF row order.
func (p *Pretrained) dequantizeInto(buf []byte, name string, src *tensorSource) error {
	f, err := os.Open(src.file)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := dtype.Elements(src.shape)
	if err != nil {
		return fmt.Errorf("%s: tensor %q: %w", src.file, src.name, err)
	}
	w := &sliceWriter{buf: buf}
	done := 0
	err = dtype.ReadChunks(f, src.offset, src.dtype, n, func(values []float32) error {
		if err := checkFinite(src, values, done); err != nil {
			return err
		}
		done += len(values)
		if err := dtype.Encode(w, dtype.F16, values); err != nil {
			return fmt.Errorf("%s: tensor %q: %w", src.file, src.name, err)
		}
		return nil
	})
	if err != nil {
		if !strings.Contains(err.Error(), src.file) {
			err = fmt.Errorf("%s: tensor %q: %w", src.file, src.name, err)
		}
		return err
	}
	if bad, first := nonFinite(buf, dtypes.Float16); bad > 0 {
		return fmt.Errorf("%s: tensor %q: %d values overflow f16 (the first at index %d): use --dtype bf16", src.file,
			src.name, bad, first)
	}
	if heads, ok := p.permute[name]; ok {
		permuteRowBytes(buf, src.shape[0], heads, true)
	}
	return nil
}

// describe names a weight for errors: its file and name there, or the model path.
func (p *Pretrained) describe(name string) string {
	if src := p.sources[name]; src != nil {
		return fmt.Sprintf("%s: tensor %q", src.file, src.name)
	}
	return fmt.Sprintf("%s: tensor %q", p.Path, name)
}

// hostTensor converts a float32 host tensor into a backend tensor of dtype dt; converting to a half-precision type
// fails on values that overflow it.
func hostTensor(b compute.Backend, t *Tensor, dt dtypes.DType, where string) (*tensors.Tensor, error) {
	switch dt {
	case dtypes.Float32:
		return tensors.FromFlatDataAndDimensions(t.Data, t.Shape...), nil
	case dtypes.Float64:
		wide := make([]float64, len(t.Data))
		for i, v := range t.Data {
			wide[i] = float64(v)
		}
		return tensors.FromFlatDataAndDimensions(wide, t.Shape...), nil
	}
	return newBackendTensor(b, dt, t.Shape, func(buf []byte) error {
		if err := dtype.Encode(&sliceWriter{buf: buf}, fileDTypeName(dt), t.Data); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if bad, first := nonFinite(buf, dt); bad > 0 {
			return fmt.Errorf("%s: %d values overflow %s (the first at index %d, %g): use --dtype f32 or bf16",
				where, bad, dt, first, t.Data[first])
		}
		return nil
	})
}

// newBackendTensor creates a backend tensor of the given dtype and shape and lets fill write its bytes.
func newBackendTensor(b compute.Backend, dt dtypes.DType, shape []int, fill func(buf []byte) error) (*tensors.Tensor, error) {
	t, err := tensors.FromShapeForBackend(b, 0, shapes.Make(dt, shape...))
	if err != nil {
		return nil, err
	}
	var fillErr error
	if err := t.MutableBytes(func(buf []byte) { fillErr = fill(buf) }); err != nil {
		return nil, err
	}
	if fillErr != nil {
		_ = t.FinalizeAll()
		return nil, fillErr
	}
	if !t.IsShared() {
		// An accelerator: move it to the device now and drop the host copy, one tensor at a time.
		if err := t.MaterializeOnDevice(b, false, 0); err != nil {
			return nil, err
		}
		t.FinalizeLocal()
	}
	return t, nil
}

// sliceWriter writes into a fixed byte slice.
type sliceWriter struct {
	buf []byte
	off int
}

func (w *sliceWriter) Write(p []byte) (int, error) {
	if len(p) > len(w.buf)-w.off {
		return 0, io.ErrShortWrite
	}
	w.off += copy(w.buf[w.off:], p)
	return len(p), nil
}

// nonFinite counts NaN and infinite values in little-endian data of dtype dt, and finds the first.
func nonFinite(buf []byte, dt dtypes.DType) (bad, first int) {
	first = -1
	note := func(i int) {
		if bad == 0 {
			first = i
		}
		bad++
	}
	switch dt {
	case dtypes.Float32:
		for i := 0; i+4 <= len(buf); i += 4 {
			if binary.LittleEndian.Uint32(buf[i:])&0x7f800000 == 0x7f800000 {
				note(i / 4)
			}
		}
	case dtypes.BFloat16:
		for i := 0; i+2 <= len(buf); i += 2 {
			if binary.LittleEndian.Uint16(buf[i:])&0x7f80 == 0x7f80 {
				note(i / 2)
			}
		}
	case dtypes.Float16:
		for i := 0; i+2 <= len(buf); i += 2 {
			if binary.LittleEndian.Uint16(buf[i:])&0x7c00 == 0x7c00 {
				note(i / 2)
			}
		}
	case dtypes.Float64:
		for i := 0; i+8 <= len(buf); i += 8 {
			if v := math.Float64frombits(binary.LittleEndian.Uint64(buf[i:])); math.IsNaN(v) || math.IsInf(v, 0) {
				note(i / 8)
			}
		}
	}
	return bad, first
}

// permuteRowBytes applies permuteRows' row order to a row-major [rows, ...] tensor's bytes, in place.
func permuteRowBytes(buf []byte, rows, nHeads int, inverse bool) {
	rowBytes := len(buf) / rows
	orig := slices.Clone(buf)
	forEachPermutedRow(rows, nHeads, inverse, func(dst, src int) {
		copy(buf[dst*rowBytes:(dst+1)*rowBytes], orig[src*rowBytes:(src+1)*rowBytes])
	})
}
