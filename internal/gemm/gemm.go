// Package gemm multiplies matrices on the CPU: C[m, n] (+)= A[m, k]·B[k, n], with A and B given as strided views
// (so either may be a transpose without a copy) and held as float32 or as the raw bits of bfloat16/float16 weights,
// which are widened to float32 as they are read. C is row-major float32. It is the CPU trainer's matmul; gemv is the
// decoder's few-row product.
package gemm

import (
	"fmt"
	"math"

	"github.com/saddle-ml/saddle/internal/gemv"
)

// View is a matrix view: element (i, j) is at index Off + i*RS + j*CS of F32 (Kind F32) or Bits (BF16, F16).
type View struct {
	Kind   gemv.Kind
	F32    []float32
	Bits   []uint16
	Off    int
	RS, CS int
}

// RowMajor views data as a row-major matrix with cols columns.
func RowMajor(data []float32, cols int) View { return View{Kind: gemv.F32, F32: data, RS: cols, CS: 1} }

// Weight views a weight matrix [Rows, Cols] in its storage dtype.
func Weight(w *gemv.Matrix) View {
	return View{Kind: w.Kind, F32: w.F32, Bits: w.Bits, RS: w.Cols, CS: 1}
}

// T is the transpose of v (no copy).
func (v View) T() View { v.RS, v.CS = v.CS, v.RS; return v }

// At returns element (i, j) as float32.
func (v View) At(i, j int) float32 {
	o := v.Off + i*v.RS + j*v.CS
	switch v.Kind {
	case gemv.BF16:
		return bf16(v.Bits[o])
	case gemv.F16:
		return gemv.F16ToF32(v.Bits[o])
	}
	return v.F32[o]
}

// check panics unless every element of an [r, c] view is inside its storage.
func (v View) check(what string, r, c int) {
	if r == 0 || c == 0 {
		return
	}
	n := len(v.F32)
	if v.Kind != gemv.F32 {
		n = len(v.Bits)
	}
	last := v.Off + (r-1)*v.RS + (c-1)*v.CS
	if v.RS < 0 || v.CS < 0 || v.Off < 0 || last >= n {
		panic(fmt.Sprintf("gemm: %s view [%d, %d] (offset %d, strides %d, %d) outside its %d values", what, r, c, v.Off, v.RS, v.CS, n))
	}
}

func bf16(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// Mul computes C[i*ldc + j] = Σ_p A(i, p)·B(p, j) for i < m, j < n (adding to C when accumulate is set), using
// every core.
func Mul(c []float32, ldc, m, n, k int, a, b View, accumulate bool) {
	check(c, ldc, m, n, k, a, b)
	mulParallel(c, ldc, m, n, k, a, b, second{}, accumulate)
}

// MulPair is Mul of two products into one C: C (+)= A·B + A2·B2, A2 [m, k2] and B2 [k2, n]. The second product's k
// steps join the first's last block of k steps, so C is read and written as often as for A·B alone: a low-rank term
// (k2 small) costs its multiply-adds, not another pass over C.
func MulPair(c []float32, ldc, m, n, k int, a, b View, k2 int, a2, b2 View, accumulate bool) {
	check(c, ldc, m, n, k, a, b)
	if k2 < 0 {
		panic(fmt.Sprintf("gemm: second product with %d steps", k2))
	}
	a2.check("A2", m, k2)
	b2.check("B2", k2, n)
	switch {
	case k2 == 0:
		mulParallel(c, ldc, m, n, k, a, b, second{}, accumulate)
	case k == 0:
		mulParallel(c, ldc, m, n, k2, a2, b2, second{}, accumulate)
	default:
		mulParallel(c, ldc, m, n, k, a, b, second{k: k2, a: a2, b: b2}, accumulate)
	}
}

// MulSerial is Mul on the calling goroutine only (for callers that run many small products in parallel).
func MulSerial(c []float32, ldc, m, n, k int, a, b View, accumulate bool) {
	check(c, ldc, m, n, k, a, b)
	mulSerial(c, ldc, m, n, k, a, b, second{}, accumulate)
}

func check(c []float32, ldc, m, n, k int, a, b View) {
	if m < 0 || n < 0 || k < 0 || ldc < n || (m > 0 && n > 0 && len(c) < (m-1)*ldc+n) {
		panic(fmt.Sprintf("gemm: C [%d, %d] with stride %d in %d values", m, n, ldc, len(c)))
	}
	a.check("A", m, k)
	b.check("B", k, n)
}
