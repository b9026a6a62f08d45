package finetune

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/model"
)

// The memory estimate, before any weight is loaded: what a training run (or generation) will need, by part, so a
// run that cannot fit stops with advice instead of being killed by the kernel, and so that each part can be
// checked against measured peak memory. The counts follow the decoder in model/llama.go and the step in step.go;
// they are rough by design (within tens of percent), and each constant below says what it stands for.

// MemoryEstimate is the peak memory a command is expected to need, in bytes, by part.
type MemoryEstimate struct {
	Weights     int64 `json:"weights"`     // the frozen base weights as held (file dtype, or a narrower --dtype)
	Adapters    int64 `json:"adapters"`    // adapter factors, gradients, optimizer slots, the previous step's copy (f32)
	Activations int64 `json:"activations"` // tensors kept for the backward pass (f32)
	PerLayer    int64 `json:"activations_per_layer"`
	KVCache     int64 `json:"kv_cache,omitempty"` // keys and values of every layer and position, when generating
	Transient   int64 `json:"transient"`          // one block's backward working set, recomputation, weight casts
	Loss        int64 `json:"loss"`               // logits, probabilities and their gradient for one chunk of tokens
	Overhead    int64 `json:"overhead"`           // the Go runtime, tokenizer, data, graphs
	Total       int64 `json:"total"`
}

// WeightStorage is what the estimate knows of the weights on disk: each weight's storage dtype by HF name
// ("F32", "BF16", "F16", "Q8_0"), and the dtype of weights the map does not list.
type WeightStorage struct {
	DTypes  map[string]string
	Default string
}

// memoryOverhead is the fixed part: the Go runtime and binary, a large tokenizer, the data, compiled graphs (a
// stories260K run peaks at about 130 MB in all).
const memoryOverhead = 256 << 20

// gcSlack is the garbage the Go runtime lets accumulate above live bytes before it collects: the Go backend's
// tensors are Go memory and saddle runs it with GOGC=10 (backend.GoGCPercent), so up to a tenth of them. Without it
// the estimate of a Llama-3.1-8B run (20.10 GB) was well under its measured peak (22.98 GB).
func gcSlack(live int64) int64 { return live / 10 }

// lossChunk is how many tokens' logits the loss holds at once (the chunked loss; the estimate's assumption).
const lossChunk = 128

const f32Bytes = 4

// computeBytes is the element size of a --dtype compute type; "auto" (and "") counts as f32.
func computeBytes(compute string) int64 {
	switch strings.ToLower(compute) {
	case "bf16", "f16":
		return 2
	}
	return f32Bytes
}

// heldBytes is the element size of a weight stored as storage and computed in compute: weights stay in their
// file's dtype, narrowed to a 2-byte compute type; a quantized dtype counts as the 2-byte float type it is
// expanded to where the backend cannot use it.
func heldBytes(storage, compute string) int64 {
	switch up := strings.ToUpper(storage); {
	case up == dtype.BF16 || up == dtype.F16 || dtype.Quantized(up):
		return 2
	}
	return min(f32Bytes, computeBytes(compute))
}

// weightBytes sums the model's weights as held, and the largest matrix's bytes in the compute type where a cast
// to it is wider than what is held (a transient copy the matmul needs).
func weightBytes(m model.Config, s WeightStorage, compute string) (held, cast int64, err error) {
	for name, shape := range m.ExpectedShapes() {
		n, err := dtype.Elements(shape)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		storage := s.DTypes[name]
		if storage == "" {
			storage = s.Default
		}
		size := heldBytes(storage, compute)
		held += n * size
		if c := computeBytes(compute); c > size && len(shape) == 2 {
			if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
				n = min(n, int64(model.HeadBlockElements)) // the loss converts the head a block at a time (blockedHead)
			}
			cast = max(cast, n*c)
		}
	}
	return held, cast, nil
}

