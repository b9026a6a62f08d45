package finetune

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/internal/safetensors"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/optimizers"
)

// Stepper owns the compiled graphs of training: one optimizer step, evaluation, and adapter telemetry. The base
// weights are graph inputs that no graph ever differentiates or returns, so they stay frozen bit for bit; the
// adapter factors and optimizer slots are the only state that changes.
type Stepper struct {
	model       *model.Model
	set         *lora.Set
	opt         optimizers.Optimizer
	params      []*tensors.Tensor   // adapter factors, in Set.Tensors order
	slots       [][]*tensors.Tensor // optimizer state per parameter
	rng         *tensors.Tensor     // dropout random state
	step        int                 // optimizer steps taken
	prev        *stepState          // state before the last TrainStep, for Rollback
	clip        float64
	checkpoint  bool      // recompute each block in the backward pass (StepperOption GradCheckpoint)
	trainerKind string    // TrainerCPU or TrainerGraph once NewStepper has resolved the Trainer option
	cpu         *cpuTrain // the CPU trainer's state (TrainerCPU), built on first use
	train       *Exec     // fused step, one micro-batch
	accumulate  *Exec     // gradient of one micro-batch added to a running sum
	apply       *Exec     // optimizer step from summed gradients
	eval        *Exec
	metrics     *Exec
}

type stepState struct {
	params []*tensors.Tensor
	slots  [][]*tensors.Tensor
	rng    *tensors.Tensor
	step   int
}

// StepResult is what one optimizer step reports.
type StepResult struct {
	Loss     float64
	GradNorm float64
}

// StepperOption changes how a Stepper computes its steps (not what they compute).
type StepperOption func(*Stepper)

// GradCheckpoint makes training keep only each decoder block's input from the forward pass and recompute the
// block's activations when the backward pass reaches it: activation memory of one block instead of all of them,
// for about a third more compute.
func GradCheckpoint(on bool) StepperOption { return func(s *Stepper) { s.checkpoint = on } }

// NewStepper compiles nothing yet (graphs compile on first use) but checks that everything fits together.
func NewStepper(m *model.Model, set *lora.Set, opt optimizers.Optimizer, clipNorm float64, seed uint64, options ...StepperOption) (*Stepper, error) {
	s := &Stepper{model: m, set: set, opt: opt, params: set.Tensors(), clip: clipNorm}
	for _, o := range options {
		o(s)
	}
	if err := s.resolveTrainer(); err != nil {
		return nil, err
	}
	for _, p := range s.params {
		slots := make([]*tensors.Tensor, opt.NumSlots())
		for i := range slots {
			slots[i] = tensors.FromShape(p.Shape())
		}
		s.slots = append(s.slots, slots)
	}
	rng, err := RNGStateFromSeed(int64(seed))
	if err != nil {
		return nil, err
	}
	s.rng = rng
	if err := s.compile(); err != nil {
		return nil, err
	}
	return s, nil
}

// lossChunkElements bounds the logits one chunk of the loss holds: rows × vocab ≤ 2²⁴ values (64 MB in float32).
// With a vocabulary of 128-152 k, logits for every token of a batch would be the largest tensors of a step.
const lossChunkElements = 1 << 24

// lossChunkRows is how many token rows one chunk of the loss takes for a vocabulary.
func lossChunkRows(vocab int) int { return max(16, lossChunkElements/vocab) }

