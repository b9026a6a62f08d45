package theory

import (
	"fmt"
	"math"
	"time"

	"github.com/saddle-ml/saddle/optimizers"
)

// balanceQuantity returns D = (|w₁|^q − |wⱼ|^q) for j = 2..L and every coordinate, lane 0.
func balanceQuantity(w [][]float64, q float64, k int) []float64 {
	out := make([]float64, 0, (len(w)-1)*k)
	for j := 1; j < len(w); j++ {
		for c := 0; c < k; c++ {
			out = append(out, math.Pow(math.Abs(w[0][c]), q)-math.Pow(math.Abs(w[j][c]), q))
		}
	}
	return out
}

// balance runs one balance-law check. Without weight decay it reports the largest relative drift
// ‖D(t) − D(0)‖/‖D(0)‖ seen at the end of each chunk; with decoupled weight decay α it fits ln‖D(t)‖ against the
// step and compares the rate with q·α·lr, since d/dt |wᵢ|^q = −q·sign(g·x)|g·x|^(q−1) − q·α·|wᵢ|^q: the first
// term is the same for every factor and cancels in D.
func (r *runner) balance(bs BalanceRun) (Balance, error) {
	mode := ""
	if bs.Alpha > 0 {
		mode = optimizers.Decoupled
	}
	opt, _, err := newOptimizer(bs.Optimizer, bs.Q, bs.Alpha, mode)
	if err != nil {
		return Balance{}, fmt.Errorf("theory: balance %s L=%d: %w", bs.Optimizer, bs.Depth, err)
	}
	q := opt.Q()
	out := Balance{Optimizer: opt.Name(), Q: q, Depth: bs.Depth, LR: bs.LR, Lambda: bs.Lambda, WeightDecay: bs.Alpha, WDMode: mode}
	label := fmt.Sprintf("%s L=%d (q=%g, lr=%g, decoupled α=%g)", opt.Name(), bs.Depth, q, bs.LR, bs.Alpha)
	fmt.Fprintf(r.progress, "balance %s: %d steps\n", label, bs.Steps)
	start := time.Now()
	e, err := newEngine(r.b, r.prob, opt, bs.Depth, 1, r.opts.Chunk)
	if err != nil {
		return out, err
	}
	defer e.close()
	st := e.newState(escapeInit([]float64{bs.Lambda}))
	k := r.prob.k
	d0 := balanceQuantity(st.w, q, k)
	n0 := norm(d0)
	out.TraceSteps = []int{0}
	if bs.Alpha > 0 {
		out.Trace = []float64{1} // ‖D(t)‖/‖D(0)‖
	} else {
		out.Trace = []float64{0} // ‖D(t) − D(0)‖/‖D(0)‖
	}
	maxDrift := 0.0
	err = e.run(r.ctx, st, []float64{math.Inf(-1)}, bs.LR, bs.Steps, false, func(st *laneState, _ []float64) error {
		d := balanceQuantity(st.w, q, k)
		var v float64
		if bs.Alpha > 0 {
			v = norm(d) / n0
		} else {
			diff := make([]float64, len(d))
			for i := range d {
				diff[i] = d[i] - d0[i]
			}
			v = norm(diff) / n0
			maxDrift = math.Max(maxDrift, v)
		}
		out.TraceSteps = append(out.TraceSteps, st.step)
		out.Trace = append(out.Trace, v)
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("theory: balance %s: %w", label, err)
	}
	out.Steps = st.step
	out.FinalLoss = st.loss[0]
	out.InitialLoss = r.l0
	if bs.Alpha == 0 {
		out.MaxRelDrift = num(maxDrift)
		out.OK = maxDrift < DriftTolerance
		fmt.Fprintf(r.progress, "  %s in %.1fs: max relative drift %.3g, loss %.4g → %.4g\n", label, time.Since(start).Seconds(), maxDrift, r.l0, out.FinalLoss)
		return out, nil
	}
	var xs, ys []float64
	for i, v := range out.Trace {
		if v > 1e-8 && !math.IsInf(v, 0) {
			xs = append(xs, float64(out.TraceSteps[i]))
			ys = append(ys, math.Log(v))
		}
	}
	f := fitLine(xs, ys)
	pred := q * bs.Alpha * bs.LR
	out.FittedRate, out.PredictedRate, out.RateR2 = num(-f.Slope), num(pred), num(f.R2)
	rel := math.Abs(-f.Slope-pred) / pred
	out.RateRelErr = num(rel)
	out.OK = rel <= RateTolerance
	fmt.Fprintf(r.progress, "  %s in %.1fs: decay rate %.4g per step (predicted q·α·lr = %.4g, %.2g%% off), R² %.6f\n",
		label, time.Since(start).Seconds(), -f.Slope, pred, 100*rel, f.R2)
	return out, nil
}
