package gemm

// kernGo is the plain-Go micro-kernel, the assembly kernel's stand-in on other CPUs and in tests:
// C[i*ldc + j] = (add ? C[i*ldc + j] : 0) + Σ_p a[p*mr + i]·b[p*nr + j] for i < mr, j < nr.
// It sweeps the tile four columns at a time, with the 6×4 sums in local variables (registers where the target has
// enough of them).
func kernGo(kc int, a, b, c []float32, ldc int, add bool) {
	a, b = a[:kc*mr], b[:kc*nr]
	_ = c[(mr-1)*ldc+nr-1]
	for j := 0; j < nr; j += 4 {
		var c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23 float32
		var c30, c31, c32, c33, c40, c41, c42, c43, c50, c51, c52, c53 float32
		for p := range kc {
			bp := b[p*nr+j : p*nr+j+4 : p*nr+j+4]
			ap := a[p*mr : p*mr+mr : p*mr+mr]
			b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
			x := ap[0]
			c00, c01, c02, c03 = c00+x*b0, c01+x*b1, c02+x*b2, c03+x*b3
			x = ap[1]
			c10, c11, c12, c13 = c10+x*b0, c11+x*b1, c12+x*b2, c13+x*b3
			x = ap[2]
			c20, c21, c22, c23 = c20+x*b0, c21+x*b1, c22+x*b2, c23+x*b3
			x = ap[3]
			c30, c31, c32, c33 = c30+x*b0, c31+x*b1, c32+x*b2, c33+x*b3
			x = ap[4]
			c40, c41, c42, c43 = c40+x*b0, c41+x*b1, c42+x*b2, c43+x*b3
			x = ap[5]
			c50, c51, c52, c53 = c50+x*b0, c51+x*b1, c52+x*b2, c53+x*b3
		}
		sums := [mr][4]float32{{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},
			{c30, c31, c32, c33}, {c40, c41, c42, c43}, {c50, c51, c52, c53}}
		for i := range mr {
			row := c[i*ldc+j : i*ldc+j+4]
			if add {
				row[0], row[1], row[2], row[3] = row[0]+sums[i][0], row[1]+sums[i][1], row[2]+sums[i][2], row[3]+sums[i][3]
			} else {
				row[0], row[1], row[2], row[3] = sums[i][0], sums[i][1], sums[i][2], sums[i][3]
			}
		}
	}
}
