package finetune

import (
	"math"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/lora"
)

// AdapterStats are the escape-telemetry quantities of one adapter.
type AdapterStats struct {
	Module   string  `json:"module"`
	NormA    float64 `json:"norm_a"`
	NormB    float64 `json:"norm_b"`
	NormDW   float64 `json:"norm_dw"`   // ‖ΔW‖_F including the scale s
	RelDW    float64 `json:"rel_dw"`    // ‖ΔW‖_F / ‖W‖_F
	BalanceQ float64 `json:"balance_q"` // Σ|A|^q − Σ|B|^q for the optimizer's q
	BalanceG float64 `json:"balance_gd"`
}

// numStats is the width of a row of adapterMetrics.
const numStats = 5

// adapterMetrics computes, per adapter, [‖A‖_F, ‖B‖_F, ‖ΔW‖_F, Σ|A|^q − Σ|B|^q, ‖AAᵀ − BᵀB‖_F] in one graph.
// ‖ΔW‖_F uses ‖B·C‖²_F = ⟨BᵀB, CCᵀ⟩ with C = M⋯A, so it costs r×r work instead of forming Out×In.
func adapterMetrics(set *lora.Set, params []*Node, q float64) *Node {
	depth := set.Spec.Depth
	var rows []*Node
	k := 0
	for range set.Adapters {
		f := params[k : k+depth]
		k += depth
		a, b := f[0], f[depth-1]
		c := a
		for i := 1; i < depth-1; i++ {
			c = DotGeneral(f[i], []int{1}, nil, c, []int{0}, nil) // M_i · C
		}
		btb := DotGeneral(b, []int{0}, nil, b, []int{0}, nil) // [r, r]
		cct := DotGeneral(c, []int{1}, nil, c, []int{1}, nil) // [r, r]
		aat := DotGeneral(a, []int{1}, nil, a, []int{1}, nil)
		dw := MulScalar(Sqrt(Max(ReduceAllSum(Mul(btb, cct)), ScalarZero(a.Graph(), a.DType()))), set.Spec.Scaling())
		balanceQ := Sub(ReduceAllSum(powAbs(a, q)), ReduceAllSum(powAbs(b, q)))
		balanceG := Sqrt(ReduceAllSum(Square(Sub(aat, btb))))
		rows = append(rows, Stack([]*Node{
			Sqrt(ReduceAllSum(Square(a))), Sqrt(ReduceAllSum(Square(b))), dw, balanceQ, balanceG,
		}, 0))
	}
	return Stack(rows, 0)
}

func powAbs(x *Node, q float64) *Node {
	if q == 2 {
		return Square(x)
	}
	if q == 1 {
		return Abs(x)
	}
	return PowScalar(Abs(x), q)
}

// Telemetry evaluates adapterMetrics for the current parameters. baseNorms[i] is ‖W‖_F of adapter i's module.
func (s *Stepper) Telemetry(baseNorms []float64) ([]AdapterStats, error) {
	out, err := s.metrics.Exec(tensorsAsArgs(s.params)...)
	if err != nil {
		return nil, err
	}
	flat, err := tensors.CopyFlatData[float32](out[0])
	if err != nil {
		return nil, err
	}
	stats := make([]AdapterStats, len(s.set.Adapters))
	for i, a := range s.set.Adapters {
		r := flat[i*numStats : (i+1)*numStats]
		stats[i] = AdapterStats{Module: a.Module, NormA: float64(r[0]), NormB: float64(r[1]), NormDW: float64(r[2]),
			BalanceQ: float64(r[3]), BalanceG: float64(r[4])}
		if baseNorms[i] > 0 {
			stats[i].RelDW = stats[i].NormDW / baseNorms[i]
		}
	}
	return stats, nil
}

func tensorsAsArgs(ts []*tensors.Tensor) []any {
	args := make([]any, len(ts))
	for i, t := range ts {
		args[i] = t
	}
	return args
}

