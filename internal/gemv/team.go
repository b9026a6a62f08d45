package gemv

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// A team runs one product's row chunks on the calling goroutine and on helper goroutines that keep spinning for a
// while after each product. Decoding runs some sixty products per token, microseconds apart; a helper that was
// started per product (or parked between them) reaches an idle core only 60-200 µs later on this kind of VM, so
// the caller did most of each product alone. A spinning helper picks the next product up within a microsecond.
// Helpers park after teamSpin without a product, so an idle program does not burn a core.

// teamSpin is how long a helper spins for the next product before it parks.
const teamSpin = 200 * time.Microsecond

type teamJob struct {
	fn         func(lo, hi int)
	n, per     int
	chunks     int64
	next, done atomic.Int64
	_          [64]byte // keep the counters off the caller's other data
}

// run takes chunks until none is left.
func (j *teamJob) run() {
	for {
		c := j.next.Add(1) - 1
		if c >= j.chunks {
			return
		}
		lo := int(c) * j.per
		j.fn(lo, min(lo+j.per, j.n))
		j.done.Add(1)
	}
}

var team struct {
	once   sync.Once
	mu     sync.Mutex // one product at a time; a second caller falls back to goroutines
	seq    atomic.Uint64
	_      [64]byte
	job    atomic.Pointer[teamJob]
	parked atomic.Int32
	wake   chan struct{}
}

func startTeam(helpers int) {
	team.wake = make(chan struct{}, helpers)
	for range helpers {
		go teamHelper()
	}
}

func teamHelper() {
	seen := team.seq.Load()
	for {
		deadline := time.Now().Add(teamSpin)
		for spins := 0; team.seq.Load() == seen; spins++ {
			if spins&255 == 255 && time.Now().After(deadline) {
				team.parked.Add(1)
				if team.seq.Load() == seen {
					<-team.wake
				}
				team.parked.Add(-1)
				deadline = time.Now().Add(teamSpin)
			}
		}
		seen = team.seq.Load()
		if j := team.job.Load(); j != nil {
			j.run()
		}
	}
}

// parallelRows runs fn over [0, n) in chunks of per rows on the caller and the team's helpers; ok is false (and
// nothing ran) when another product holds the team.
func parallelRows(n, per int, fn func(lo, hi int)) (ok bool) {
	workers := runtime.GOMAXPROCS(0)
	team.once.Do(func() { startTeam(workers - 1) })
	if cap(team.wake) != workers-1 || !team.mu.TryLock() {
		return false
	}
	defer team.mu.Unlock()
	j := &teamJob{fn: fn, n: n, per: per, chunks: int64((n + per - 1) / per)}
	team.job.Store(j)
	team.seq.Add(1)
	if team.parked.Load() > 0 {
		for range workers - 1 {
			select {
			case team.wake <- struct{}{}:
			default:
			}
		}
	}
	j.run()
	for j.done.Load() < j.chunks {
	}
	return true
}