// trainShape is what the training estimate depends on besides the model.
type trainShape struct {
	batch, seq     int
	gradCheckpoint bool
	compute        string
	backend        string // the backend's configuration, e.g. "go:ops_sequential"
	slots          int    // optimizer slots per parameter
	accumulate     bool
	rank, depth    int
	dropout        bool
	modules        []adapterModule
	trainer        string // the trainer setting
	cpuModules     bool   // every adapted module is one the CPU trainer trains
}

type adapterModule struct{ in, out int }

func planShape(p *Plan, m model.Config) trainShape {
	c := p.Config
	t := trainShape{batch: c.BatchSize, seq: c.SeqLen, gradCheckpoint: c.GradCheckpoint, compute: c.DType,
		backend: c.Backend, slots: p.Opt.NumSlots(), accumulate: c.GradAccum > 1, rank: c.Adapter.Rank, depth: c.Adapter.Depth,
		dropout: c.Adapter.Dropout > 0}
	t.trainer, t.cpuModules = c.Trainer, true
	for _, a := range p.Adapters.Modules() {
		t.modules = append(t.modules, adapterModule{a.In, a.Out})
		t.cpuModules = t.cpuModules && m.CPUTrainable(a.Module)
	}
	return t
}

// cpuTrainer says whether the run will train on the CPU trainer: trainer cpu, or auto on the Go backend computing
// in f32 with nothing only the graph does (Stepper.resolveTrainer decides the same once the model is loaded).
func (t trainShape) cpuTrainer() bool {
	switch t.trainer {
	case TrainerCPU:
		return true
	case "", TrainerAuto:
		goBackend := t.backend == "" || strings.HasPrefix(t.backend, "go")
		f32 := t.compute == "" || t.compute == model.ComputeAuto || t.compute == "f32"
		return goBackend && f32 && !t.dropout && !t.gradCheckpoint && t.cpuModules
	}
	return false
}

// EstimateTraining estimates the peak memory of the run p on the model m whose weights are stored as s.
func EstimateTraining(p *Plan, m model.Config, s WeightStorage) (MemoryEstimate, error) {
	return estimateTraining(planShape(p, m), m, s)
}

func estimateTraining(t trainShape, m model.Config, s WeightStorage) (MemoryEstimate, error) {
	var e MemoryEstimate
	var cast int64
	var err error
	if e.Weights, cast, err = weightBytes(m, s, t.compute); err != nil {
		return e, err
	}
	// Adapters: the factors, their gradient, the optimizer's slots, and the factors and slots of the step before
	// (kept for a rollback), plus an accumulated gradient with micro-batches; all f32.
	var params int64
	for _, a := range t.modules {
		params += int64(t.rank)*int64(a.in+a.out) + int64(t.depth-2)*int64(t.rank)*int64(t.rank)
	}
	copies := int64(2*(1+t.slots) + 1)
	if t.accumulate {
		copies++
	}
	e.Adapters = params * copies * f32Bytes

	if t.cpuTrainer() {
		return estimateCPUTraining(t, m, e, params)
	}
	// Activations of one micro-batch of N tokens, in f32 elements.
	B, T := int64(t.batch), int64(t.seq)
	N, H, F := B*T, int64(m.HiddenSize), int64(m.IntermediateSize)
	qd, kvd := int64(m.NumHeads*m.HeadDim), int64(m.NumKVHeads*m.HeadDim)
	layer := 4 * N * H            // block input, attention norm output, mid-block residual, MLP norm output
	layer += 2 * N * (qd + 2*kvd) // q, k, v projections and their rotated, regrouped copies
	layer += 2 * N * qd           // attention output, before and after the head transpose
	if m.QKNorm {
		layer += N * (qd + kvd) // q and k before their norm
	}
	layer += 5 * N * F               // MLP gate, up, sigmoid(gate), silu, silu·up
	probs := attentionProbs(m, B, T) // softmax probabilities, kept for the backward
	layer += probs
	var adapterAct int64 // x·A and the inner products per adapted module, and the dropped-out input
	for _, a := range t.modules {
		adapterAct += N * int64(t.rank) * int64(t.depth-1)
		if t.dropout {
			adapterAct += N * int64(a.in)
		}
	}
	L := int64(m.NumLayers)
	layer += adapterAct / L
	e.PerLayer = layer * f32Bytes
	outside := 3 * N * H // embedding output, final norm input and output
	// The backward of one block: probability and score gradients, and the MLP's widest gradients.
	backward := 2*probs + 2*N*F
	if t.gradCheckpoint {
		// Only each block's input is kept; one block at a time is recomputed in full for its backward.
		e.Activations = (L*N*H + outside) * f32Bytes
		e.Transient = (layer + backward) * f32Bytes
	} else {
		e.Activations = (L*layer + outside) * f32Bytes
		e.Transient = backward * f32Bytes
	}
	e.Transient += cast
	e.Loss = min(N, lossChunk) * int64(m.VocabSize) * f32Bytes * 3
	e.Overhead = memoryOverhead + gcSlack(e.Weights+e.Adapters+e.Activations+e.Transient+e.Loss)
	e.Total = e.Weights + e.Adapters + e.Activations + e.Transient + e.Loss + e.Overhead
	return e, nil
}

