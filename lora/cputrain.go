package lora

import (
	"fmt"
	"slices"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/gemm"
	"github.com/saddle-ml/saddle/model"
)

// CPUAdapters is a Set's adapters for the CPU trainer (model.TrainAdapter, one per adapted module): plain-Go forward
// and backward of s·B⋯M₁·A·x with gemm, computing what Set.Hook and its gradient compute in a graph, without dropout.
//
// It holds its own copy of the factor values (SetFactors copies them in) and the gradients of the summed loss with
// respect to them, accumulated by every Backward since ZeroGrads, so several micro-batches can add into one step.
// Every buffer is allocated by Set.CPUAdapters: Forward, Backward, ZeroGrads and Grads allocate nothing, nor does
// SetFactors beyond what reading a tensor that is not on the host costs GoMLX; GradTensors makes new tensors.
//
// Each module's adapter owns its buffers, so adapters of different modules may run concurrently; one module's
// Forward and Backward must not overlap, and each Backward consumes the intermediates of the Forward before it (one
// Backward per Forward).
type CPUAdapters struct {
	set     *Set
	rows    int         // the most rows a Forward may take
	factors []float32   // every factor's values, in Set.Tensors order, back to back
	grads   []float32   // their gradients, laid out as factors
	fs, gs  [][]float32 // per parameter (Set.Tensors order): views into factors and grads
	shapes  [][]int     // per parameter: [rows, cols]
	names   []string    // per parameter: Set.ParamNames
	modules map[string]model.TrainAdapter
}

// cpuAdapter is one module's adapter: factors F_0 = A [r, In], F_1..F_{L−2} = M_i [r, r], F_{L−1} = B [Out, r].
type cpuAdapter struct {
	module        string
	in, out, rank int
	scale         float32
	maxRows       int
	f, g          [][]float32 // factor values and gradients (views into CPUAdapters.factors and .grads)
	// h[i] (i = 1..L−1) is h_i = h_{i−1}·F_{i−1}ᵀ [rows, r] from the last Forward (h_0 = x is the caller's), the
	// last one stored already scaled by s. Backward reuses them as the buffers of the gradient it carries down.
	h    [][]float32
	rows int // rows of the last Forward; −1 when its intermediates were consumed (or there was none)
}

// CPUAdapters makes the CPU trainer's adapters for s, with the factors' current values and zero gradients, able to
// take up to batchRows rows per Forward. The CPU path has no dropout: a spec with dropout is refused.
func (s *Set) CPUAdapters(batchRows int) (*CPUAdapters, error) {
	spec := s.Spec
	if spec.Dropout > 0 {
		return nil, fmt.Errorf("adapter dropout %g is not supported by the CPU trainer (set dropout to 0 or train with a graph backend)", spec.Dropout)
	}
	if batchRows < 1 {
		return nil, fmt.Errorf("CPU adapters need at least one row per batch, got %d", batchRows)
	}
	if spec.Depth < 2 || spec.Rank < 1 {
		return nil, fmt.Errorf("adapter depth %d and rank %d: need depth >= 2 and rank >= 1", spec.Depth, spec.Rank)
	}
	c := &CPUAdapters{set: s, rows: batchRows, names: s.ParamNames(), modules: make(map[string]model.TrainAdapter, len(s.Adapters))}
	total := 0
	for _, a := range s.Adapters {
		if len(a.Factors) != spec.Depth {
			return nil, fmt.Errorf("adapter %s has %d factors, the spec's depth is %d", a.Module, len(a.Factors), spec.Depth)
		}
		for i, f := range a.Factors {
			shape := a.FactorShape(i, spec.Depth, spec.Rank)
			if len(f) != shape[0]*shape[1] {
				return nil, fmt.Errorf("%s.%s has %d values, want %v", a.Module, FactorName(i, spec.Depth), len(f), shape)
			}
			c.shapes = append(c.shapes, shape)
			total += len(f)
		}
	}
	c.factors, c.grads = make([]float32, total), make([]float32, total)
	off := 0
	for _, a := range s.Adapters {
		m := &cpuAdapter{module: a.Module, in: a.In, out: a.Out, rank: spec.Rank, scale: float32(spec.Scaling()),
			maxRows: batchRows, rows: -1, h: make([][]float32, spec.Depth)}
		for _, f := range a.Factors {
			fv, gv := c.factors[off:off+len(f):off+len(f)], c.grads[off:off+len(f):off+len(f)]
			copy(fv, f)
			m.f, m.g = append(m.f, fv), append(m.g, gv)
			c.fs, c.gs = append(c.fs, fv), append(c.gs, gv)
			off += len(f)
		}
		for i := 1; i < spec.Depth; i++ {
			m.h[i] = make([]float32, batchRows*spec.Rank)
		}
		c.modules[a.Module] = m
	}
	return c, nil
}

