package lora

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/model"
)

// Adapter is the product adapter of one linear module W [Out, In]. Factors[0] is A [r, In], Factors[1..L−2] are the
// inner M_i [r, r], Factors[L−1] is B [Out, r]; ΔW = s·B·M_{L−2}⋯M_1·A. Data are row-major float32.
type Adapter struct {
	Module  string      `json:"module"`
	In      int         `json:"in"`
	Out     int         `json:"out"`
	Factors [][]float32 `json:"-"`
}

// Set is every adapter of a model under one Spec, sorted by module name.
type Set struct {
	Spec     Spec
	Adapters []*Adapter
}

// FactorShape is the [rows, cols] of factor i for an adapter of the given depth and rank.
func (a *Adapter) FactorShape(i, depth, rank int) []int {
	switch i {
	case 0:
		return []int{rank, a.In}
	case depth - 1:
		return []int{a.Out, rank}
	default:
		return []int{rank, rank}
	}
}

// FactorName is a stable name for factor i ("A", "M1", …, "B"), used in checkpoints and telemetry.
func FactorName(i, depth int) string {
	switch i {
	case 0:
		return "A"
	case depth - 1:
		return "B"
	default:
		return fmt.Sprintf("M%d", i)
	}
}

// Layout is a spec checked against a model: the modules it adapts and the init that fills them. Adapter sets are
// made from it without checking anything again.
type Layout struct {
	Spec     Spec
	adapters []*Adapter // without factors
	init     Init
}

// NewLayout checks spec and that it fits the model cfg: its layers exist, its targets match modules, and the rank
// does not exceed any adapted matrix's dimensions. Errors here are the user's settings, not the model's fault.
func NewLayout(cfg model.Config, spec Spec) (*Layout, error) {
	adapters, err := spec.modules(cfg)
	if err != nil {
		return nil, err
	}
	init, err := lookupInit(spec.Init)
	if err != nil {
		return nil, err
	}
	return &Layout{Spec: spec, adapters: adapters, init: init}, nil
}

// Modules lists the modules the layout adapts (Module, In and Out; no factors), sorted by module name.
func (l *Layout) Modules() []Adapter {
	out := make([]Adapter, len(l.adapters))
	for i, a := range l.adapters {
		out[i] = Adapter{Module: a.Module, In: a.In, Out: a.Out}
	}
	return out
}

// Attach creates a new adapter set with factors initialized by the spec's init and seed (the same values each
// call).
func (l *Layout) Attach() (*Set, error) {
	spec := l.Spec
	set := &Set{Spec: spec, Adapters: make([]*Adapter, len(l.adapters))}
	rng := rand.New(rand.NewPCG(spec.Seed, 0x10a))
	for k, m := range l.adapters {
		a := &Adapter{Module: m.Module, In: m.In, Out: m.Out, Factors: make([][]float32, spec.Depth)}
		for i := range a.Factors {
			s := a.FactorShape(i, spec.Depth, spec.Rank)
			a.Factors[i] = make([]float32, s[0]*s[1])
		}
		if err := l.init(rng, a, spec); err != nil {
			return nil, fmt.Errorf("init %q on %s: %w", spec.Init, a.Module, err)
		}
		set.Adapters[k] = a
	}
	return set, nil
}

// modules lists the adapters spec puts on cfg (without factors), sorted by module name.
func (s Spec) modules(cfg model.Config) ([]*Adapter, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	for _, l := range s.Layers {
		if l >= cfg.NumLayers {
			return nil, fmt.Errorf("adapter layer %d does not exist: the model has layers 0..%d", l, cfg.NumLayers-1)
		}
	}
	if s.Init == "orthogonal" && s.Rank%2 != 0 {
		return nil, fmt.Errorf("the orthogonal init needs an even rank, got %d", s.Rank)
	}
	var adapters []*Adapter
	for name, shape := range cfg.ExpectedShapes() {
		module, ok := strings.CutSuffix(name, ".weight")
		if !ok || len(shape) != 2 || !s.Matches(module) {
			continue
		}
		if s.Rank > min(shape[0], shape[1]) {
			return nil, fmt.Errorf("adapter rank %d exceeds the dimensions of %s [%d×%d]", s.Rank, module, shape[0], shape[1])
		}
		adapters = append(adapters, &Adapter{Module: module, Out: shape[0], In: shape[1]})
	}
	if len(adapters) == 0 {
		return nil, fmt.Errorf("adapter targets %v match no module of this model (modules are %v)", s.Targets, AllLinear)
	}
	slices.SortFunc(adapters, func(a, b *Adapter) int { return strings.Compare(a.Module, b.Module) })
	return adapters, nil
}

