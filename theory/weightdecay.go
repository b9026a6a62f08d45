package theory

import (
	"fmt"
	"math"
	"time"

	"github.com/saddle-ml/saddle/optimizers"
)

// PredictedPenalty is the exponent p of the penalty Σ|xᵢ|^p that weight decay induces on x = w₁⊙…⊙w_L, or NaN
// for mode "none" (no explicit penalty). Coupled decay adds (α/2)Σ‖wᵢ‖², whose minimum over the factorizations
// of x is (L/2)·α·|x|^(2/L) per coordinate; decoupled decay under q-steepest descent acts, by the paper's mirror
// flow, like Σ|x|^(2−q(L−1)/L): L_{3/2} for sign descent at L = 2, towards L1 as L grows. For gradient descent
// (q = 2) both give 2/L, as the two modes are the same rule.
func PredictedPenalty(mode string, q float64, depth int) float64 {
	L := float64(depth)
	switch mode {
	case "coupled":
		return 2 / L
	case "decoupled":
		return 2 - q*(L-1)/L
	}
	return math.NaN()
}

// weightDecay trains to (near) convergence with the given weight decay mode ("none", "coupled", "decoupled")
// and reports the sparsity and error of x.
func (r *runner) weightDecay(q float64, depth int, mode string) (WeightDecayRow, error) {
	name := optimizers.ForQ(q).Name
	alpha, lr, steps := r.opts.WDAlpha, r.opts.WDLR, r.opts.WDSteps
	if q == 1 {
		lr, steps = r.opts.WDSignLR, r.opts.WDSignSteps
	}
	wdMode := mode
	if mode == "none" {
		alpha, wdMode = 0, ""
	}
	opt, _, err := newOptimizer(name, q, alpha, wdMode)
	if err != nil {
		return WeightDecayRow{}, fmt.Errorf("theory: weight decay %s L=%d %s: %w", name, depth, mode, err)
	}
	row := WeightDecayRow{
		Optimizer: opt.Name(), Q: opt.Q(), Depth: depth, Mode: mode, Alpha: alpha, LR: lr, Lambda: r.opts.WDLambda,
		PredictedPenalty: num(PredictedPenalty(mode, opt.Q(), depth)),
	}
	label := fmt.Sprintf("%s L=%d (q=%g, lr=%g), %s α=%g", opt.Name(), depth, opt.Q(), lr, mode, alpha)
	start := time.Now()
	e, err := newEngine(r.b, r.prob, opt, depth, 1, r.opts.Chunk)
	if err != nil {
		return row, err
	}
	defer e.close()
	st := e.newState(escapeInit([]float64{r.opts.WDLambda}))
	if err := e.run(r.ctx, st, []float64{math.Inf(-1)}, lr, steps, false, nil); err != nil {
		return row, fmt.Errorf("theory: weight decay %s: %w", label, err)
	}
	x := st.x(0, r.prob.k)
	zeros, falsePos, hits := 0, 0, 0
	diff := make([]float64, len(x))
	for i, v := range x {
		diff[i] = v - r.prob.xStar[i]
		small := math.Abs(v) < SparseBelow
		switch {
		case small:
			zeros++
		case r.prob.xStar[i] == 0:
			falsePos++
		default:
			hits++
		}
	}
	row.Steps = st.step
	row.Sparsity = float64(zeros) / float64(len(x))
	row.Error = norm(diff)
	row.RelError = row.Error / norm(r.prob.xStar)
	row.SupportFound = hits
	row.FalsePositives = falsePos
	row.Loss = st.loss[0]
	row.LeftSaddle = row.Loss <= r.opts.EscapeFraction*r.l0
	if math.IsNaN(row.Error) || math.IsInf(row.Error, 0) {
		return row, fmt.Errorf("theory: weight decay %s diverged (lr too large?)", label)
	}
	fmt.Fprintf(r.progress, "weight decay %s: %d steps in %.1fs: sparsity %.3f, ‖x−x*‖ %.4f, loss %.3g\n",
		label, st.step, time.Since(start).Seconds(), row.Sparsity, row.Error, row.Loss)
	return row, nil
}
