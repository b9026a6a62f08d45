package gemm

// The product is blocked as in BLIS and GotoBLAS. For each block of nc columns of B and kc steps of k, B is packed
// into micro-panels of nr columns (kc×nr values, consecutive in k), then for each block of mc rows A is packed into
// micro-panels of mr rows, and the micro-kernel multiplies each pair of micro-panels into an mr×nr tile of C, adding
// to C from the second k block on. Packing widens half-precision values to float32, zero-pads partial panels and
// makes every operand layout the same to the kernel; a row-major float32 A in a product at most directMaxN wide is
// read in place instead. Edge tiles go through a small buffer. Mul splits C into rectangles, one per worker of the
// spinning team (internal/team), each run as MulSerial does.

import (
	"sync"
	"unsafe"

	"github.com/saddle-ml/saddle/internal/gemv"
	"github.com/saddle-ml/saddle/internal/team"
)

// The micro-tile: the kernel computes an mr×nr block of C from an mr-row micro-panel of packed A and an nr-column
// micro-panel of packed B.
const mr, nr = 6, 16

// Block sizes, in values (BLIS's KC, MC, NC): a packed kc×nr panel of B stays in L1 while the kernel sweeps an
// mc×kc packed block of A held in L2; the kc×nc packed panel of B lives in L3, and so, for the few hundred rows a
// training step has, does the m×nc block of C that every kc block adds to. BLIS's NC for Zen 2 is 4080; 1024 ran
// faster on the bench machine (2 cores sharing a 16 MB L3 with other tenants; 1B-model products of 512 rows, in
// alternation within one process): on both cores 512×8192×2048 +5-7 %, 512×32768×2048 +5-10 %, 2048×8192×2048 and
// the k = 8192 products ±1 %; on one core +1-3.5 %, 256 rows +10 %. (512 was as good with 512 rows, worse with
// 2048.) Variables so tests can shrink them.
var (
	blockK = 256
	blockM = 144  // a multiple of mr
	blockN = 1024 // a multiple of nr
)

// forceGo makes every product use the plain-Go kernel (tests run both kernels).
var forceGo = false

// parallelMin is the work (m·n·k multiply-adds) below which Mul runs on the calling goroutine. Measured on 2 cores
// with the rectangles on the spinning team (BenchmarkSmall, square products back to back, GFLOP/s, serial against
// both cores): 48³ 78/79, 64³ 74/101, 96³ 87/139, 128³ 84/148; and the rank-8 adapters' products of W2 (1024 rows,
// 4 M multiply-adds, BenchmarkAdapterShapes) ran 1.5-1.9 times as fast on both cores. When the team's helper is
// parked the caller takes every rectangle itself, so a small product costs at worst about its serial time. (With a
// goroutine started per product, which reached the other core 60-200 µs late on this VM, the bound was 8 M.)
var parallelMin = 1 << 18

// workspace holds one goroutine's packing buffers; pooled so that a product allocates nothing in steady state.
type workspace struct {
	a, b, edge []float32
	tile       [mr * nr]float32
}

var pool = sync.Pool{New: func() any { return new(workspace) }}

// grow returns s resliced to n values if it can hold them, else a new slice that starts on a 64-byte boundary
// (so that a packed step of B is one cache line).
func grow(s []float32, n int) []float32 {
	if cap(s) >= n {
		return s[:n]
	}
	s = make([]float32, n+15)
	skip := (64 - int(uintptr(unsafe.Pointer(&s[0]))%64)) % 64 / 4
	return s[skip : skip+n : skip+n]
}

// panelStride is the distance between packed micro-panels of w lanes and the given steps: one cache line more than
// their size, so that the panels' starts fall in different cache sets (without it, a pack that writes to every
// panel in turn keeps evicting its own lines: the panels of B are 16 KB apart for kc = 256, a multiple of the L1's
// 4 KB set span).
func panelStride(steps, w int) int { return steps*w + panelPad }

var panelPad = 16

// blockSize splits n into the fewest blocks of at most block values and returns their (balanced) size, rounded up to
// a multiple of unit.
func blockSize(n, block, unit int) int {
	q := (n + block - 1) / block
	s := (n + q - 1) / q
	return (s + unit - 1) / unit * unit
}

// second is MulPair's second product, whose k steps follow the first's (k = 0: none).
type second struct {
	k    int
	a, b View
}

func mulSerial(c []float32, ldc, m, n, k int, a, b View, x second, accumulate bool) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		if !accumulate {
			for i := range m {
				clear(c[i*ldc : i*ldc+n])
			}
		}
		return
	}
	ws := pool.Get().(*workspace)
	ws.mul(c, ldc, m, n, k, a, b, x, accumulate)
	pool.Put(ws)
}