// attentionProbs counts the softmax probabilities of one layer: per head, each query chunk against the keys up to
// its end (model/llama.go's causal chunks: up to 8 chunks of at least 64 queries from 128 tokens on).
func attentionProbs(m model.Config, B, T int64) int64 {
	chunks := int64(1)
	if T >= 128 {
		chunks = min(8, T/64)
	}
	size := (T + chunks - 1) / chunks
	var keys int64 // Σ over chunks of rows × keys
	for lo := int64(0); lo < T; lo += size {
		hi := min(lo+size, T)
		keys += (hi - lo) * hi
	}
	return B * int64(m.NumHeads) * keys
}

// EstimateGeneration estimates the peak memory of decoding up to capacity positions with the model m whose
// weights are stored as s, in the compute type compute.
func EstimateGeneration(m model.Config, s WeightStorage, compute string, capacity int) (MemoryEstimate, error) {
	var e MemoryEstimate
	var cast int64
	var err error
	if e.Weights, cast, err = weightBytes(m, s, compute); err != nil {
		return e, err
	}
	// The KV cache: keys and values of every layer for every position, f32.
	e.KVCache = 2 * int64(m.NumLayers) * int64(m.NumKVHeads*m.HeadDim) * int64(capacity) * f32Bytes
	// Prefill of the prompt: one layer's attention scores and MLP activations, at most capacity tokens.
	N := int64(capacity)
	e.Transient = cast + (int64(m.NumHeads)*N*N+3*N*int64(m.IntermediateSize))*f32Bytes
	e.Loss = min(N, lossChunk) * int64(m.VocabSize) * f32Bytes * 2
	e.Overhead = memoryOverhead + gcSlack(e.Weights+e.KVCache+e.Transient+e.Loss)
	e.Total = e.Weights + e.KVCache + e.Transient + e.Loss + e.Overhead
	return e, nil
}

// FormatBytes writes a byte count for people: decimal GB with two decimals from 1 GB on, else MB or kB.
func FormatBytes(bytes int64) string {
	switch v := float64(bytes); {
	case v >= 1e9:
		return strconv.FormatFloat(v/1e9, 'f', 2, 64) + " GB"
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + " MB"
	default:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + " kB"
	}
}

// String is the estimate on one line: the total, then its parts.
func (e MemoryEstimate) String() string { return FormatBytes(e.Total) + " (" + e.Parts() + ")" }

