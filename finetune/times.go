package finetune

import (
	"slices"
	"time"
)

// Times says where a run's wall time went, in seconds, in this invocation (a resumed run counts from its resume).
//
// Compilation is not timed by itself: graphs compile inside their first call. Compile is the first training
// step's extra time over the median of the next ones, plus the first evaluation's over the next ones' median; it
// is 0 for one step or one evaluation, whose time then stays in Train or Eval.
type Times struct {
	Load    float64 `json:"load_s"`    // tokenizer, model and data, before the run (measured by the caller)
	Hash    float64 `json:"hash_s"`    // the base model's identity (near 0 when cached; measured by the caller)
	Setup   float64 `json:"setup_s"`   // adapters, graph building and the base weights' norms, before the first step
	Compile float64 `json:"compile_s"` // see above
	Train   float64 `json:"train_s"`   // optimizer steps with their telemetry and metrics rows, less Compile's part
	Eval    float64 `json:"eval_s"`    // evaluations, less Compile's part
	Save    float64 `json:"save_s"`    // checkpoints and the final adapter
	Total   float64 `json:"total_s"`   // from the start of loading to the end of the run; the parts sum to at most this
}

// stopwatch collects a run's times.
type stopwatch struct {
	began       time.Time // when Run started
	setup, save float64
	steps       []float64 // durations of the first timedCalls training steps of this invocation
	evals       []float64
	train, eval float64 // sums over all of them
}

// timedCalls is how many first step and eval durations the stopwatch keeps for the median.
const timedCalls = 33

func (w *stopwatch) step(d float64) {
	w.train += d
	if len(w.steps) < timedCalls {
		w.steps = append(w.steps, d)
	}
}

func (w *stopwatch) evaluation(d float64) {
	w.eval += d
	if len(w.evals) < timedCalls {
		w.evals = append(w.evals, d)
	}
}

// firstCallExtra is the first call's time above the median of the later ones: the compilation it included.
func firstCallExtra(durations []float64) float64 {
	if len(durations) < 2 {
		return 0
	}
	rest := slices.Sorted(slices.Values(durations[1:]))
	n := len(rest)
	median := rest[n/2]
	if n%2 == 0 {
		median = (rest[n/2-1] + rest[n/2]) / 2
	}
	return max(0, durations[0]-median)
}

// times completes the caller's Load and Hash with the run's own figures; started is when loading began (zero: the
// run's start less Load and Hash).
func (w *stopwatch) times(prep Times, started time.Time) Times {
	t := Times{Load: prep.Load, Hash: prep.Hash, Setup: w.setup, Save: w.save}
	trainCompile, evalCompile := firstCallExtra(w.steps), firstCallExtra(w.evals)
	t.Compile = trainCompile + evalCompile
	t.Train, t.Eval = w.train-trainCompile, w.eval-evalCompile
	if started.IsZero() {
		t.Total = time.Since(w.began).Seconds() + prep.Load + prep.Hash
	} else {
		t.Total = time.Since(started).Seconds()
	}
	return t
}

func seconds(since time.Time) float64 { return time.Since(since).Seconds() }