// Modules maps each adapted module's path (the names Set.Hook is called with) to its adapter.
func (c *CPUAdapters) Modules() map[string]model.TrainAdapter { return c.modules }

// BatchRows is the most rows one Forward takes.
func (c *CPUAdapters) BatchRows() int { return c.rows }

// SetFactors copies new factor values in (float32 tensors in Set.Tensors order, as the optimizer returns them). It
// copies rather than borrows: a tensor's flat data is only valid inside its access callback, and the optimizer may
// reuse or donate its buffers once it has returned them, while the values are read by every later Forward and
// Backward. The copy is as small as the parameters. Nothing is changed when it returns an error.
func (c *CPUAdapters) SetFactors(ts []*tensors.Tensor) error {
	if len(ts) != len(c.fs) {
		return fmt.Errorf("got %d adapter tensors, want %d (one per factor, in Set.Tensors order)", len(ts), len(c.fs))
	}
	for k, t := range ts {
		if t == nil {
			return fmt.Errorf("adapter parameter %s: nil tensor", c.names[k])
		}
		sh := t.Shape()
		if sh.DType != dtypes.Float32 || !slices.Equal(sh.Dimensions, c.shapes[k]) {
			return fmt.Errorf("adapter parameter %s: got %s, want float32%v", c.names[k], sh, c.shapes[k])
		}
	}
	for k, t := range ts {
		if err := tensors.ConstFlatData(t, func(flat []float32) { copy(c.fs[k], flat) }); err != nil {
			return fmt.Errorf("adapter parameter %s: %w", c.names[k], err)
		}
	}
	return nil
}

// Factors returns the factor values in use, in Set.Tensors order (views: do not modify).
func (c *CPUAdapters) Factors() [][]float32 { return c.fs }

// ZeroGrads clears the accumulated gradients.
func (c *CPUAdapters) ZeroGrads() { clear(c.grads) }

// Grads returns the gradients of the summed loss with respect to each factor, in Set.Tensors order, accumulated by
// every Backward since ZeroGrads (views into the accumulators: they change with the next Backward or ZeroGrads).
func (c *CPUAdapters) Grads() [][]float32 { return c.gs }

// GradTensors returns the gradients as new float32 tensors in Set.Tensors order and shapes, for the optimizer graph.
func (c *CPUAdapters) GradTensors() []*tensors.Tensor {
	out := make([]*tensors.Tensor, len(c.gs))
	for k, g := range c.gs {
		out[k] = tensors.FromFlatDataAndDimensions(g, c.shapes[k]...)
	}
	return out
}

// dims is factor i's [out_i, in_i].
func (m *cpuAdapter) dims(i int) (out, in int) {
	out, in = m.rank, m.rank
	if i == 0 {
		in = m.in
	}
	if i == len(m.f)-1 {
		out = m.out
	}
	return out, in
}

func (m *cpuAdapter) checkRows(what string, rows int, n, cols int) {
	if n < rows*cols {
		panic(fmt.Sprintf("lora: %s adapter %s: %d values for %d rows of %d", what, m.module, n, rows, cols))
	}
}