// tokenLoss is the summed cross entropy of the weighted targets over the final hidden states h [batch, seq, hidden],
// and the sum of the weights. The logits h·headᵀ are computed chunkRows token rows at a time and never exist for the
// whole batch at once: each chunk's are reduced to row losses (log-sum-exp − target logit) and dropped.
//
// With withGrad, the gradient with respect to h is computed in the same pass, chunk by chunk, as
// dh = ((softmax − one-hot)·weight)·head, and attached to the result without changing its value:
// sum + (link − stop(link)) with link = Σ h·stop(dh) has the value sum (x − x is exactly 0) and the gradient dh
// with respect to h, so autodiff continues from there into the decoder. Nothing of the logits is kept for the
// backward pass. Each chunk starts after the previous one's results exist (a scheduling barrier), so the backend
// holds one chunk's logits at a time.
func tokenLoss(w model.Weights, cfg *model.Config, h, targets, weights *Node, chunkRows int, withGrad bool) (sum, weightSum *Node) {
	g := h.Graph()
	hidden := h.Shape().Dimensions[2]
	head := cfg.OutputHead(w, h.DType())
	flat := Reshape(h, -1, hidden)
	n := flat.Shape().Dimensions[0]
	tg := Reshape(ConvertDType(targets, dtypes.Int32), n)
	wt := Reshape(ConvertDType(weights, h.DType()), n)
	weightSum = ReduceAllSum(wt)
	stopped := StopGradient(flat)
	var sums, grads []*Node
	var prev *Node
	for lo := 0; lo < n; lo += chunkRows {
		hi := min(lo+chunkRows, n)
		hc := Slice(stopped, AxisRange(lo, hi))
		if prev != nil {
			hc = SchedulingBarrier(hc, prev)
		}
		rows := hi - lo
		logits := head.Logits(hc) // [rows, vocab]
		tc, wc := Slice(tg, AxisRange(lo, hi)), Slice(wt, AxisRange(lo, hi))
		idx := Concatenate([]*Node{Iota(g, shapes.Make(dtypes.Int32, rows, 1), 0), Reshape(tc, rows, 1)}, 1)
		// The probabilities come from the backend's fused softmax; log-sum-exp follows from them without another
		// exp pass: a row's largest probability is exp(0)/Σ, so logsumexp = max − log(max probability).
		probs := Softmax(logits, -1)
		logSumExp := Sub(ReduceMax(logits, -1), Log(ReduceMax(probs, -1)))
		rowLoss := Sub(logSumExp, Gather(logits, idx))
		sc := ReduceAllSum(Mul(rowLoss, wc))
		sums = append(sums, sc)
		prev = sc
		if withGrad {
			dLogits := ScatterSum(Mul(probs, Reshape(wc, rows, 1)), idx, Neg(wc), true, true)
			// The chunk's loss value comes first: the backend schedules by the longest path to an output, and the
			// loss's path is short, so it would run at the very end and keep every chunk's logits alive until then.
			dh := head.Grad(SchedulingBarrier(dLogits, sc)) // [rows, hidden]
			grads = append(grads, dh)
			prev = dh
		}
	}
	sum = sums[0]
	for _, sc := range sums[1:] {
		sum = Add(sum, sc)
	}
	if withGrad {
		dh := grads[0]
		if len(grads) > 1 {
			dh = Concatenate(grads, 0)
		}
		link := ReduceAllSum(Mul(flat, StopGradient(dh)))
		sum = Add(sum, Sub(link, StopGradient(link)))
	}
	return sum, weightSum
}

// lossAndGrads builds the forward pass with adapters and the gradient of the summed (not averaged) token loss.
func (s *Stepper) lossAndGrads(w model.Weights, params []*Node, rng, tokens, targets, weights *Node) (sum, weightSum, newRNG *Node, grads []*Node) {
	if s.checkpoint {
		return s.checkpointedLossAndGrads(w, params, rng, tokens, targets, weights)
	}
	var dropout *lora.Dropout
	if s.set.Spec.Dropout > 0 {
		dropout = &lora.Dropout{Rate: s.set.Spec.Dropout, RNG: rng}
	}
	cfg := &s.model.Config
	h := cfg.Hidden(w, tokens, ScalarZero(tokens.Graph(), dtypes.Int32), nil, s.set.Hook(params, dropout))
	sum, weightSum = tokenLoss(w, cfg, h, targets, weights, lossChunkRows(cfg.VocabSize), true)
	grads = Gradient(sum, params...)
	newRNG = rng
	if dropout != nil {
		newRNG = dropout.RNG
	}
	return sum, weightSum, newRNG, grads
}