// Parts lists the parts that are not zero, in the order of MemoryEstimate.
func (e MemoryEstimate) Parts() string {
	var parts []string
	for _, p := range []struct {
		name  string
		bytes int64
	}{{"weights", e.Weights}, {"adapters", e.Adapters}, {"activations", e.Activations}, {"KV cache", e.KVCache},
		{"transient", e.Transient}, {"loss", e.Loss}, {"overhead", e.Overhead}} {
		if p.bytes == 0 {
			continue
		}
		part := p.name + " " + FormatBytes(p.bytes)
		if p.name == "activations" && e.PerLayer > 0 {
			part += " [" + FormatBytes(e.PerLayer) + " per layer]"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}

// Available is the memory this process may use: the smaller of its cgroup's limit and the kernel's MemAvailable.
type Available struct {
	Bytes  int64
	Source string // which limit it is: "MemAvailable", "cgroup memory.max", ...
}

// AvailableMemory reads the memory available on this machine; ok is false where it cannot tell (not Linux).
func AvailableMemory() (Available, bool) { return availableMemory("/") }

// availableMemory reads /proc and /sys/fs/cgroup under root.
func availableMemory(root string) (Available, bool) {
	var best Available
	consider := func(bytes int64, source string) {
		if bytes > 0 && (best.Bytes == 0 || bytes < best.Bytes) {
			best = Available{Bytes: bytes, Source: source}
		}
	}
	if v, ok := memAvailable(filepath.Join(root, "proc", "meminfo")); ok {
		consider(v, "MemAvailable")
	}
	cgroups := filepath.Join(root, "sys", "fs", "cgroup")
	for _, dir := range cgroupDirs(filepath.Join(root, "proc", "self", "cgroup")) {
		// cgroup v2 (one hierarchy), then v1's memory controller; every ancestor's limit applies too.
		for _, f := range []struct{ base, file string }{{cgroups, "memory.max"}, {filepath.Join(cgroups, "memory"), "memory.limit_in_bytes"}} {
			for d := dir; ; d = filepath.Dir(d) {
				if v, ok := readLimit(filepath.Join(f.base, d, f.file)); ok {
					consider(v, "cgroup "+f.file)
				}
				if d == "/" || d == "." {
					break
				}
			}
		}
	}
	return best, best.Bytes > 0
}

// cgroupDirs lists this process's cgroup paths from /proc/self/cgroup ("/" when it cannot be read).
func cgroupDirs(file string) []string {
	dirs := []string{"/"}
	data, err := os.ReadFile(file)
	if err != nil {
		return dirs
	}
	for _, line := range strings.Split(string(data), "\n") {
		// "0::/user.slice" (v2) or "4:memory:/docker/abc" (v1)
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !(parts[1] == "" || slices.Contains(strings.Split(parts[1], ","), "memory")) {
			continue
		}
		if d := filepath.Clean("/" + parts[2]); !slices.Contains(dirs, d) && !strings.Contains(parts[2], "..") {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// readLimit reads a cgroup memory limit; "max" and v1's near-2⁶³ "unlimited" are no limit.
func readLimit(file string) (int64, bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || v <= 0 || v >= 1<<60 {
		return 0, false
	}
	return v, true
}

// PeakRSS is this process's peak resident memory in bytes (VmHWM), or 0 where it cannot be read (not Linux).
func PeakRSS() int64 {
	v, _ := procKB("/proc/self/status", "VmHWM:")
	return v
}

func memAvailable(file string) (int64, bool) { return procKB(file, "MemAvailable:") }

// procKB reads a "Key:   123 kB" line of a /proc file, in bytes.
func procKB(file, key string) (int64, bool) {
	f, err := os.Open(file)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == key {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil || kb <= 0 {
				return 0, false
			}
			return kb << 10, true
		}
	}
	return 0, false
}

// memoryMargin: a run is refused when its estimate exceeds the available memory by more than this factor.
const memoryMargin = 1.1

// Fix is a change of settings that would make a run fit, with the estimate it would have.
type Fix struct {
	Changes []Change
	Total   int64
}

// Change sets one setting, named by its config key ("batch_size", "seq_len", "grad_checkpoint", "dtype").
type Change struct{ Setting, Value string }

// MemoryError refuses a run whose estimate clearly exceeds the available memory. It names settings by their config
// keys; Message names them as a front end does.
type MemoryError struct {
	Estimate  MemoryEstimate
	Available Available
	// Fixes are single changes that would each fit; when none does, the smallest settings together if they fit.
	Fixes    []Fix
	Smallest Fix // the smallest settings together (batch size 1, gradient checkpointing, a 2-byte dtype)
}

func (e *MemoryError) Error() string { return e.Message(func(s string) string { return s }) }

// Message is the error with each setting named by name(config key).
func (e *MemoryError) Message(name func(setting string) string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "this run needs about %s of memory (%s), more than the %s available (%s)",
		FormatBytes(e.Estimate.Total), e.Estimate.Parts(), FormatBytes(e.Available.Bytes), e.Available.Source)
	switch {
	case len(e.Fixes) == 0 && len(e.Smallest.Changes) == 0:
		b.WriteString("; no setting this run may change makes it smaller: use a smaller model or a machine with more memory")
		return b.String()
	case len(e.Fixes) == 0:
		fmt.Fprintf(&b, "; even with%s it would need about %s: use a smaller model or a machine with more memory",
			e.Smallest.text(name), FormatBytes(e.Smallest.Total))
		return b.String()
	}
	b.WriteString("; what would fit:")
	for i, f := range e.Fixes {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s (about %s)", f.text(name), FormatBytes(f.Total))
	}
	return b.String()
}

// text lists the changes as " name value" each (" name" alone for a switch turned on).
func (f Fix) text(name func(string) string) string {
	var b strings.Builder
	for _, c := range f.Changes {
		b.WriteString(" " + name(c.Setting))
		if c.Value != "true" {
			b.WriteString(" " + c.Value)
		}
	}
	return b.String()
}

// CheckMemory refuses (with a *MemoryError) a run whose estimate e exceeds the available memory by more than 10%,
// finding which change of batch size, sequence length, gradient checkpointing or dtype would fit. may says which
// settings may change (by config key; nil: all of them), as a resumed run may change only some.
func CheckMemory(p *Plan, m model.Config, s WeightStorage, e MemoryEstimate, avail Available, may func(setting string) bool) error {
	return checkMemory(planShape(p, m), m, s, e, avail, may)
}

// Exceeds reports whether the estimate clearly exceeds the available memory (by more than 10%; the estimate is
// rough, and a run that may just fit is tried). Unknown memory is never exceeded.
func (e MemoryEstimate) Exceeds(avail Available) bool {
	return avail.Bytes > 0 && float64(e.Total) > float64(avail.Bytes)*memoryMargin
}

func checkMemory(t trainShape, m model.Config, s WeightStorage, e MemoryEstimate, avail Available, may func(string) bool) error {
	if !e.Exceeds(avail) {
		return nil
	}
	if may == nil {
		may = func(string) bool { return true }
	}
	me := &MemoryError{Estimate: e, Available: avail}
	total := func(changes []Change) int64 {
		u := t
		for _, c := range changes {
			switch c.Setting {
			case "batch_size":
				u.batch, _ = strconv.Atoi(c.Value)
			case "seq_len":
				u.seq, _ = strconv.Atoi(c.Value)
			case "grad_checkpoint":
				u.gradCheckpoint = true
			case "dtype":
				u.compute = c.Value
			}
		}
		est, err := estimateTraining(u, m, s)
		if err != nil {
			return math.MaxInt64
		}
		return est.Total
	}
	// try keeps changes as a fix when they may be made and the run fits with them.
	try := func(changes ...Change) {
		for _, c := range changes {
			if !may(c.Setting) {
				return
			}
		}
		if v := total(changes); v <= avail.Bytes {
			me.Fixes = append(me.Fixes, Fix{Changes: changes, Total: v})
		}
	}
	// largest is the largest size below current that fits, or 0 (the estimate grows with each size).
	largest := func(setting string, current int) int {
		lo, hi := 0, current // lo: the largest known to fit (0: none), hi: the smallest known not to
		for hi-lo > 1 {
			if mid := (lo + hi) / 2; total([]Change{{setting, strconv.Itoa(mid)}}) <= avail.Bytes {
				lo = mid
			} else {
				hi = mid
			}
		}
		return lo
	}
	if b := largest("batch_size", t.batch); b >= 1 {
		try(Change{"batch_size", strconv.Itoa(b)})
	}
	if v := largest("seq_len", t.seq); v >= 2 {
		if v >= 128 {
			v -= v % 64 // a round length
		}
		try(Change{"seq_len", strconv.Itoa(v)})
	}
	if !t.gradCheckpoint {
		try(Change{"grad_checkpoint", "true"})
	}
	// A 2-byte compute type narrows f32 weights (bf16 weights stay as they are, and save only their cast). The Go
	// backend refuses one (model.ResolveCompute): its half-precision matmuls are wrong at real sizes.
	narrower := computeBytes(t.compute) > 2 && !strings.HasPrefix(t.backend, "go")
	if f32, _, err := weightBytes(m, s, t.compute); err == nil && narrower {
		if bf16, _, err := weightBytes(m, s, "bf16"); err == nil && bf16 < f32 {
			try(Change{"dtype", "bf16"})
		}
	}
	var smallest []Change
	for _, c := range []struct {
		change Change
		useful bool
	}{{Change{"batch_size", "1"}, true}, {Change{"grad_checkpoint", "true"}, !t.gradCheckpoint}, {Change{"dtype", "bf16"}, narrower}} {
		if c.useful && may(c.change.Setting) {
			smallest = append(smallest, c.change)
		}
	}
	me.Smallest = Fix{Changes: smallest, Total: total(smallest)}
	if len(me.Fixes) == 0 {
		try(smallest...)
	}
	return me
}

// estimateCPUTraining is the estimate for the CPU trainer (model.CPUTrainer, lora.CPUAdapters), whose buffers are
// allocated once for the batch shape: e holds the weights and the adapters' graph-side copies already. The CPU
// trainer reads the weights in their storage dtype (no cast) and keeps per layer, for N tokens, the layer's input and
// mid-block residual [N, hidden], two inverse RMS per token, q, k, v and the attention output, the MLP's gate and up
// projections, with q/k norms also q and k before the norm and their inverse RMS, and each layer's attention
// probabilities when all layers' fit in model.CPUTrainProbsBytes. params is the adapters' parameter count.
func estimateCPUTraining(t trainShape, m model.Config, e MemoryEstimate, params int64) (MemoryEstimate, error) {
	B, T := int64(t.batch), int64(t.seq)
	N, H, F := B*T, int64(m.HiddenSize), int64(m.IntermediateSize)
	heads, kvHeads := int64(m.NumHeads), int64(m.NumKVHeads)
	qd, kvd := heads*int64(m.HeadDim), kvHeads*int64(m.HeadDim)
	L := int64(m.NumLayers)
	layer := N*(2*H+2) + N*(2*qd+2*kvd) + 2*N*F
	if m.QKNorm {
		layer += N * (qd + kvd + heads + kvHeads)
	}
	probs := B * heads * T * T
	if probs*f32Bytes*L <= model.CPUTrainProbsBytes {
		layer += probs
	}
	e.PerLayer = layer * f32Bytes
	e.Activations = L * e.PerLayer
	// Shared by the layers: the final block's output and norm, the hidden-size gradients and scratch (4·N·H), the
	// attention gradients (4·N·qDim + 2·N·kvDim), the MLP's (2·N·F), the RoPE tables, the per-row losses (float64)
	// and each worker's attention block (2 blocks of up to 64 queries × seq).
	workers := int64(runtime.GOMAXPROCS(0))
	shared := 4*N*H + N + 4*N*qd + 2*N*kvd + 2*N*F + T*int64(m.HeadDim) + 2*N + workers*2*min(64, T)*T
	// The adapters' CPU form: a copy of the factors, their gradients, and each module's intermediate products.
	inner := int64(len(t.modules)) * N * int64(t.rank) * int64(t.depth-1)
	e.Adapters += 2 * params * f32Bytes
	e.Transient = (shared + inner) * f32Bytes
	chunk := int64(model.CPUTrainLossRows(int(N), m.VocabSize))
	e.Loss = (chunk*int64(m.VocabSize) + 2*chunk*H) * f32Bytes
	e.Overhead = memoryOverhead + gcSlack(e.Weights+e.Adapters+e.Activations+e.Transient+e.Loss)
	e.Total = e.Weights + e.Adapters + e.Activations + e.Transient + e.Loss + e.Overhead
	return e, nil
}