// mul is the blocked product of an [m, k] by a [k, n] view into C (m, n, k > 0), plus x's product, whose steps are
// packed after the last block's.
func (ws *workspace) mul(c []float32, ldc, m, n, k int, a, b View, x second, accumulate bool) {
	kc := blockSize(k, blockK, 1)
	nc := blockSize(n, blockN, nr)
	mc := blockSize(m, blockM, mr)
	kx := x.k
	asm := hasAsm && !forceGo
	// With few columns, packing A costs more than it saves: each value of A is used for n/nr micro-tiles only.
	direct := asm && a.Kind == gemv.F32 && a.CS == 1 && n <= directMaxN && kx == 0
	// With more than one block of columns, A's packed blocks are kept for the next ones when all of A fits in
	// keepAMax (the panels of every block of rows, for every block of steps, one after another).
	rowPanels := (m + mr - 1) / mr
	kept := rowPanels * panelStride(kc+kx, mr) * ((k + kc - 1) / kc)
	keep := !direct && n > nc && kept <= keepAMax
	switch {
	case keep:
		ws.a = grow(ws.a, kept)
	case !direct:
		ws.a = grow(ws.a, mc/mr*panelStride(kc+kx, mr))
	}
	ws.b = grow(ws.b, (nc/nr)*panelStride(kc+kx, nr))
	bp := ws.b
	for jc := 0; jc < n; jc += nc {
		nb := min(nc, n-jc)
		aOff := 0 // where the packed A of this block of steps starts, when kept
		for pc := 0; pc < k; pc += kc {
			kb := min(kc, k-pc)
			kt := kb // steps in this block: x's join the last
			if pc+kb == k {
				kt += kx
			}
			psA, psB := panelStride(kt, mr), panelStride(kt, nr)
			pack(bp, b, jc, pc, nb, kb, nr, b.CS, b.RS, psB, asm)
			if kt > kb {
				pack(bp[kb*nr:], x.b, jc, 0, nb, kx, nr, x.b.CS, x.b.RS, psB, asm)
			}
			add := accumulate || pc > 0
			if direct {
				ws.macroDirect(c[jc:], ldc, a, pc, m, nb, kb, add, bp)
				continue
			}
			for ic := 0; ic < m; ic += mc {
				mb := min(mc, m-ic)
				ap := ws.a
				if keep {
					ap = ws.a[aOff+ic/mr*psA:]
				}
				if !keep || jc == 0 {
					pack(ap, a, ic, pc, mb, kb, mr, a.RS, a.CS, psA, asm)
					if kt > kb {
						pack(ap[kb*mr:], x.a, ic, 0, mb, kx, mr, x.a.RS, x.a.CS, psA, asm)
					}
				}
				ws.macro(c[ic*ldc+jc:], ldc, mb, nb, kt, add, asm, ap, bp)
			}
			aOff += rowPanels * psA
		}
	}
}

// keepAMax is the most values of packed A a product keeps for its later blocks of columns (the packed A of a
// 512-token step's products with k = 2048 is 1 M values); past it A is packed again for each block. Packing A once
// instead of once per block of columns took the 1B up-projection (512×8192×2048, both cores, in alternation) from
// +4.5 % to +9.8 % over NC = 4080, and a 256-row one from +5.6 % to +10 %.
var keepAMax = 4 << 20

// macro multiplies the packed mb×kb block of A in apack by the packed kb×nb panel of B into C (row stride ldc).
func (ws *workspace) macro(c []float32, ldc, mb, nb, kb int, add, asm bool, apack, bpack []float32) {
	addInt := 0
	if add {
		addInt = 1
	}
	psA, psB := panelStride(kb, mr), panelStride(kb, nr)
	for jr := 0; jr < nb; jr += nr {
		bp := bpack[jr/nr*psB : jr/nr*psB+nr*kb]
		nv := min(nr, nb-jr)
		for ir := 0; ir < mb; ir += mr {
			ap := apack[ir/mr*psA : ir/mr*psA+mr*kb]
			mv := min(mr, mb-ir)
			co := ir*ldc + jr
			if mv == mr && nv == nr {
				if asm {
					_ = c[co+(mr-1)*ldc+nr-1]
					kern6x16(kb, &ap[0], &bp[0], &c[co], ldc, addInt)
				} else {
					kernGo(kb, ap, bp, c[co:], ldc, add)
				}
				continue
			}
			if asm && nv == nr && mv < len(kernTail) {
				_ = c[co+(mv-1)*ldc+nr-1]
				kernTail[mv](kb, &ap[0], &bp[0], &c[co], ldc, addInt)
				continue
			}
			t := ws.tile[:]
			if asm {
				kern6x16(kb, &ap[0], &bp[0], &t[0], nr, 0)
			} else {
				kernGo(kb, ap, bp, t, nr, false)
			}
			ws.flush(c, co, ldc, mv, nv, add)
		}
	}
}