// checkpointedLossAndGrads is lossAndGrads with gradient checkpointing: the forward pass keeps only each block's
// input; the backward pass goes block by block from the last, recomputing the block from its input once the
// gradient of its output exists (a scheduling barrier orders it) and differentiating that recomputation alone.
// Dropout masks are the same both times: each block restarts from the random state it had in the forward pass.
func (s *Stepper) checkpointedLossAndGrads(w model.Weights, params []*Node, rng, tokens, targets, weights *Node) (sum, weightSum, newRNG *Node, grads []*Node) {
	cfg := &s.model.Config
	start := ScalarZero(tokens.Graph(), dtypes.Int32)
	block := func(w model.Weights, layer int, x, rng *Node) (y, next *Node) {
		var dropout *lora.Dropout
		if s.set.Spec.Dropout > 0 {
			dropout = &lora.Dropout{Rate: s.set.Spec.Dropout, RNG: rng}
		}
		y = cfg.Block(w, layer, x, start, nil, s.set.Hook(params, dropout))
		if dropout != nil {
			return y, dropout.RNG
		}
		return y, rng
	}
	inputs, rngs := make([]*Node, cfg.NumLayers), make([]*Node, cfg.NumLayers)
	x := cfg.Embed(w, tokens)
	newRNG = rng
	for l := range cfg.NumLayers {
		inputs[l], rngs[l] = x, newRNG
		x, newRNG = block(w, l, x, newRNG)
	}
	sum, weightSum = tokenLoss(w, cfg, cfg.FinalNorm(w, x), targets, weights, lossChunkRows(cfg.VocabSize), true)
	dx := Gradient(sum, x)[0]
	// Each parameter belongs to one block: the one its module is in.
	byLayer := make([][]int, cfg.NumLayers)
	k := 0
	for _, a := range s.set.Adapters {
		layer := lora.LayerOf(a.Module)
		for range a.Factors {
			if layer >= 0 && layer < cfg.NumLayers {
				byLayer[layer] = append(byLayer[layer], k)
			}
			k++
		}
	}
	grads = make([]*Node, len(params))
	for l := cfg.NumLayers - 1; l >= 0; l-- {
		xr := SchedulingBarrier(inputs[l], dx)
		y, _ := block(recomputeWeights(w, l, xr.DType(), dx), l, xr, rngs[l])
		wrt := []*Node{xr}
		for _, i := range byLayer[l] {
			wrt = append(wrt, params[i])
		}
		g := Gradient(ReduceAllSum(Mul(y, StopGradient(dx))), wrt...)
		dx = g[0]
		for j, i := range byLayer[l] {
			grads[i] = g[1+j]
		}
	}
	for i := range grads {
		if grads[i] == nil {
			grads[i] = ZerosLike(params[i])
		}
	}
	return sum, weightSum, newRNG, grads
}

// recomputeWeights returns w with layer's weights that its matmuls convert (held in another dtype than the
// activations) behind a scheduling barrier on dx. Otherwise the backend would merge the recomputation's
// conversions with the forward pass's identical ones and keep a converted copy of every weight alive from the
// forward pass to the recomputation: a float32 copy of the whole model.
func recomputeWeights(w model.Weights, layer int, activation dtypes.DType, dx *Node) model.Weights {
	prefix := fmt.Sprintf("model.layers.%d.", layer)
	out := model.Weights{Nodes: maps.Clone(w.Nodes), Compute: w.Compute}
	for name, n := range w.Nodes {
		if strings.HasPrefix(name, prefix) && n.DType() != activation {
			out.Nodes[name] = SchedulingBarrier(n, dx)
		}
	}
	return out
}

// update divides the summed gradients by the token count, clips them and applies the optimizer.
func (s *Stepper) update(params []*Node, flatSlots []*Node, grads []*Node, weightSum, step, lr *Node) (norm *Node, newParams []*Node, newFlatSlots []*Node) {
	ns := s.opt.NumSlots()
	denom := Max(weightSum, ScalarOne(weightSum.Graph(), weightSum.DType()))
	for i := range grads {
		grads[i] = Div(grads[i], denom)
	}
	grads, norm = optimizers.ClipByGlobalNorm(grads, s.clip)
	slots := make([][]*Node, len(params))
	for i := range slots {
		slots[i] = flatSlots[i*ns : (i+1)*ns]
	}
	newParams, newSlots, err := optimizers.Apply(s.opt, params, grads, slots, step, lr)
	if err != nil {
		panic(err) // inside graph construction: Exec reports it as the step's error
	}
	for _, sl := range newSlots {
		newFlatSlots = append(newFlatSlots, sl...)
	}
	return norm, newParams, newFlatSlots
}

