package team

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestForCoversOnce: every index of [0, n) is visited exactly once, by chunks of per, with worker numbers in range
// and never two at once on one number; for the team and for goroutines, for several callers at once (one holds
// the team, the others fall back), and for a For nested in another's fn.
func TestForCoversOnce(t *testing.T) {
	defer func(v bool) { Off = v }(Off)
	check := func(t *testing.T, n, per, workers int, nested bool) {
		visits := make([]atomic.Int32, n)
		busy := make([]atomic.Int32, Workers())
		For(n, per, workers, func(w, lo, hi int) {
			if lim := max(1, min(workers, Workers())); w < 0 || w >= lim {
				t.Errorf("worker %d out of [0, %d)", w, lim)
				return
			}
			if busy[w].Add(1) != 1 {
				t.Errorf("worker %d runs two chunks at once", w)
			}
			if lo%max(per, 1) != 0 || hi > n || hi-lo > max(per, 1) || hi <= lo {
				t.Errorf("chunk [%d, %d) of %d by %d", lo, hi, n, per)
			}
			for i := lo; i < hi; i++ {
				visits[i].Add(1)
			}
			if nested {
				inner := make([]atomic.Int32, 37)
				For(37, 5, Workers(), func(_, lo, hi int) {
					for i := lo; i < hi; i++ {
						inner[i].Add(1)
					}
				})
				for i := range inner {
					if inner[i].Load() != 1 {
						t.Errorf("nested For visited %d %d times", i, inner[i].Load())
					}
				}
			}
			busy[w].Add(-1)
		})
		for i := range visits {
			if v := visits[i].Load(); v != 1 {
				t.Fatalf("n=%d per=%d: index %d visited %d times", n, per, i, v)
			}
		}
	}
	for _, off := range []bool{false, true} {
		Off = off
		for _, c := range [][2]int{{1, 1}, {0, 3}, {10, 0}, {10, 3}, {1000, 7}, {64, 64}, {65, 64}} {
			for _, workers := range []int{0, 1, 2, Workers(), 64} {
				check(t, c[0], c[1], workers, false)
			}
		}
		check(t, 100, 9, Workers(), true)
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				for range 50 {
					check(t, 257, 4, Workers(), false)
				}
			})
		}
		wg.Wait()
	}
}

// TestForKeepsNothing: once For returns, nothing in the team keeps fn's closure (and what it holds) alive.
func TestForKeepsNothing(t *testing.T) {
	defer func(v bool) { Off = v }(Off)
	Off = false
	collected := make(chan struct{})
	func() {
		big := make([]float32, 1<<20)
		runtime.AddCleanup(&big[0], func(struct{}) { close(collected) }, struct{}{})
		For(len(big), 1<<16, Workers(), func(_, lo, hi int) { clear(big[lo:hi]) })
	}()
	for range 20 {
		runtime.GC()
		select {
		case <-collected:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatal("the buffer a finished For's fn held was never collected")
}