// Attach creates adapters on every module of cfg that spec matches and initializes them with spec.Init.
func Attach(cfg model.Config, spec Spec) (*Set, error) {
	l, err := NewLayout(cfg, spec)
	if err != nil {
		return nil, err
	}
	return l.Attach()
}

// NumParams counts the trainable adapter parameters.
func (s *Set) NumParams() int {
	n := 0
	for _, a := range s.Adapters {
		for _, f := range a.Factors {
			n += len(f)
		}
	}
	return n
}

// Tensors returns every factor as a tensor, adapter by adapter, factor by factor (the order Hook expects).
func (s *Set) Tensors() []*tensors.Tensor {
	var out []*tensors.Tensor
	for _, a := range s.Adapters {
		for i, f := range a.Factors {
			out = append(out, tensors.FromFlatDataAndDimensions(slices.Clone(f), a.FactorShape(i, s.Spec.Depth, s.Spec.Rank)...))
		}
	}
	return out
}

// ParamNames names Tensors' entries as "<module>.<factor>".
func (s *Set) ParamNames() []string {
	var out []string
	for _, a := range s.Adapters {
		for i := range a.Factors {
			out = append(out, a.Module+"."+FactorName(i, s.Spec.Depth))
		}
	}
	return out
}

// SetTensors copies trained values back into the factors (same order as Tensors).
func (s *Set) SetTensors(ts []*tensors.Tensor) error {
	k := 0
	for _, a := range s.Adapters {
		for i := range a.Factors {
			if k >= len(ts) {
				return fmt.Errorf("got %d adapter tensors, need more", len(ts))
			}
			data, err := tensors.CopyFlatData[float32](ts[k])
			if err != nil {
				return err
			}
			if len(data) != len(a.Factors[i]) {
				return fmt.Errorf("%s.%s: got %d values, want %d", a.Module, FactorName(i, s.Spec.Depth), len(data), len(a.Factors[i]))
			}
			copy(a.Factors[i], data)
			k++
		}
	}
	return nil
}

// Dropout describes adapter-input dropout in a training graph: RNG is the random state node, updated as the hook
// draws masks; nil disables dropout (evaluation, generation).
type Dropout struct {
	Rate float64
	RNG  *Node
}

// Hook returns the model hook that adds s·B⋯A·x to each adapted module. params are the factor nodes in Tensors order.
func (s *Set) Hook(params []*Node, dropout *Dropout) model.LinearHook {
	byModule := make(map[string][]*Node, len(s.Adapters))
	k := 0
	for _, a := range s.Adapters {
		byModule[a.Module] = params[k : k+len(a.Factors)]
		k += len(a.Factors)
	}
	scaling := s.Spec.Scaling()
	return func(module string, x, y *Node) *Node {
		factors, ok := byModule[module]
		if !ok {
			return y
		}
		dims := x.Shape().Dimensions
		h := Reshape(x, -1, dims[len(dims)-1])
		if dropout != nil && dropout.Rate > 0 {
			var u *Node
			dropout.RNG, u = RandomUniform(dropout.RNG, h.Shape())
			keep := GreaterOrEqual(u, Scalar(h.Graph(), h.DType(), dropout.Rate))
			h = Where(keep, DivScalar(h, 1-dropout.Rate), ZerosLike(h))
		}
		for _, f := range factors { // A, then M_1 … M_{L−2}, then B: each maps the previous result.
			h = factorProduct(h, f)
		}
		delta := Reshape(MulScalar(h, scaling), y.Shape().Dimensions...)
		return Add(y, delta)
	}
}