func (s *Stepper) compile() error {
	base, np, ns := len(s.model.Names), len(s.params), s.opt.NumSlots()
	var err error
	// One fused step: (weights, params, slots, rng, step, lr, tokens, targets, weights) →
	// (loss, grad norm, rng, params, slots).
	s.train, err = NewExec(s.model.Backend, func(in []*Node) []*Node {
		w := s.model.Weights(in[:base])
		params := in[base : base+np]
		flatSlots := in[base+np : base+np+np*ns]
		r := in[base+np+np*ns:]
		sum, weightSum, rng, grads := s.lossAndGrads(w, params, r[0], r[3], r[4], r[5])
		norm, newParams, newSlots := s.update(params, flatSlots, grads, weightSum, r[1], r[2])
		loss := Div(sum, Max(weightSum, ScalarOne(sum.Graph(), sum.DType())))
		return append(append([]*Node{loss, norm, rng}, newParams...), newSlots...)
	})
	if err != nil {
		return err
	}
	// Gradient accumulation: (weights, params, accumulated grads, rng, tokens, targets, weights) →
	// (loss sum, weight sum, rng, accumulated grads).
	s.accumulate, err = NewExec(s.model.Backend, func(in []*Node) []*Node {
		w := s.model.Weights(in[:base])
		params := in[base : base+np]
		acc := in[base+np : base+2*np]
		r := in[base+2*np:]
		sum, weightSum, rng, grads := s.lossAndGrads(w, params, r[0], r[1], r[2], r[3])
		for i := range grads {
			grads[i] = Add(acc[i], grads[i])
		}
		return append([]*Node{sum, weightSum, rng}, grads...)
	})
	if err != nil {
		return err
	}
	// (params, slots, accumulated grads, weight sum, step, lr) → (grad norm, params, slots).
	s.apply, err = NewExec(s.model.Backend, func(in []*Node) []*Node {
		params := in[:np]
		flatSlots := in[np : np+np*ns]
		grads := in[np+np*ns : 2*np+np*ns]
		r := in[2*np+np*ns:]
		norm, newParams, newSlots := s.update(params, flatSlots, grads, r[0], r[1], r[2])
		return append(append([]*Node{norm}, newParams...), newSlots...)
	})
	if err != nil {
		return err
	}
	s.eval, err = NewExec(s.model.Backend, func(in []*Node) []*Node {
		w := s.model.Weights(in[:base])
		params := in[base : base+np]
		tokens, targets, weights := in[base+np], in[base+np+1], in[base+np+2]
		cfg := &s.model.Config
		h := cfg.Hidden(w, tokens, ScalarZero(tokens.Graph(), dtypes.Int32), nil, s.set.Hook(params, nil))
		sum, weightSum := tokenLoss(w, cfg, h, targets, weights, lossChunkRows(cfg.VocabSize), false)
		return []*Node{sum, weightSum}
	})
	if err != nil {
		return err
	}
	s.metrics, err = NewExec(s.model.Backend, func(in []*Node) *Node {
		return adapterMetrics(s.set, in, s.opt.Q())
	})
	return err
}

func batchTensors(b Batch) []*tensors.Tensor {
	return []*tensors.Tensor{
		tensors.FromFlatDataAndDimensions(b.Inputs, b.B, b.T),
		tensors.FromFlatDataAndDimensions(b.Targets, b.B, b.T),
		tensors.FromFlatDataAndDimensions(b.Weights, b.B, b.T),
	}
}

