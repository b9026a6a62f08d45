package theory

import (
	"context"
	"errors"
	"fmt"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads better unqualified
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/optimizers"
)

// engine runs B independent copies ("lanes") of the diagonal model x = w₁⊙…⊙w_L side by side, each lane with its
// own initialization, for a chunk of optimizer steps per Exec call. Lanes share the data (Z, y), the optimizer and
// the learning rate; a whole λ sweep runs as lanes of one graph, which costs little more than a single run
// because the Go backend's per-op overhead dominates at this size.
//
// The chunk is unrolled in the graph rather than written as a While loop: graph.Gradient inside a While body
// does not execute on the Go backend in GoMLX v0.28.16 ("input 0 for node Mul not computed yet").
type engine struct {
	prob  *problem
	opt   optimizers.Optimizer
	depth int
	lanes int
	chunk int
	exec  *Exec
}

// laneState is the host copy of the training state of every lane.
type laneState struct {
	w      [][]float64   // [depth][lanes·k], lane-major
	slots  [][][]float64 // [depth][numSlots][lanes·k]
	step   int           // optimizer steps done
	escape []float64     // per lane: first step count with loss ≤ threshold, −1 before
	loss   []float64     // per lane: loss at the current w
}

func newEngine(b compute.Backend, prob *problem, opt optimizers.Optimizer, depth, lanes, chunk int) (*engine, error) {
	if depth < 1 || lanes < 1 || chunk < 1 {
		return nil, fmt.Errorf("theory: depth %d, lanes %d and chunk %d must be ≥ 1", depth, lanes, chunk)
	}
	e := &engine{prob: prob, opt: opt, depth: depth, lanes: lanes, chunk: chunk}
	exec, err := NewExec(b, e.build)
	if err != nil {
		return nil, fmt.Errorf("theory: building the %s graph: %w", opt.Name(), err)
	}
	e.exec = exec.WithName(fmt.Sprintf("theory-%s-L%d", opt.Name(), depth))
	return e, nil
}

// close frees the compiled graph.
func (e *engine) close() { e.exec.Finalize() }

// newState returns the state with w_i = init(i, lane) for every coordinate, zero slots and no escape yet.
func (e *engine) newState(init func(factor, lane int) float64) *laneState {
	k := e.prob.k
	st := &laneState{escape: make([]float64, e.lanes)}
	for i := 0; i < e.depth; i++ {
		w := make([]float64, e.lanes*k)
		for b := 0; b < e.lanes; b++ {
			v := init(i, b)
			for j := 0; j < k; j++ {
				w[b*k+j] = v
			}
		}
		st.w = append(st.w, w)
		slots := make([][]float64, e.opt.NumSlots())
		for s := range slots {
			slots[s] = make([]float64, e.lanes*k)
		}
		st.slots = append(st.slots, slots)
	}
	for b := range st.escape {
		st.escape[b] = -1
	}
	return st
}

// x returns lane b's product w₁⊙…⊙w_L, computed on the host.
func (st *laneState) x(b, k int) []float64 {
	x := make([]float64, k)
	for j := range x {
		p := 1.0
		for _, w := range st.w {
			p *= w[b*k+j]
		}
		x[j] = p
	}
	return x
}

