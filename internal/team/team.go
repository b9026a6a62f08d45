// Package team runs parallel loops on the calling goroutine and on helper goroutines that keep spinning for a
// while after each loop. The CPU decoder runs some sixty products per token and the CPU trainer hundreds of
// products and elementwise passes per step, microseconds to milliseconds apart. A goroutine started per loop (or
// parked between loops) reaches an idle core only 60-200 µs later on the kind of VM measured, so the caller did much
// of each loop alone; a spinning helper picks the next loop up within a microsecond. Helpers park after Spin without
// a loop, so an idle program does not burn a core.
package team

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Spin is how long a helper spins for the next loop before it parks.
const Spin = 200 * time.Microsecond

// Off makes For start goroutines per loop instead of using the team (tests and benchmarks compare the two).
var Off = false

type job struct {
	fn         func(w, lo, hi int)
	seq        uint64 // the team's loop number
	n, per     int
	workers    int // the most workers that may take chunks, the caller included
	chunks     int64
	next, done atomic.Int64
	ids        atomic.Int64 // worker numbers handed to the helpers that joined
	_          [64]byte     // keep the counters off the caller's other data
}

// run takes chunks until none is left, as worker w.
func (j *job) run(w int) {
	for {
		c := j.next.Add(1) - 1
		if c >= j.chunks {
			return
		}
		lo := int(c) * j.per
		j.fn(w, lo, min(lo+j.per, j.n))
		j.done.Add(1)
	}
}

var team struct {
	once    sync.Once
	helpers int
	mu      sync.Mutex // one loop at a time; a second caller falls back to goroutines
	seq     atomic.Uint64
	_       [64]byte
	job     atomic.Pointer[job]
	parked  atomic.Int32
	wake    chan struct{}
}

func start() {
	team.helpers = runtime.GOMAXPROCS(0) - 1
	team.wake = make(chan struct{}, team.helpers)
	for range team.helpers {
		go helper()
	}
}

func helper() {
	seen := team.seq.Load()
	var last uint64 // a helper runs each loop once at most: it may see a newer loop's signal after running it
	for {
		deadline := time.Now().Add(Spin)
		for spins := 0; team.seq.Load() == seen; spins++ {
			if spins&255 == 255 && time.Now().After(deadline) {
				team.parked.Add(1)
				if team.seq.Load() == seen {
					<-team.wake
				}
				team.parked.Add(-1)
				deadline = time.Now().Add(Spin)
			}
		}
		seen = team.seq.Load()
		if j := team.job.Load(); j != nil && j.seq != last {
			last = j.seq
			if w := int(j.ids.Add(1)); w < j.workers {
				j.run(w)
			}
		}
	}
}

// Workers is how many workers For may run fn on: GOMAXPROCS (at least 1).
func Workers() int { return max(1, runtime.GOMAXPROCS(0)) }

// For calls fn(w, lo, hi) for the chunks [lo, hi) of per values that cover [0, n), on the calling goroutine and up
// to min(workers, Workers())−1 others, and returns when every chunk is done. Chunks go to whichever worker is free
// first; w is the worker's number in [0, workers), the caller's 0, and no two workers of one For share a number, so
// fn may use per-worker scratch indexed by w. The team's helpers take the chunks when they are free; when another
// For holds them (a concurrent caller, or a For inside fn), goroutines started for this call do. Nothing keeps fn
// once For returns.
func For(n, per, workers int, fn func(w, lo, hi int)) {
	if n <= 0 {
		return
	}
	per = max(per, 1)
	j := &job{fn: fn, n: n, per: per, chunks: int64((n + per - 1) / per)}
	workers = min(workers, Workers(), int(j.chunks))
	j.workers = workers
	if workers <= 1 {
		j.run(0)
		return
	}
	if !Off {
		team.once.Do(start)
		if team.helpers == Workers()-1 && team.mu.TryLock() {
			j.seq = team.seq.Load() + 1 // only the holder of mu changes seq
			team.job.Store(j)
			team.seq.Store(j.seq)
			if team.parked.Load() > 0 {
				for range team.helpers {
					select {
					case team.wake <- struct{}{}:
					default:
					}
				}
			}
			j.run(0)
			for j.done.Load() < j.chunks {
			}
			team.job.Store(nil) // fn's closure (and what it holds) is not kept alive by the team
			team.mu.Unlock()
			return
		}
	}
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Go(func() { j.run(w) })
	}
	j.run(0)
	wg.Wait()
}
