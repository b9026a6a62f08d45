package gemm

// kernGo is the plain-Go micro-kernel, the assembly kernel's stand-in on other CPUs and in tests:
// C[i*ldc + j] = (add ? C[i*ldc + j] : 0) + Σ_p a[p*mr + i]·b[p*nr + j] for i < mr, j < nr.
func kernGo(kc int, a, b, c []float32, ldc int, add bool) {
	var acc [mr][nr]float32
	a, b = a[:kc*mr], b[:kc*nr]
	for p := range kc {
		bp := (*[nr]float32)(b[p*nr:])
		ap := (*[mr]float32)(a[p*mr:])
		for i := range mr {
			ai := ap[i]
			r := &acc[i]
			for j := range nr {
				r[j] += ai * bp[j]
			}
		}
	}
	for i := range mr {
		row := (*[nr]float32)(c[i*ldc:])
		if add {
			for j := range nr {
				row[j] += acc[i][j]
			}
		} else {
			*row = acc[i]
		}
	}
}
