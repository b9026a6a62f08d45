//go:build amd64 && !purego

package gemm

//go:generate go run asm_gen.go

import (
	"unsafe"

	"golang.org/x/sys/cpu"

	"github.com/saddle-ml/saddle/internal/gemv"
)

// hasAsm reports whether this CPU runs the assembly micro-kernel (AVX2 and FMA3, with the OS saving YMM state).
var hasAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// kern6x16 is the AVX2/FMA micro-kernel (kernel_amd64.s): C[0:6, 0:16] (row stride ldc) = (add ≠ 0 ? C : 0) +
// Σ_p a[6p:6p+6] ⊗ b[16p:16p+16], for packed a (kc·6 values) and b (kc·16 values).
//
//go:noescape
func kern6x16(kc int, a, b, c *float32, ldc int, add int)

// kern6x16r is kern6x16 with A read in place from a row-major float32 matrix (row stride lda): a[i*lda + p].
//
//go:noescape
func kern6x16r(kc int, a *float32, lda int, b, c *float32, ldc int, add int)

// kern1x16, kern2x16 and kern3x16 are kern6x16 for a last micro-panel of A with that many valid rows (still packed
// 6 values a step), writing only those rows of C; kernTail[rows] is the one for rows (kernel_amd64.s). They run a
// 2-row tile in about a third of the 6-row kernel's time.
//
//go:noescape
func kern1x16(kc int, a, b, c *float32, ldc int, add int)

//go:noescape
func kern2x16(kc int, a, b, c *float32, ldc int, add int)

//go:noescape
func kern3x16(kc int, a, b, c *float32, ldc int, add int)

var kernTail = [...]func(kc int, a, b, c *float32, ldc int, add int){1: kern1x16, 2: kern2x16, 3: kern3x16}

// hasF16C reports whether VCVTPH2PS converts float16 (CPUID.1:ECX bit 29).
var hasF16C = hasAsm && cpuid1ecx()&(1<<29) != 0

func cpuid1ecx() uint32

// The packing routines (pack_amd64.s) fill one micro-panel from a view whose lanes (ls) or steps (ss) are
// contiguous, widening bf16 (bits<<16) and f16 (F16C) to float32. See pack.
//
//go:noescape
func packT16F32(d *float32, src unsafe.Pointer, ls, steps int)

//go:noescape
func packT16BF16(d *float32, src unsafe.Pointer, ls, steps int)

//go:noescape
func packT16F16(d *float32, src unsafe.Pointer, ls, steps int)

//go:noescape
func packT6F32(d *float32, src unsafe.Pointer, ls, steps int)

//go:noescape
func packT6BF16(d *float32, src unsafe.Pointer, ls, steps int)

//go:noescape
func packT6F16(d *float32, src unsafe.Pointer, ls, steps int)

//go:noescape
func packL16F32(d *float32, src unsafe.Pointer, ss, steps, panels, ps int)

//go:noescape
func packL16BF16(d *float32, src unsafe.Pointer, ss, steps, panels, ps int)

//go:noescape
func packL16F16(d *float32, src unsafe.Pointer, ss, steps, panels, ps int)

//go:noescape
func packL6F32(d *float32, src unsafe.Pointer, ss, steps, panels, ps int)

// viewPointer returns the address of v's value at o after checking that v holds the value at last (≥ o).
func viewPointer(v View, o, last int) (unsafe.Pointer, int) {
	if v.Kind == gemv.F32 {
		_ = v.F32[last]
		return unsafe.Pointer(&v.F32[o]), 4
	}
	_ = v.Bits[last]
	return unsafe.Pointer(&v.Bits[o]), 2
}

// packLanesAsm packs the full panels of a block whose lanes are contiguous (see pack), returning how many lanes it
// packed.
func packLanesAsm(dst []float32, v View, o, lanes, steps, w, ss, ps int) int {
	panels := lanes / w
	if panels == 0 || v.Kind == gemv.F16 && !hasF16C || w == mr && v.Kind != gemv.F32 {
		return 0
	}
	src, _ := viewPointer(v, o, o+(steps-1)*ss+panels*w-1)
	d := &dst[:(panels-1)*ps+steps*w][0]
	switch {
	case w == mr:
		packL6F32(d, src, ss, steps, panels, ps)
	case v.Kind == gemv.F32:
		packL16F32(d, src, ss, steps, panels, ps)
	case v.Kind == gemv.BF16:
		packL16BF16(d, src, ss, steps, panels, ps)
	default:
		packL16F16(d, src, ss, steps, panels, ps)
	}
	return panels * w
}

// packStepsAsm packs the first steps&^7 steps of a full panel of w lanes whose steps are contiguous (see packSteps),
// returning how many it packed.
func packStepsAsm(d []float32, v View, o, w, ls, steps int) int {
	s8 := steps &^ 7
	if s8 == 0 || v.Kind == gemv.F16 && !hasF16C {
		return 0
	}
	src, _ := viewPointer(v, o, o+(w-1)*ls+s8-1)
	dp := &d[:w*s8][0]
	switch {
	case w == nr && v.Kind == gemv.F32:
		packT16F32(dp, src, ls, s8)
	case w == nr && v.Kind == gemv.BF16:
		packT16BF16(dp, src, ls, s8)
	case w == nr:
		packT16F16(dp, src, ls, s8)
	case w == mr && v.Kind == gemv.F32:
		packT6F32(dp, src, ls, s8)
	case w == mr && v.Kind == gemv.BF16:
		packT6BF16(dp, src, ls, s8)
	case w == mr:
		packT6F16(dp, src, ls, s8)
	default:
		return 0
	}
	return s8
}