// flush copies (or adds) the valid mv×nv corner of the edge tile into C at co.
func (ws *workspace) flush(c []float32, co, ldc, mv, nv int, add bool) {
	for i := range mv {
		row, ti := c[co+i*ldc:co+i*ldc+nv], ws.tile[i*nr:i*nr+nv]
		if add {
			for j := range row {
				row[j] += ti[j]
			}
		} else {
			copy(row, ti)
		}
	}
}

// directMaxN is the widest product whose row-major float32 A the kernel reads in place instead of packing. Measured
// (BenchmarkDirect, 512×2048 A, one core): in place 91/96/97/99/99/98 GFLOP/s for n = 16/32/64/96/128/256 against
// 65/80/88/93/94/97 packed; from n = 512 packing wins (96.5 against 95.5, 95.4 against 93.2 at n = 2048).
var directMaxN = 256

// macroDirect multiplies rows 0…m-1, steps pc…pc+kb-1 of a row-major float32 A, read in place, by the packed
// kb×nb panel of B into C (row stride ldc). A last partial micro-panel of A is packed.
func (ws *workspace) macroDirect(c []float32, ldc int, a View, pc, m, nb, kb int, add bool, bpack []float32) {
	addInt := 0
	if add {
		addInt = 1
	}
	psB := panelStride(kb, nr)
	for ir := 0; ir < m; ir += mr {
		mv := min(mr, m-ir)
		ao := a.Off + ir*a.RS + pc
		if mv < mr {
			ws.edge = grow(ws.edge, panelStride(kb, mr))
			pack(ws.edge, a, ir, pc, mv, kb, mr, a.RS, a.CS, panelStride(kb, mr), true)
		} else {
			_ = a.F32[ao+(mr-1)*a.RS+kb-1]
		}
		for jr := 0; jr < nb; jr += nr {
			bp := bpack[jr/nr*psB : jr/nr*psB+nr*kb]
			nv := min(nr, nb-jr)
			co := ir*ldc + jr
			switch {
			case mv == mr && nv == nr:
				_ = c[co+(mr-1)*ldc+nr-1]
				kern6x16r(kb, &a.F32[ao], a.RS, &bp[0], &c[co], ldc, addInt)
				continue
			case mv == mr:
				kern6x16r(kb, &a.F32[ao], a.RS, &bp[0], &ws.tile[0], nr, 0)
			case nv == nr && mv < len(kernTail):
				_ = c[co+(mv-1)*ldc+nr-1]
				kernTail[mv](kb, &ws.edge[0], &bp[0], &c[co], ldc, addInt)
				continue
			default:
				kern6x16(kb, &ws.edge[0], &bp[0], &ws.tile[0], nr, 0)
			}
			ws.flush(c, co, ldc, mv, nv, add)
		}
	}
}

// pack copies a block of v into micro-panels of w lanes: lane l, step p of the block is v's element at
// Off + (l0+l)·ls + (p0+p)·ss, for l < lanes and p < steps. Panel q (lanes qw…qw+w-1) is dst[q·ps:] (ps ≥ steps·w,
// panelStride of the block's steps, or of more when another block's steps follow in the same panels), holding step
// p's w values at p·w (lanes past the block's end are zeros). For A the lanes are rows (ls = RS, ss = CS), for B
// columns (ls = CS, ss = RS). Half-precision values are widened to float32. asm: use the assembly routines where
// the lanes or the steps are contiguous.
func pack(dst []float32, v View, l0, p0, lanes, steps, w, ls, ss, ps int, asm bool) {
	base := v.Off + l0*ls + p0*ss
	if ls == 1 {
		// Lanes contiguous (row-major B, transposed A): read the block row by row, each row across every panel.
		// (A panel at a time would read a short run from each of many rows, far apart: 2 to 4 times slower.)
		full := 0
		if asm {
			full = packLanesAsm(dst, v, base, lanes, steps, w, ss, ps)
		}
		if full < lanes {
			packLanes(dst[full/w*ps:], v, base+full, lanes-full, steps, w, ss, ps)
		}
		return
	}
	for q := 0; q < lanes; q += w {
		d := dst[q/w*ps : q/w*ps+w*steps]
		lv := min(w, lanes-q)
		o := base + q*ls
		switch {
		case ss == 1: // steps contiguous (row-major A, transposed B)
			s0 := 0
			if asm && lv == w {
				s0 = packStepsAsm(d, v, o, w, ls, steps)
			}
			packSteps(d, v, o, s0, lv, steps, w, ls)
			if lv < w {
				for p := range steps {
					clear(d[p*w+lv : p*w+w])
				}
			}
		default:
			for p := range steps {
				dp := d[p*w : p*w+w]
				for l := range lv {
					dp[l] = v.elem(o + l*ls + p*ss)
				}
				clear(dp[lv:])
			}
		}
	}
}

