package main

// What the machine can do, for reading the workloads against: memory bandwidth (-mode stream) and the Go
// backend's f32 matmul rate (-mode matmul).

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"time"

	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/backend"
	"github.com/saddle-ml/saddle/internal/gemm"
)

// benchStream measures this machine's memory bandwidth the way STREAM does, on GOMAXPROCS goroutines over
// -stream-mib of float32 (far beyond the caches): "read" sums an array (what decoding does to the weights: it only
// reads them), "copy" copies it to another (STREAM's Copy; bytes read + written). The best of -steps runs of each,
// as STREAM reports.
func benchStream(o options) (map[string]any, error) {
	n := o.streamMiB << 20 / 4
	if n < 1<<20 {
		return nil, fmt.Errorf("-stream-mib %d: use at least 4", o.streamMiB)
	}
	a, b := make([]float32, n), make([]float32, n)
	for i := range a {
		a[i] = float32(i & 1023)
	}
	workers := runtime.GOMAXPROCS(0)
	parallel := func(f func(lo, hi int)) float64 {
		t0 := time.Now()
		var wg sync.WaitGroup
		per := (n + workers - 1) / workers
		for lo := 0; lo < n; lo += per {
			wg.Go(func() { f(lo, min(lo+per, n)) })
		}
		wg.Wait()
		return time.Since(t0).Seconds()
	}
	sums := make([]float32, workers+1)
	var readBest, copyBest float64
	for range max(o.steps, 3) {
		t := parallel(func(lo, hi int) { sums[lo/((n+workers-1)/workers)] = sumRead(a[lo:hi]) })
		readBest = max(readBest, float64(n*4)/t/1e9)
		t = parallel(func(lo, hi int) { copy(b[lo:hi], a[lo:hi]) })
		copyBest = max(copyBest, float64(2*n*4)/t/1e9)
	}
	return map[string]any{"mode": "stream", "mib": o.streamMiB, "threads": workers,
		"read_gb_s": readBest, "copy_gb_s": copyBest, "check": sums[0]}, nil
}

// benchMatmul measures the f32 matmul rate on a 1024×1024 by 1024×1024 product (the best of -steps runs) of the
// backend's graph and of internal/gemm (the CPU trainer's): with the peer probe's OpenBLAS rate, the machine's f32
// matmul rate against which W2's achieved rate is read.
func benchMatmul(o options) (map[string]any, error) {
	b, cfg, err := backend.New(o.backend)
	if err != nil {
		return nil, err
	}
	const n = 1024
	exec, err := graph.NewExec(b, func(x, y *graph.Node) *graph.Node { return graph.Dot(x, y).Product() })
	if err != nil {
		return nil, err
	}
	defer exec.Finalize()
	data := make([]float32, n*n)
	for i := range data {
		data[i] = float32(i%7) - 3
	}
	x, y := tensors.FromFlatDataAndDimensions(data, n, n), tensors.FromFlatDataAndDimensions(data, n, n)
	best := math.Inf(1)
	for i := range max(o.steps, 3) + 1 {
		t0 := time.Now()
		out, err := exec.Exec(x, y)
		if err != nil {
			return nil, err
		}
		out[0].MustFinalizeAll()
		if i > 0 {
			best = min(best, time.Since(t0).Seconds())
		}
	}
	flops := 2.0 * n * n * n
	return map[string]any{"mode": "matmul", "backend": cfg, "n": n, "gflops": flops / best / 1e9,
		"gemm_gflops": gemmRate(max(o.steps, 3))}, nil
}

// gemmRate is internal/gemm's rate on a 1024² f32 product, the best of reps runs, in GFLOP/s. Training runs call
// it around their timed steps, so that W2's rate can be read against the machine's rate in the same minute (this VM's
// speed drifts by up to 2× within the hour).
func gemmRate(reps int) float64 {
	const n = 1024
	data, c := make([]float32, n*n), make([]float32, n*n)
	for i := range data {
		data[i] = float32(i%7) - 3
	}
	best := math.Inf(1)
	for i := range reps + 1 {
		t0 := time.Now()
		gemm.Mul(c, n, n, n, n, gemm.RowMajor(data, n), gemm.RowMajor(data, n), false)
		if i > 0 {
			best = min(best, time.Since(t0).Seconds())
		}
	}
	return 2.0 * n * n * n / best / 1e9
}