// Aggregate sums the per-adapter quantities (norms in quadrature) and averages the relative ‖ΔW‖.
func Aggregate(stats []AdapterStats) AdapterStats {
	var agg AdapterStats
	agg.Module = "all"
	for _, s := range stats {
		agg.NormA += s.NormA * s.NormA
		agg.NormB += s.NormB * s.NormB
		agg.NormDW += s.NormDW * s.NormDW
		agg.BalanceQ += s.BalanceQ
		agg.BalanceG += s.BalanceG * s.BalanceG
		agg.RelDW += s.RelDW
	}
	agg.NormA, agg.NormB, agg.NormDW, agg.BalanceG = math.Sqrt(agg.NormA), math.Sqrt(agg.NormB), math.Sqrt(agg.NormDW), math.Sqrt(agg.BalanceG)
	if len(stats) > 0 {
		agg.RelDW /= float64(len(stats))
	}
	return agg
}

// EscapeTracker finds the escape steps in a stream of metrics: the first step whose loss is ≤ (1−δ)·initial loss,
// and the first whose mean ‖ΔW‖/‖W‖ exceeds a threshold. Beside each step it keeps the crossing interpolated
// linearly between the last observation before it and the first after (LossAt, NormAt: fractional steps; with an
// observation every step the crossing is known to within one step). It is a pure function of what it is fed.
type EscapeTracker struct {
	Delta         float64  `json:"delta"`
	NormThreshold float64  `json:"norm_threshold"`
	Initial       *float64 `json:"initial"` // the first loss observed
	LossStep      *int     `json:"loss_step"`
	NormStep      *int     `json:"norm_step"`
	LossAt        *float64 `json:"loss_at,omitempty"`
	NormAt        *float64 `json:"norm_at,omitempty"`
	// The latest observations before the crossings.
	PrevLoss Observation  `json:"prev_loss"`
	PrevNorm *Observation `json:"prev_norm,omitempty"`
}

// Observation is a value measured after Step steps.
type Observation struct {
	Step  int     `json:"step"`
	Value float64 `json:"value"`
}

// crossing is where the line through a and (step, v) reaches level c.
func crossing(a Observation, step int, v, c float64) float64 {
	if v == a.Value {
		return float64(step)
	}
	return float64(a.Step) + float64(step-a.Step)*(c-a.Value)/(v-a.Value)
}

// ObserveLoss feeds the reference loss (probe loss, eval loss, or train loss without eval data) measured after
// step steps.
func (e *EscapeTracker) ObserveLoss(step int, loss float64) {
	if e.Initial == nil {
		e.Initial = &loss
		e.PrevLoss = Observation{step, loss}
		return
	}
	if e.LossStep != nil {
		return
	}
	if c := (1 - e.Delta) * *e.Initial; loss <= c {
		prev := e.PrevLoss
		if prev == (Observation{}) { // a checkpoint from before PrevLoss was kept: the initial loss, at step 0
			prev.Value = *e.Initial
		}
		s, at := step, crossing(prev, step, loss, c)
		e.LossStep, e.LossAt = &s, &at
		return
	}
	e.PrevLoss = Observation{step, loss}
}

// StartNorm records the mean relative ‖ΔW‖ of the initial adapters (step 0) for the interpolation, without
// judging it: an init already above the threshold escapes at the first step, as before.
func (e *EscapeTracker) StartNorm(rel float64) {
	e.PrevNorm = &Observation{0, rel}
}

// ObserveNorm feeds the mean relative ‖ΔW‖ after step steps.
func (e *EscapeTracker) ObserveNorm(step int, rel float64) {
	if e.NormStep != nil || e.NormThreshold <= 0 {
		return
	}
	if rel > e.NormThreshold {
		s, at := step, float64(step)
		if p := e.PrevNorm; p != nil && p.Value <= e.NormThreshold {
			at = crossing(*p, step, rel, e.NormThreshold)
		}
		e.NormStep, e.NormAt = &s, &at
		return
	}
	e.PrevNorm = &Observation{step, rel}
}

// Escaped reports whether every criterion in use has fired (the norm criterion is off at threshold 0).
func (e *EscapeTracker) Escaped() bool {
	return e.LossStep != nil && (e.NormThreshold <= 0 || e.NormStep != nil)
}
