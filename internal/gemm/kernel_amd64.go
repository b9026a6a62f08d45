//go:build amd64 && !purego

package gemm

import "golang.org/x/sys/cpu"

// hasAsm reports whether this CPU runs the assembly micro-kernel (AVX2 and FMA3, with the OS saving YMM state).
var hasAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// kern6x16 is the AVX2/FMA micro-kernel (kernel_amd64.s): C[0:6, 0:16] (row stride ldc) = (add ≠ 0 ? C : 0) +
// Σ_p a[6p:6p+6] ⊗ b[16p:16p+16], for packed a (kc·6 values) and b (kc·16 values).
//
//go:noescape
func kern6x16(kc int, a, b, c *float32, ldc int, add int)
