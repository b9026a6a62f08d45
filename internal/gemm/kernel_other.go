//go:build !amd64 || purego

package gemm

// hasAsm is false where there is no assembly micro-kernel: every product runs kernGo.
const hasAsm = false

func kern6x16(kc int, a, b, c *float32, ldc int, add int) {
	panic("gemm: no assembly kernel in this build")
}

func kern6x16r(kc int, a *float32, lda int, b, c *float32, ldc int, add int) {
	panic("gemm: no assembly kernel in this build")
}

// kernTail is empty: every partial micro-panel goes through the edge tile.
var kernTail [0]func(kc int, a, b, c *float32, ldc int, add int)

func packLanesAsm(dst []float32, v View, o, lanes, steps, w, ss, ps int) int { return 0 }

func packStepsAsm(d []float32, v View, o, w, ls, steps int) int { return 0 }