// factorProduct is h·Fᵀ for h [n, in] and a factor F [out, in], with its gradients written by hand so that the
// Go backend never transposes an operand with n rows when a smaller one will do: dh = dy·F, and dF is dyᵀ·h when
// out ≤ in (the A factor: dy [n, r] is the one transposed) but (hᵀ·dy)ᵀ when out > in (the B factor: h [n, r] is
// transposed and the small [r, out] result, instead of dy [n, out]). Autodiff would take dyᵀ·h for both and end
// each gradient in an identity transpose, which the backend runs as a copy.
func factorProduct(h, f *Node) *Node {
	var up *Node
	hIn := IdentityWithCustomGradient(h, func(_, _ *Node) *Node { return DotGeneral(up, []int{1}, nil, f, []int{0}, nil) })
	fIn := IdentityWithCustomGradient(f, func(_, _ *Node) *Node {
		out, in := f.Shape().Dimensions[0], f.Shape().Dimensions[1]
		if out <= in {
			return DotGeneral(up, []int{0}, nil, h, []int{0}, nil)
		}
		return Transpose(DotGeneral(h, []int{0}, nil, up, []int{0}, nil), 0, 1)
	})
	y := DotGeneral(hIn, []int{1}, nil, fIn, []int{1}, nil)
	return IdentityWithCustomGradient(y, func(_, v *Node) *Node {
		up = v
		return v
	})
}

// Product returns the unscaled factor product B·M_{L−2}⋯M_1·A [Out, In] in float64.
func (a *Adapter) Product(depth, rank int) []float64 {
	// Start from A and multiply on the left by each following factor.
	cur := toF64(a.Factors[0])
	for i := 1; i < depth; i++ {
		s := a.FactorShape(i, depth, rank)
		cur = matmul(toF64(a.Factors[i]), cur, s[0], s[1], a.In)
	}
	return cur
}

// DeltaW returns s·B⋯A [Out, In] in float64.
func (s *Set) DeltaW(a *Adapter) []float64 {
	p := a.Product(s.Spec.Depth, s.Spec.Rank)
	sc := s.Spec.Scaling()
	for i := range p {
		p[i] *= sc
	}
	return p
}

// Fold returns the rank-r pair (A [r, In], B' [Out, r]) with B' = B·M_{L−2}⋯M_1, so B'·A equals B⋯A exactly
// (in float64 before rounding to float32).
func (a *Adapter) Fold(depth, rank int) (A, B []float32) {
	if depth == 2 {
		return slices.Clone(a.Factors[0]), slices.Clone(a.Factors[1])
	}
	b := toF64(a.Factors[depth-1]) // [Out, r]
	for i := depth - 2; i >= 1; i-- {
		b = matmul(b, toF64(a.Factors[i]), a.Out, rank, rank)
	}
	return slices.Clone(a.Factors[0]), toF32(b)
}

// LowRank folds every adapter for the CPU decoder (model.CPUDecoder): module → scaling·B'·(A·x).
func (s *Set) LowRank() map[string]*model.LowRank {
	out := make(map[string]*model.LowRank, len(s.Adapters))
	for _, a := range s.Adapters {
		A, B := a.Fold(s.Spec.Depth, s.Spec.Rank)
		out[a.Module] = &model.LowRank{A: A, B: B, Rank: s.Spec.Rank, Scale: float32(s.Spec.Scaling()), In: a.In, Out: a.Out}
	}
	return out
}

func matmul(x, y []float64, n, k, m int) []float64 {
	out := make([]float64, n*m)
	for i := range n {
		for p := range k {
			v := x[i*k+p]
			if v == 0 {
				continue
			}
			row := y[p*m : (p+1)*m]
			o := out[i*m : (i+1)*m]
			for j := range m {
				o[j] += v * row[j]
			}
		}
	}
	return out
}

func toF64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

func toF32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// CheckFits verifies that every adapter targets a module of cfg with matching shape.
func (s *Set) CheckFits(cfg model.Config) error {
	shapes := cfg.ExpectedShapes()
	for _, a := range s.Adapters {
		shape, ok := shapes[a.Module+".weight"]
		if !ok || len(shape) != 2 {
			return fmt.Errorf("module %s does not exist in this model", a.Module)
		}
		if shape[0] != a.Out || shape[1] != a.In {
			return fmt.Errorf("module %s is [%d, %d] in this model but the adapter was made for [%d, %d]", a.Module, shape[0], shape[1], a.Out, a.In)
		}
	}
	return nil
}

// LayerOf returns the decoder layer index of a module path ("model.layers.3.mlp.up_proj" → 3), or -1.
func LayerOf(module string) int {
	rest, ok := strings.CutPrefix(module, "model.layers.")
	if !ok {
		return -1
	}
	digits, _, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 {
		return -1
	}
	return n
}