// Forward returns the adapter's output as (s·h_{L−1})·Bᵀ, with h_0 = x and h_i = h_{i−1}·F_{i−1}ᵀ, keeping
// h_1..h_{L−1} (s·h_{L−1}) for Backward.
func (m *cpuAdapter) Forward(x []float32, rows int) ([]float32, int, gemm.View) {
	if rows < 0 || rows > m.maxRows {
		panic(fmt.Sprintf("lora: CPU adapter %s: Forward of %d rows, made for at most %d", m.module, rows, m.maxRows))
	}
	m.checkRows("Forward x of", rows, len(x), m.in)
	L, r := len(m.f), m.rank
	prev, prevCols := x, m.in
	for i := 0; i < L-1; i++ { // h_{i+1} [rows, r] = h_i [rows, in_i] · F_iᵀ [in_i, r]
		gemm.Mul(m.h[i+1], r, rows, r, prevCols, gemm.RowMajor(prev, prevCols), gemm.RowMajor(m.f[i], prevCols).T(), false)
		prev, prevCols = m.h[i+1], r
	}
	last := m.h[L-1][:rows*r]
	for j := range last {
		last[j] *= m.scale
	}
	m.rows = rows
	return last, r, gemm.RowMajor(m.f[L-1], r).T() // (s·h_{L−1}) [rows, r] · Bᵀ [r, Out]
}

// Backward adds dB += dyᵀ·(s·h_{L−1}), then carries g = s·dy·B down: dF_i += gᵀ·h_i and g ← g·F_i, returning the
// input gradient as g·A. Each g [rows, r] is written over the h buffer it no longer needs.
func (m *cpuAdapter) Backward(x, dy []float32, rows int) ([]float32, int, gemm.View) {
	if rows != m.rows {
		if m.rows < 0 {
			panic(fmt.Sprintf("lora: CPU adapter %s: Backward without a Forward before it (each Forward takes one Backward)", m.module))
		}
		panic(fmt.Sprintf("lora: CPU adapter %s: Backward of %d rows after a Forward of %d", m.module, rows, m.rows))
	}
	m.checkRows("Backward x of", rows, len(x), m.in)
	m.checkRows("Backward dy of", rows, len(dy), m.out)
	m.rows = -1
	L, r := len(m.f), m.rank
	// dB [Out, r] += dyᵀ [Out, rows] · (s·h_{L−1}) [rows, r]
	gemm.Mul(m.g[L-1], r, m.out, r, rows, gemm.RowMajor(dy, m.out).T(), gemm.RowMajor(m.h[L-1], r), true)
	// g [rows, r] = s·dy [rows, Out] · B [Out, r], over s·h_{L−1}
	g := m.h[L-1][:rows*r]
	gemm.Mul(g, r, rows, r, m.out, gemm.RowMajor(dy, m.out), gemm.RowMajor(m.f[L-1], r), false)
	for j := range g {
		g[j] *= m.scale
	}
	for i := L - 2; ; i-- {
		out, in := m.dims(i) // out = r: only B has Out rows
		hi := x
		if i > 0 {
			hi = m.h[i]
		}
		// dF_i [r, in_i] += gᵀ [r, rows] · h_i [rows, in_i]
		gemm.Mul(m.g[i], in, out, in, rows, gemm.RowMajor(g, r).T(), gemm.RowMajor(hi, in), true)
		if i == 0 {
			return g, r, gemm.RowMajor(m.f[0], m.in) // g [rows, r] · A [r, In]
		}
		// g ← g [rows, r] · F_i [r, r], over h_i (read above, no longer needed)
		gemm.Mul(m.h[i], r, rows, r, r, gemm.RowMajor(g, r), gemm.RowMajor(m.f[i], r), false)
		g = m.h[i][:rows*r]
	}
}
