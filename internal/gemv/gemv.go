// Package gemv multiplies a few rows of activations by a frozen weight matrix held in its storage dtype:
// dst[i, r] = Σ_k x[i, k]·W[r, k] for W [rows, cols] in HF layout (float32, bfloat16 or float16 bits).
//
// It is the CPU decoder's matmul: decoding reads every weight once per token for one row (or one row per sequence
// of a batch), so its speed is the speed at which memory delivers W. The kernels read W where it lies (no packing,
// no conversion to a float32 copy), widen half-precision values in registers, and split W's rows over the cores.
// With GOEXPERIMENT=simd on amd64 with AVX2+FMA they use 8-wide fused multiply-adds; elsewhere plain Go loops.
package gemv

import (
	"fmt"
	"math"
	"sync"

	"github.com/saddle-ml/saddle/internal/team"
)

// Kind is a weight's storage dtype.
type Kind int

// The storage dtypes a Matrix can hold.
const (
	F32 Kind = iota
	BF16
	F16
)

func (k Kind) String() string {
	switch k {
	case F32:
		return "f32"
	case BF16:
		return "bf16"
	case F16:
		return "f16"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Matrix is a row-major [Rows, Cols] weight: F32 holds float32 values, Bits the raw bfloat16 or float16 bits.
type Matrix struct {
	Kind       Kind
	Rows, Cols int
	F32        []float32
	Bits       []uint16
}

// Bytes is the memory a product reads from the matrix: its size in storage.
func (w *Matrix) Bytes() int64 {
	if w.Kind == F32 {
		return int64(w.Rows) * int64(w.Cols) * 4
	}
	return int64(w.Rows) * int64(w.Cols) * 2
}

// Check reports a matrix whose storage does not match its shape.
func (w *Matrix) Check() error {
	n := w.Rows * w.Cols
	if w.Rows <= 0 || w.Cols <= 0 {
		return fmt.Errorf("gemv: matrix shape [%d, %d]", w.Rows, w.Cols)
	}
	switch w.Kind {
	case F32:
		if len(w.F32) != n {
			return fmt.Errorf("gemv: f32 matrix [%d, %d] holds %d values", w.Rows, w.Cols, len(w.F32))
		}
	case BF16, F16:
		if len(w.Bits) != n {
			return fmt.Errorf("gemv: %s matrix [%d, %d] holds %d values", w.Kind, w.Rows, w.Cols, len(w.Bits))
		}
	default:
		return fmt.Errorf("gemv: unknown kind %d", w.Kind)
	}
	return nil
}

// rowBlock is how many weight rows a kernel call handles together (they share each load of x).
const rowBlock = 4

// minParallelWork is the number of multiply-adds below which a product runs on the calling goroutine: starting
// goroutines costs about a microsecond, a 64k-element product about as much.
const minParallelWork = 1 << 16

// MulT computes dst[i*ldd + r] = Σ_k x[i*Cols + k]·W[r, k] for i < m and r < Rows (x is [m, Cols], dst [m, ldd]
// with ldd ≥ Rows), splitting W's rows over the workers of internal/team.
func (w *Matrix) MulT(dst []float32, ldd int, x []float32, m int) {
	if m <= 0 {
		return
	}
	if len(x) < m*w.Cols || ldd < w.Rows || len(dst) < (m-1)*ldd+w.Rows {
		panic(fmt.Sprintf("gemv: MulT of [%d, %d] by %d rows of x (%d values) into %d values with stride %d",
			w.Rows, w.Cols, m, len(x), len(dst), ldd))
	}
	workers := team.Workers()
	work := w.Rows * w.Cols * m
	if workers == 1 || work < minParallelWork || w.Rows < 2*rowBlock {
		w.mulRows(dst, ldd, x, m, 0, w.Rows)
		return
	}
	// Chunks of whole row blocks; a few per worker so a core that is interrupted does not hold the others up.
	chunks := min(workers*4, w.Rows/rowBlock)
	per := (w.Rows/rowBlock + chunks - 1) / chunks * rowBlock
	team.For(w.Rows, per, workers, func(_, lo, hi int) { w.mulRows(dst, ldd, x, m, lo, hi) })
}

// maxXGroup is the most x rows one pass over W serves; xGroupBytes bounds their size so that they stay in the L2
// cache while W streams past (32 rows of 2048 floats, 8 of 8192).
const (
	maxXGroup   = 32
	xGroupBytes = 256 << 10
)

// chunk is how many columns of a half-precision row block are widened to float32 at a time (4 KB, in L1).
const chunk = 256

// widenPool holds the row blocks half-precision weights are widened into.
var widenPool = sync.Pool{New: func() any { return new([rowBlock * chunk]float32) }}

// mulRows computes output rows [r0, r1) for every x row.
func (w *Matrix) mulRows(dst []float32, ldd int, x []float32, m, r0, r1 int) {
	cols := w.Cols
	var buf [rowBlock][]float32
	if w.Kind != F32 {
		widened := widenPool.Get().(*[rowBlock * chunk]float32)
		defer widenPool.Put(widened)
		for j := range buf {
			buf[j] = widened[j*chunk : j*chunk+min(chunk, cols)]
		}
	}
	var acc [maxXGroup][rowBlock]float32
	xGroup := min(maxXGroup, max(2, xGroupBytes/(4*cols)))
	// The kernels take rowBlock rows at a time, one from each quarter of [r0, rEnd): each of the rowBlock streams
	// they read runs through a quarter of the rows, contiguous in memory, however short a row is. (Four adjacent
	// rows were four streams of one row each, restarted every block: a 512-column product then read 12.8 GB/s
	// where a 2048-column one read 20.5, on a machine that streams 20. With quarters both read ~20.)
	q := (r1 - r0) / rowBlock
	rEnd := r0 + q*rowBlock
	if !useSIMD {
		q, rEnd = 0, r0
	}
	for i0 := 0; i0 < m; i0 += xGroup {
		g := min(xGroup, m-i0)
		xs := func(i, lo, hi int) []float32 { return x[(i0+i)*cols+lo : (i0+i)*cols+hi] }
		for b := range q {
			var at [rowBlock]int // the block's rows
			for j := range at {
				at[j] = r0 + j*q + b
			}
			switch {
			case w.Kind == BF16 && g == 1:
				var rows [rowBlock][]uint16
				for j, r := range at {
					rows[j] = w.Bits[r*cols : (r+1)*cols]
				}
				acc[0] = dot4x1BF16(rows, xs(0, 0, cols))
			case w.Kind == F32:
				var rows [rowBlock][]float32
				for j, r := range at {
					rows[j] = w.F32[r*cols : (r+1)*cols]
				}
				w.group(&acc, g, rows, xs, 0, cols, false)
			default:
				for lo := 0; lo < cols; lo += chunk {
					hi := min(lo+chunk, cols)
					var rows [rowBlock][]float32
					for j, r := range at {
						rows[j] = buf[j][:hi-lo]
						widen(w.Kind, rows[j], w.Bits[r*cols+lo:r*cols+hi])
					}
					w.group(&acc, g, rows, xs, lo, hi, lo > 0)
				}
			}
			for i := range g {
				d := dst[(i0+i)*ldd:]
				for j, r := range at {
					d[r] = acc[i][j]
				}
			}
		}
	}
	// Rows left over (and everything without SIMD kernels).
	var row []float32
	if w.Kind != F32 && rEnd < r1 {
		row = make([]float32, cols)
	}
	for r := rEnd; r < r1; r++ {
		wr := w.rowF32(r, row)
		for i := range m {
			dst[i*ldd+r] = dotGo(wr, x[i*cols:(i+1)*cols])
		}
	}
}

// group runs the 4-row kernels over g x rows for columns [lo, hi) of rows, adding to acc when add is set.
func (w *Matrix) group(acc *[maxXGroup][rowBlock]float32, g int, rows [rowBlock][]float32, xs func(i, lo, hi int) []float32, lo, hi int, add bool) {
	for i := 0; i < g; i += 2 {
		var s [2 * rowBlock]float32
		if i+1 < g {
			s = dot4x2(rows, xs(i, lo, hi), xs(i+1, lo, hi))
		} else {
			s4 := dot4x1(rows, xs(i, lo, hi))
			copy(s[:], s4[:])
		}
		for j := range rowBlock {
			if add {
				acc[i][j] += s[j]
				if i+1 < g {
					acc[i+1][j] += s[rowBlock+j]
				}
			} else {
				acc[i][j] = s[j]
				if i+1 < g {
					acc[i+1][j] = s[rowBlock+j]
				}
			}
		}
	}
}

// Row writes row r as float32 values into dst (len Cols).
func (w *Matrix) Row(r int, dst []float32) {
	copy(dst, w.rowF32(r, dst))
}

// rowF32 returns row r as float32 values, widened into buf for half precision.
func (w *Matrix) rowF32(r int, buf []float32) []float32 {
	lo, hi := r*w.Cols, (r+1)*w.Cols
	switch w.Kind {
	case BF16:
		for k, b := range w.Bits[lo:hi] {
			buf[k] = math.Float32frombits(uint32(b) << 16)
		}
		return buf
	case F16:
		for k, b := range w.Bits[lo:hi] {
			buf[k] = F16ToF32(b)
		}
		return buf
	}
	return w.F32[lo:hi]
}

func dotGo(a, b []float32) float32 {
	var s0, s1, s2, s3 float32
	k := 0
	for ; k+4 <= len(a); k += 4 {
		s0 += a[k] * b[k]
		s1 += a[k+1] * b[k+1]
		s2 += a[k+2] * b[k+2]
		s3 += a[k+3] * b[k+3]
	}
	for ; k < len(a); k++ {
		s0 += a[k] * b[k]
	}
	return (s0 + s1) + (s2 + s3)
}

// F16ToF32 widens IEEE half-precision bits exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // inf, NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: mant·2⁻²⁴
		f := float32(mant) * (1.0 / (1 << 24))
		return math.Float32frombits(sign | math.Float32bits(f))
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}