// packLanes is pack for lanes contiguous in v (ls = 1), from index o.
func packLanes(dst []float32, v View, o, lanes, steps, w, ss, ps int) {
	for p := range steps {
		row := o + p*ss
		for q := 0; q < lanes; q += w {
			lv := min(w, lanes-q)
			dp := dst[q/w*ps+p*w : q/w*ps+p*w+w]
			switch {
			case v.Kind == gemv.F32 && lv == mr && w == mr:
				x := v.F32[row+q : row+q+mr] // element copies: an array copy calls memmove
				dp[0], dp[1], dp[2], dp[3], dp[4], dp[5] = x[0], x[1], x[2], x[3], x[4], x[5]
			case v.Kind == gemv.F32:
				copy(dp, v.F32[row+q:row+q+lv])
			case v.Kind == gemv.BF16:
				for l, x := range v.Bits[row+q : row+q+lv] {
					dp[l] = bf16(x)
				}
			default:
				for l, x := range v.Bits[row+q : row+q+lv] {
					dp[l] = gemv.F16ToF32(x)
				}
			}
			clear(dp[lv:])
		}
	}
}

// packSteps fills steps p0…steps-1 of lanes 0…lanes-1 of a panel of w lanes whose steps are contiguous in v (ss = 1):
// d[p·w + l] = v's value at o + l·ls + p.
func packSteps(d []float32, v View, o, p0, lanes, steps, w, ls int) {
	for l := range lanes {
		src := o + l*ls
		switch v.Kind {
		case gemv.F32:
			for p, x := range v.F32[src+p0 : src+steps] {
				d[(p0+p)*w+l] = x
			}
		case gemv.BF16:
			for p, x := range v.Bits[src+p0 : src+steps] {
				d[(p0+p)*w+l] = bf16(x)
			}
		default:
			for p, x := range v.Bits[src+p0 : src+steps] {
				d[(p0+p)*w+l] = gemv.F16ToF32(x)
			}
		}
	}
}

// elem is the value at index o of v's storage, as float32.
func (v View) elem(o int) float32 {
	switch v.Kind {
	case gemv.BF16:
		return bf16(v.Bits[o])
	case gemv.F16:
		return gemv.F16ToF32(v.Bits[o])
	}
	return v.F32[o]
}

// mulParallel runs the product on up to team.Workers() workers, each a rectangle of C with its own packing.
func mulParallel(c []float32, ldc, m, n, k int, a, b View, x second, accumulate bool) {
	procs := team.Workers()
	if procs < 2 || m*n*(k+x.k) < parallelMin || k == 0 {
		mulSerial(c, ldc, m, n, k, a, b, x, accumulate)
		return
	}
	// A pm×pn grid of rectangles: every goroutine packs its rows of A and its columns of B, so choose the grid that
	// packs the least (m·pn + n·pm), with at least one micro-tile per rectangle.
	tm, tn := (m+mr-1)/mr, (n+nr-1)/nr
	pm, pn, best := 1, 1, -1
	for d := 1; d <= procs; d++ {
		if procs%d != 0 || d > tm || procs/d > tn {
			continue
		}
		if cost := m*(procs/d) + n*d; best < 0 || cost < best {
			pm, pn, best = d, procs/d, cost
		}
	}
	if best < 0 { // too few tiles for every goroutine: split the longer side as far as it goes
		if tm >= tn {
			pm = min(procs, tm)
		} else {
			pn = min(procs, tn)
		}
	}
	if pm*pn == 1 {
		mulSerial(c, ldc, m, n, k, a, b, x, accumulate)
		return
	}
	xk, xa, xb := x.k, x.a, x.b // captured one by one: copies (x as a whole is too big, and would move to the heap)
	team.For(pm*pn, 1, procs, func(_, r, _ int) {
		bi, bj := r/pn, r%pn
		i0, i1 := bi*tm/pm*mr, min((bi+1)*tm/pm*mr, m)
		j0, j1 := bj*tn/pn*nr, min((bj+1)*tn/pn*nr, n)
		sa, sb := a, b
		sa.Off += i0 * a.RS
		sb.Off += j0 * b.CS
		sx := second{k: xk, a: xa, b: xb}
		sx.a.Off += i0 * xa.RS
		sx.b.Off += j0 * xb.CS
		mulSerial(c[i0*ldc+j0:], ldc, i1-i0, j1-j0, k, sa, sb, sx, accumulate)
	})
}