// TrainStep runs one optimizer step at learning rate lr. With several micro-batches their gradients are summed
// first, so the step equals one on their concatenation (the loss is the mean over all their target tokens).
func (s *Stepper) TrainStep(micro []Batch, lr float64) (StepResult, error) {
	if len(micro) == 0 {
		return StepResult{}, fmt.Errorf("training step %d: no batch", s.step+1)
	}
	s.prev = &stepState{params: s.params, slots: cloneSlots(s.slots), rng: s.rng, step: s.step}
	step, rate := tensors.FromScalar(float32(s.step+1)), tensors.FromScalar(float32(lr))
	np, ns := len(s.params), s.opt.NumSlots()
	var r StepResult
	var rest []*tensors.Tensor
	if s.trainerKind == TrainerCPU {
		var err error
		if r, rest, err = s.cpuStep(micro, step, rate); err != nil {
			return r, fmt.Errorf("training step %d: %w", s.step+1, err)
		}
	} else if len(micro) == 1 {
		args := slices.Concat(s.params, flatten(s.slots), []*tensors.Tensor{s.rng, step, rate}, batchTensors(micro[0]))
		out, err := s.train.Exec(s.model.Args(args...)...)
		if err != nil {
			return r, fmt.Errorf("training step %d: %w", s.step+1, err)
		}
		r = StepResult{Loss: scalar(out[0]), GradNorm: scalar(out[1])}
		s.rng, rest = out[2], out[3:]
	} else {
		acc := make([]*tensors.Tensor, np)
		for i, p := range s.params {
			acc[i] = tensors.FromShape(p.Shape())
		}
		var sum, weight float64
		for _, b := range micro {
			args := slices.Concat(s.params, acc, []*tensors.Tensor{s.rng}, batchTensors(b))
			out, err := s.accumulate.Exec(s.model.Args(args...)...)
			if err != nil {
				return r, fmt.Errorf("training step %d: %w", s.step+1, err)
			}
			sum += scalar(out[0])
			weight += scalar(out[1])
			s.rng, acc = out[2], out[3:]
		}
		args := slices.Concat(s.params, flatten(s.slots), acc, []*tensors.Tensor{tensors.FromScalar(float32(weight)), step, rate})
		out, err := s.apply.Exec(tensorsAsArgs(args)...)
		if err != nil {
			return r, fmt.Errorf("training step %d: %w", s.step+1, err)
		}
		r = StepResult{Loss: sum / math.Max(weight, 1), GradNorm: scalar(out[0])}
		rest = out[1:]
	}
	s.params = slices.Clone(rest[:np])
	for i := range s.slots {
		s.slots[i] = slices.Clone(rest[np+i*ns : np+(i+1)*ns])
	}
	s.step++
	return r, nil
}

func cloneSlots(slots [][]*tensors.Tensor) [][]*tensors.Tensor {
	out := make([][]*tensors.Tensor, len(slots))
	for i, s := range slots {
		out[i] = slices.Clone(s)
	}
	return out
}

func flatten(slots [][]*tensors.Tensor) []*tensors.Tensor {
	var out []*tensors.Tensor
	for _, s := range slots {
		out = append(out, s...)
	}
	return out
}

// Eval returns the weighted mean loss over batches.
func (s *Stepper) Eval(batches []Batch) (float64, error) {
	var sum, weight float64
	for _, b := range batches {
		if s.trainerKind == TrainerCPU {
			bs, bw, err := s.cpuEval(b)
			if err != nil {
				return 0, fmt.Errorf("evaluation: %w", err)
			}
			sum += bs
			weight += bw
			continue
		}
		args := append(slices.Clone(s.params), batchTensors(b)...)
		out, err := s.eval.Exec(s.model.Args(args...)...)
		if err != nil {
			return 0, fmt.Errorf("evaluation: %w", err)
		}
		sum += scalar(out[0])
		weight += scalar(out[1])
	}
	if weight == 0 {
		return 0, fmt.Errorf("evaluation data has no target tokens")
	}
	return sum / weight, nil
}

func scalar(t *tensors.Tensor) float64 {
	switch v := t.Value().(type) {
	case float32:
		return float64(v)
	case float64:
		return v
	}
	return 0
}

// Rollback undoes the last TrainStep (parameters, optimizer state, random state and step count).
func (s *Stepper) Rollback() {
	if s.prev == nil {
		return
	}
	s.params, s.slots, s.rng, s.step = s.prev.params, s.prev.slots, s.prev.rng, s.prev.step
	s.prev = nil
}

// DiscardUpdate undoes the last TrainStep's update but counts its step: its batch is used up.
func (s *Stepper) DiscardUpdate() {
	s.Rollback()
	s.step++
}

// Step is the number of optimizer steps taken.
func (s *Stepper) Step() int { return s.step }

