package gemm_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/backend"
	"github.com/saddle-ml/saddle/internal/gemm"
	"github.com/saddle-ml/saddle/internal/gemv"
)

// benchShape is a product the CPU trainer runs: C[m, n] = A[m, k]·B[k, n], A given as [k, m] when aT (dYᵀ·X),
// B as a weight [n, k] (Weight(W).T()) when bT, else [k, n].
type benchShape struct {
	name    string
	m, n, k int
	aT, bT  bool
	half    bool // also with a bf16 B
	serial  bool // MulSerial (the caller runs several at once)
}

var benchShapes = []benchShape{
	{name: "sq1024", m: 1024, n: 1024, k: 1024},
	// Forward Y = X·Wᵀ of a 512-token batch through weights [out, in].
	{name: "fwd_in2048_out2048", m: 512, n: 2048, k: 2048, bT: true, half: true},
	{name: "fwd_in2048_out512", m: 512, n: 512, k: 2048, bT: true, half: true},
	{name: "fwd_in2048_out8192", m: 512, n: 8192, k: 2048, bT: true, half: true},
	{name: "fwd_in8192_out2048", m: 512, n: 2048, k: 8192, bT: true, half: true},
	// Input gradient dX = dY·W.
	{name: "dx_in2048_out2048", m: 512, n: 2048, k: 2048, half: true},
	{name: "dx_in2048_out512", m: 512, n: 2048, k: 512, half: true},
	{name: "dx_in2048_out8192", m: 512, n: 2048, k: 8192, half: true},
	{name: "dx_in8192_out2048", m: 512, n: 8192, k: 2048, half: true},
	// A small model, 1024 tokens.
	{name: "fwd1024_in512_out512", m: 1024, n: 512, k: 512, bT: true, half: true},
	{name: "fwd1024_in512_out1408", m: 1024, n: 1408, k: 512, bT: true, half: true},
	{name: "fwd1024_in1408_out512", m: 1024, n: 512, k: 1408, bT: true, half: true},
	{name: "fwd1024_in512_out32000", m: 1024, n: 32000, k: 512, bT: true, half: true},
	// LoRA rank 16 on a 2048-wide layer: X·Aᵀ, H·Bᵀ, dB = dYᵀ·H, dA = dHᵀ·X.
	{name: "lora_xa", m: 512, n: 16, k: 2048, bT: true},
	{name: "lora_hb", m: 512, n: 2048, k: 16, bT: true},
	{name: "lora_db", m: 2048, n: 16, k: 512, aT: true},
	{name: "lora_da", m: 16, n: 2048, k: 512, aT: true},
	// One attention head (MulSerial: the caller runs the heads in parallel): Q·Kᵀ and P·V.
	{name: "attn_qk", m: 512, n: 512, k: 64, bT: true, serial: true},
	{name: "attn_pv", m: 512, n: 64, k: 512, serial: true},
}

func randF32(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

func toBF16(x []float32) []uint16 {
	b := make([]uint16, len(x))
	for i, v := range x {
		b[i] = uint16(math.Float32bits(v) >> 16) // truncated: any bf16 will do
	}
	return b
}

// BenchmarkMul measures every shape with saddle's Mul (MulSerial where the caller parallelizes) and, right after it,
// the same product in the Go backend (a DotGeneral graph, what the trainer runs today), on 1 and 2 goroutines.
// GFLOP/s are reported; run it a few times (and interleave other peers between runs) on a shared machine.
func BenchmarkMul(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, s := range benchShapes {
		aData, bData := randF32(rng, s.m*s.k), randF32(rng, s.k*s.n)
		kinds := []gemv.Kind{gemv.F32}
		if s.half {
			kinds = append(kinds, gemv.BF16)
		}
		for _, kind := range kinds {
			for _, procs := range []int{1, 2} {
				name := fmt.Sprintf("%s/%v/p%d/", s.name, kind, procs)
				b.Run(name+"saddle", func(b *testing.B) { benchSaddle(b, s, kind, procs, aData, bData) })
				b.Run(name+"gomlx", func(b *testing.B) { benchGoBackend(b, s, kind, procs, aData, bData) })
			}
		}
	}
}

func benchSaddle(b *testing.B, s benchShape, kind gemv.Kind, procs int, aData, bData []float32) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	av := gemm.RowMajor(aData, s.k)
	if s.aT {
		av = gemm.RowMajor(aData, s.m).T()
	}
	w := &gemv.Matrix{Kind: kind, F32: bData, Rows: s.k, Cols: s.n}
	if s.bT {
		w.Rows, w.Cols = s.n, s.k
	}
	if kind == gemv.BF16 {
		w.F32, w.Bits = nil, toBF16(bData)
	}
	bv := gemm.Weight(w)
	if s.bT {
		bv = bv.T()
	}
	c := make([]float32, s.m*s.n)
	mul := gemm.Mul
	if s.serial {
		mul = gemm.MulSerial
	}
	mul(c, s.n, s.m, s.n, s.k, av, bv, false) // packing buffers
	for b.Loop() {
		mul(c, s.n, s.m, s.n, s.k, av, bv, false)
	}
	report(b, s)
}

// benchGoBackend runs the product as the trainer does on the Go backend: a DotGeneral (after a conversion to
// float32 for a bf16 weight).
func benchGoBackend(b *testing.B, s benchShape, kind gemv.Kind, procs int, aData, bData []float32) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	exec, err := graph.NewExec(goBackend(b), func(x, y *graph.Node) *graph.Node {
		if kind != gemv.F32 {
			y = graph.ConvertDType(y, dtypes.Float32)
		}
		ax, bx := 1, 0
		if s.aT {
			ax = 0
		}
		if s.bT {
			bx = 1
		}
		return graph.DotGeneral(x, []int{ax}, nil, y, []int{bx}, nil)
	})
	if err != nil {
		b.Fatal(err)
	}
	defer exec.Finalize()
	ad, bd := []int{s.m, s.k}, []int{s.k, s.n}
	if s.aT {
		ad = []int{s.k, s.m}
	}
	if s.bT {
		bd = []int{s.n, s.k}
	}
	x := tensors.FromFlatDataAndDimensions(aData, ad...)
	y := tensors.FromFlatDataAndDimensions(bData, bd...)
	if kind == gemv.BF16 {
		h := make([]bfloat16.BFloat16, len(bData))
		for i, v := range toBF16(bData) {
			h[i] = bfloat16.BFloat16(v)
		}
		y = tensors.FromFlatDataAndDimensions(h, bd...)
	}
	run := func() {
		out, err := exec.Exec(x, y)
		if err != nil {
			b.Fatal(err)
		}
		out[0].MustFinalizeAll()
	}
	run() // compiles the graph
	for b.Loop() {
		run()
	}
	report(b, s)
}

func report(b *testing.B, s benchShape) {
	b.ReportMetric(2*float64(s.m)*float64(s.n)*float64(s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	b.ReportMetric(0, "ns/op")
}

var (
	beOnce sync.Once
	be     compute.Backend
	beErr  error
)

func goBackend(b *testing.B) compute.Backend {
	beOnce.Do(func() { be, _, beErr = backend.New("go") })
	if beErr != nil {
		b.Skip(beErr)
	}
	return be
}
