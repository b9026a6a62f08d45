package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/compute/dtypes/float16"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/dtype"
)

// Model is a loaded decoder on a backend: its configuration and frozen weights as backend tensors. Graphs take the
// weights as their leading inputs (in Names order) so one compiled graph serves every call.
type Model struct {
	Config  Config
	Backend compute.Backend
	Names   []string
	Params  []*tensors.Tensor // in their storage dtype: the file's for matrices (see storageDType), DType for vectors
	DType   dtypes.DType      // of the activations: Float32 normally, Float64 for exactness checks
	// Compute is the dtype the frozen matrices' matmuls take their inputs in (Float32, BFloat16 or Float16; DType
	// with Float64); ComputeName is its --dtype name. Matmuls accumulate in float32 whatever it is.
	Compute     dtypes.DType
	ComputeName string
}

// New builds the model on backend with the compute type "auto" (see ResolveCompute).
func New(backend compute.Backend, p *Pretrained) (*Model, error) {
	return NewWithCompute(backend, p, ComputeAuto)
}

// NewWithDType is New with the weights and activations held as dtype: Float32 (weights in float32 whatever
// their file's dtype) or Float64, for exactness checks.
func NewWithDType(backend compute.Backend, p *Pretrained, dtype dtypes.DType) (*Model, error) {
	if dtype != dtypes.Float32 && dtype != dtypes.Float64 {
		return nil, fmt.Errorf("model dtype %s is not supported (use float32 or float64)", dtype)
	}
	return newModel(backend, p, dtype, dtype, ComputeF32)
}

// NewWithCompute builds the model with float32 activations and the given compute type for the frozen base
// ("auto", "f32", "bf16" or "f16"). Weights stay in their file's dtype where the compute type allows.
func NewWithCompute(backend compute.Backend, p *Pretrained, computeName string) (*Model, error) {
	name, err := ResolveCompute(backend, computeName)
	if err != nil {
		return nil, fmt.Errorf("dtype %w", err)
	}
	return newModel(backend, p, dtypes.Float32, computeDType(name), name)
}

func newModel(backend compute.Backend, p *Pretrained, activation, computeDT dtypes.DType, computeName string) (*Model, error) {
	if err := p.Config.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path, err)
	}
	expected := p.Config.ExpectedShapes()
	for name, shape := range expected {
		got := p.Shape(name)
		if got == nil {
			return nil, fmt.Errorf("%s: missing tensor %q", p.Path, name)
		}
		if !slices.Equal(got, shape) {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, config expects %v", p.Path, name, got, shape)
		}
	}
	m := &Model{Config: p.Config, Backend: backend, DType: activation, Compute: computeDT, ComputeName: computeName}
	if activation == dtypes.Float64 {
		m.Compute = dtypes.Float64
	}
	for name := range expected {
		m.Names = append(m.Names, name)
	}
	slices.Sort(m.Names)
	for _, name := range m.Names {
		fileDType := dtype.F32
		if p.Weights[name] == nil {
			fileDType = p.DTypes[name]
		}
		t, err := p.weightTensor(backend, name, storageDType(fileDType, len(expected[name]), activation, m.Compute))
		if err != nil {
			m.Finalize()
			return nil, err
		}
		m.Params = append(m.Params, t)
	}
	return m, nil
}

// Finalize frees the weights' backend memory.
func (m *Model) Finalize() {
	for _, t := range m.Params {
		_ = t.FinalizeAll()
	}
	m.Params = nil
}

// FrobeniusNorm returns ‖W‖_F of a weight, whatever dtype it is held in.
func (m *Model) FrobeniusNorm(name string) (float64, error) {
	i, ok := slices.BinarySearch(m.Names, name)
	if !ok {
		return 0, fmt.Errorf("no base weight %s", name)
	}
	t := m.Params[i]
	var sum float64
	err := t.ConstBytes(func(b []byte) {
		switch t.DType() {
		case dtypes.Float64:
			for k := 0; k+8 <= len(b); k += 8 {
				v := math.Float64frombits(binary.LittleEndian.Uint64(b[k:]))
				sum += v * v
			}
		case dtypes.Float32:
			for k := 0; k+4 <= len(b); k += 4 {
				v := float64(math.Float32frombits(binary.LittleEndian.Uint32(b[k:])))
				sum += v * v
			}
		case dtypes.BFloat16:
			for k := 0; k+2 <= len(b); k += 2 {
				v := float64(bfloat16.BFloat16(binary.LittleEndian.Uint16(b[k:])).Float32())
				sum += v * v
			}
		case dtypes.Float16:
			for k := 0; k+2 <= len(b); k += 2 {
				v := float64(float16.Float16(binary.LittleEndian.Uint16(b[k:])).Float32())
				sum += v * v
			}
		}
	})
	return math.Sqrt(sum), err
}

// WeightBytes is the memory the weights take in their storage dtypes.
func (m *Model) WeightBytes() int64 {
	var n int64
	for _, t := range m.Params {
		n += int64(t.Shape().ByteSize())
	}
	return n
}

// Weights maps the leading len(m.Names) graph inputs to their parameter names.
func (m *Model) Weights(inputs []*Node) Weights {
	w := Weights{Nodes: make(map[string]*Node, len(m.Names)), Compute: m.Compute}
	for i, name := range m.Names {
		w.Nodes[name] = inputs[i]
	}
	return w
}