// build is the graph of one chunk. Inputs: Z [n,k], y [n], threshold [B], lr, then the state: w_1..w_L [B,k],
// the slots (factor-major) [B,k], step, escape [B]. Outputs: the new state, the loss before each step [chunk,B]
// and the loss at the final w [B].
//
// A lane keeps training after its escape (its later steps are simply not looked at): lanes never mix, since the
// gradient of the summed loss with respect to lane b's factors depends on lane b alone, even if a lane that
// escaped with a large learning rate later diverges to Inf/NaN. Freezing escaped lanes with Where cost a third
// of the step time on the Go backend.
func (e *engine) build(inputs []*Node) []*Node {
	z, y, thr, lr := inputs[0], inputs[1], inputs[2], inputs[3]
	L, ns := e.depth, e.opt.NumSlots()
	st := inputs[4:]
	ws := append([]*Node(nil), st[:L]...)
	slots := make([][]*Node, L)
	for i := range slots {
		slots[i] = append([]*Node(nil), st[L+i*ns:L+(i+1)*ns]...)
	}
	step, esc := st[L+L*ns], st[L+L*ns+1]
	g := z.Graph()
	zt := Transpose(z, 0, 1)
	halfOverN := Const(g, 0.5/float64(e.prob.n))
	lossOf := func(ws []*Node) *Node { // [B]
		x := ws[0]
		for _, w := range ws[1:] {
			x = Mul(x, w)
		}
		r := Sub(MatMul(x, zt), InsertAxes(y, 0)) // [B,n]
		return Mul(ReduceSum(Square(r), 1), halfOverN)
	}
	zero, one := Const(g, 0.0), Const(g, 1.0)
	losses := make([]*Node, e.chunk)
	for s := range e.chunk {
		loss := lossOf(ws)
		losses[s] = loss
		esc = Where(LogicalAnd(LessThan(esc, zero), LessOrEqual(loss, thr)), BroadcastToShape(step, esc.Shape()), esc)
		grads := Gradient(ReduceAllSum(loss), ws...)
		step = Add(step, one)
		newW, newSlots, err := optimizers.Apply(e.opt, ws, grads, slots, step, lr)
		if err != nil {
			panic(err) // Exec returns it as an error
		}
		ws, slots = newW, newSlots
	}
	out := append([]*Node(nil), ws...)
	for i := range slots {
		out = append(out, slots[i]...)
	}
	return append(out, step, esc, Stack(losses, 0), lossOf(ws))
}

// runChunk advances st by one chunk.
func (e *engine) runChunk(st *laneState, thr []float64, lr float64) ([]float64, error) {
	k, B := e.prob.k, e.lanes
	args := []any{e.prob.zT, e.prob.yT, tensors.FromFlatDataAndDimensions(thr, B), lr}
	for _, w := range st.w {
		args = append(args, tensors.FromFlatDataAndDimensions(w, B, k))
	}
	for _, ss := range st.slots {
		for _, s := range ss {
			args = append(args, tensors.FromFlatDataAndDimensions(s, B, k))
		}
	}
	args = append(args, float64(st.step), tensors.FromFlatDataAndDimensions(st.escape, B))
	outs, err := e.exec.Call(args...)
	if err != nil {
		return nil, fmt.Errorf("theory: %s at depth %d, step %d: %w", e.opt.Name(), e.depth, st.step, err)
	}
	defer func() {
		for _, o := range outs {
			o.FinalizeAll()
		}
	}()
	var errs []error
	i := 0
	next := func() []float64 {
		v, err := tensors.CopyFlatData[float64](outs[i])
		errs = append(errs, err)
		i++
		return v
	}
	for f := range st.w {
		st.w[f] = next()
	}
	for f := range st.slots {
		for j := range st.slots[f] {
			st.slots[f][j] = next()
		}
	}
	step := next()
	st.escape = next()
	losses := next()
	st.loss = next()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("theory: reading the %s state: %w", e.opt.Name(), err)
	}
	st.step = int(step[0])
	return losses, nil
}

// run advances st chunk by chunk until maxSteps steps are done (rounded up to whole chunks) or, with
// untilEscaped, every lane has escaped; after each chunk it calls onChunk (if not nil) with the per-step losses
// [chunk·B] of that chunk.
func (e *engine) run(ctx context.Context, st *laneState, thr []float64, lr float64, maxSteps int, untilEscaped bool,
	onChunk func(st *laneState, losses []float64) error) error {
	for st.step < maxSteps {
		if err := ctx.Err(); err != nil {
			return err
		}
		losses, err := e.runChunk(st, thr, lr)
		if err != nil {
			return err
		}
		if onChunk != nil {
			if err := onChunk(st, losses); err != nil {
				return err
			}
		}
		if untilEscaped && allEscaped(st.escape) {
			return nil
		}
	}
	return nil
}

func allEscaped(esc []float64) bool {
	for _, v := range esc {
		if v < 0 {
			return false
		}
	}
	return true
}