// Adapters returns the adapter set with the current factors.
func (s *Stepper) Adapters() (*lora.Set, error) {
	if err := s.set.SetTensors(s.params); err != nil {
		return nil, err
	}
	return s.set, nil
}

// Snapshot copies the trainable state out for a checkpoint (Base, Config and Runner are left to the caller).
func (s *Stepper) Snapshot() (*checkpoints.State, error) {
	set, err := s.Adapters()
	if err != nil {
		return nil, err
	}
	st := &checkpoints.State{Step: s.step, Optimizer: s.opt.Name(), Adapter: set}
	for _, group := range s.slots {
		var out []safetensors.Tensor
		for _, t := range group {
			data, err := tensors.CopyFlatData[float32](t)
			if err != nil {
				return nil, err
			}
			out = append(out, safetensors.Tensor{Shape: t.Shape().Dimensions, Data: data})
		}
		st.Slots = append(st.Slots, out)
	}
	rng, err := tensors.CopyFlatData[uint64](s.rng)
	if err != nil {
		return nil, err
	}
	st.RNG = rng
	return st, nil
}

// Restore loads a checkpoint's state, checking that it belongs to this adapter layout and optimizer.
func (s *Stepper) Restore(st *checkpoints.State) error {
	if st.Optimizer != s.opt.Name() {
		return fmt.Errorf("the checkpoint was trained with optimizer %q, this run uses %q", st.Optimizer, s.opt.Name())
	}
	if err := sameLayout(st.Adapter, s.set); err != nil {
		return fmt.Errorf("the checkpoint's adapters do not match this run: %w", err)
	}
	names := s.set.ParamNames()
	if len(st.Slots) != len(names) {
		return fmt.Errorf("the checkpoint has optimizer state for %d parameters, this run has %d", len(st.Slots), len(names))
	}
	for i := range s.set.Adapters {
		s.set.Adapters[i].Factors = st.Adapter.Adapters[i].Factors
	}
	s.params = s.set.Tensors()
	for i, group := range st.Slots {
		if len(group) != s.opt.NumSlots() {
			return fmt.Errorf("%s: the checkpoint has %d optimizer slots, %s needs %d", names[i], len(group), s.opt.Name(), s.opt.NumSlots())
		}
		s.slots[i] = s.slots[i][:0]
		for _, t := range group {
			if !slices.Equal(t.Shape, s.params[i].Shape().Dimensions) {
				return fmt.Errorf("%s: optimizer slot shape %v, parameter shape %v", names[i], t.Shape, s.params[i].Shape().Dimensions)
			}
			s.slots[i] = append(s.slots[i], tensors.FromFlatDataAndDimensions(slices.Clone(t.Data), t.Shape...))
		}
	}
	if len(st.RNG) != s.rng.Shape().Size() {
		return fmt.Errorf("the checkpoint's random state has %d words, want %d", len(st.RNG), s.rng.Shape().Size())
	}
	s.rng = tensors.FromFlatDataAndDimensions(slices.Clone(st.RNG), s.rng.Shape().Dimensions...)
	s.step = st.Step
	return nil
}

// sameLayout checks that two adapter sets have the same spec shape and modules.
func sameLayout(a, b *lora.Set) error {
	sa, sb := a.Spec, b.Spec
	switch {
	case sa.Rank != sb.Rank:
		return fmt.Errorf("rank %d vs %d", sa.Rank, sb.Rank)
	case sa.Depth != sb.Depth:
		return fmt.Errorf("depth %d vs %d", sa.Depth, sb.Depth)
	case sa.Scaling() != sb.Scaling():
		return fmt.Errorf("scale %g vs %g", sa.Scaling(), sb.Scaling())
	case len(a.Adapters) != len(b.Adapters):
		return fmt.Errorf("%d adapted modules vs %d", len(a.Adapters), len(b.Adapters))
	}
	for i := range a.Adapters {
		x, y := a.Adapters[i], b.Adapters[i]
		if x.Module != y.Module || x.In != y.In || x.Out != y.Out {
			return fmt.Errorf("module %s [%d×%d] vs %s [%d×%d]", x.Module, x.Out, x.In, y.Module, y.Out, y.In)
		}
	}
	return nil
}