// Validate checks that the configuration describes a model this package can run.
func (c *Config) Validate() error {
	switch {
	case c.HiddenSize <= 0 || c.NumLayers <= 0 || c.NumHeads <= 0 || c.NumKVHeads <= 0 || c.HeadDim <= 0 ||
		c.VocabSize <= 0 || c.IntermediateSize <= 0:
		return fmt.Errorf("config has non-positive sizes: %+v", *c)
	case c.NumHeads%c.NumKVHeads != 0:
		return fmt.Errorf("config: %d attention heads are not a multiple of %d key/value heads", c.NumHeads, c.NumKVHeads)
	case c.HeadDim%2 != 0:
		return fmt.Errorf("config: head_dim %d must be even for rotary embeddings", c.HeadDim)
	case c.RopeTheta <= 0:
		return fmt.Errorf("config: rope_theta %g must be positive", c.RopeTheta)
	}
	return nil
}

// ExpectedShapes lists every parameter the architecture needs, with its HF-layout shape.
func (c *Config) ExpectedShapes() map[string][]int {
	d, q, kv := c.HiddenSize, c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim
	s := map[string][]int{
		"model.embed_tokens.weight": {c.VocabSize, d},
		"model.norm.weight":         {d},
	}
	if !c.TieEmbeddings {
		s["lm_head.weight"] = []int{c.VocabSize, d}
	}
	for l := range c.NumLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		s[p+"input_layernorm.weight"] = []int{d}
		s[p+"post_attention_layernorm.weight"] = []int{d}
		s[p+"self_attn.q_proj.weight"] = []int{q, d}
		s[p+"self_attn.k_proj.weight"] = []int{kv, d}
		s[p+"self_attn.v_proj.weight"] = []int{kv, d}
		s[p+"self_attn.o_proj.weight"] = []int{d, q}
		s[p+"mlp.gate_proj.weight"] = []int{c.IntermediateSize, d}
		s[p+"mlp.up_proj.weight"] = []int{c.IntermediateSize, d}
		s[p+"mlp.down_proj.weight"] = []int{d, c.IntermediateSize}
		if c.AttentionBias {
			s[p+"self_attn.q_proj.bias"] = []int{q}
			s[p+"self_attn.k_proj.bias"] = []int{kv}
			s[p+"self_attn.v_proj.bias"] = []int{kv}
		}
		if c.QKNorm {
			s[p+"self_attn.q_norm.weight"] = []int{c.HeadDim}
			s[p+"self_attn.k_norm.weight"] = []int{c.HeadDim}
		}
	}
	return s
}

// NumParameters counts the base model's parameters.
func (c *Config) NumParameters() int {
	n := 0
	for _, shape := range c.ExpectedShapes() {
		size := 1
		for _, d := range shape {
			size *= d
		}
		n += size
	}
	return n
}

func shapeInt32(dims ...int) shapes.Shape { return shapes.Make(dtypes.Int32, dims...) }

// LogitsExec returns an executor of the full-sequence forward pass: inputs (weights..., extra..., tokens
// [batch, seq] int32), output logits [batch, seq, vocab]. hook and extra add an adapter as in NewDecoder.
// Use it for scoring; generation uses a Decoder.
func (m *Model) LogitsExec(hook func(extra []*Node) LinearHook, numExtra int) (*Exec, error) {
	n := len(m.Names)
	return NewExec(m.Backend, func(inputs []*Node) *Node {
		w := m.Weights(inputs[:n])
		var h LinearHook
		if hook != nil {
			h = hook(inputs[n : n+numExtra])
		}
		tokens := inputs[n+numExtra]
		logits, _ := m.Config.Forward(w, tokens, ScalarZero(tokens.Graph(), dtypes.Int32), nil, h)
		return logits
	})
}

// Logits runs the full-sequence forward pass once on tokens (one sequence) and returns logits [seq][vocab].
func (m *Model) Logits(tokens []int32) ([][]float32, error) { return m.LogitsWith(tokens, nil, nil) }

// LogitsWith is Logits with an adapter hook (see NewDecoder).
func (m *Model) LogitsWith(tokens []int32, hook func(extra []*Node) LinearHook, extra []*tensors.Tensor) ([][]float32, error) {
	exec, err := m.LogitsExec(hook, len(extra))
	if err != nil {
		return nil, err
	}
	defer exec.Finalize()
	out, err := exec.Exec(m.Args(append(slices.Clone(extra), tensors.FromFlatDataAndDimensions(tokens, 1, len(tokens)))...)...)
	if err != nil {
		return nil, err
	}
	return splitRows(out[0], len(tokens), m.Config.VocabSize)
}

// Args lists the weights followed by extra as Exec arguments.
func (m *Model) Args(extra ...*tensors.Tensor) []any {
	args := make([]any, 0, len(m.Params)+len(extra))
	for _, t := range m.Params {
		args = append(args, t)
	}
	for _, t := range extra {
		args = append(args, t)
	}
	return args
}

// toFloat32 copies a float32 or float64 tensor out as float32 values.
func toFloat32(t *tensors.Tensor) ([]float32, error) {
	if t.DType() == dtypes.Float64 {
		wide, err := tensors.CopyFlatData[float64](t)
		if err != nil {
			return nil, err
		}
		out := make([]float32, len(wide))
		for i, v := range wide {
			out[i] = float32(v)
		}
		return out, nil
	}
	return tensors.CopyFlatData[float32](t)
}

func splitRows(t *tensors.Tensor, rows, cols int) ([][]float32, error) {
	flat, err := toFloat32(t)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, rows)
	for i := range out {
		out[i] = flat[i*cols : (i+1)*cols]
	}
	return out, nil
}
