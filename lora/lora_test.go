package lora

import (
	"math"
	"slices"
	"testing"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/internal/testbackend"
	"github.com/saddle-ml/saddle/model"
)

func tinyConfig() model.Config {
	return model.Config{Architecture: "llama", HiddenSize: 16, IntermediateSize: 24, NumLayers: 3, NumHeads: 4,
		NumKVHeads: 2, HeadDim: 4, VocabSize: 32, MaxPositions: 64, RMSNormEps: 1e-5, RopeTheta: 10000, TieEmbeddings: true}
}

func spec(init string, depth int) Spec {
	s := DefaultSpec()
	s.Init, s.Depth, s.Scale, s.Seed = init, depth, 0.1, 7
	return s
}

func TestTargetsMatchModulesAndLayers(t *testing.T) {
	s := spec("lora", 2)
	s.Targets, s.Layers = []string{"q_proj", "model.layers.*.mlp.down_proj"}, []int{0, 2}
	set, err := Attach(tinyConfig(), s)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range set.Adapters {
		got = append(got, a.Module)
	}
	want := []string{"model.layers.0.mlp.down_proj", "model.layers.0.self_attn.q_proj",
		"model.layers.2.mlp.down_proj", "model.layers.2.self_attn.q_proj"}
	if !slices.Equal(got, want) {
		t.Fatalf("adapted modules %v, want %v", got, want)
	}
	s.Targets, s.Layers = []string{"all-linear"}, nil
	set, err = Attach(tinyConfig(), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Adapters) != 7*3 {
		t.Fatalf("all-linear gave %d adapters, want 21", len(set.Adapters))
	}
	s.Targets = []string{"nope"}
	if _, err := Attach(tinyConfig(), s); err == nil {
		t.Fatal("a target matching nothing must be an error")
	}
	s.Targets, s.Layers = []string{"q_proj"}, []int{3}
	if _, err := Attach(tinyConfig(), s); err == nil {
		t.Fatal("a layer beyond the model must be an error")
	}
}

func TestSpecValidation(t *testing.T) {
	for _, mutate := range []func(*Spec){
		func(s *Spec) { s.Rank = 0 },
		func(s *Spec) { s.Depth = 1 },
		func(s *Spec) { s.Alpha = -1 },
		func(s *Spec) { s.Dropout = 1 },
		func(s *Spec) { s.Init = "unknown" },
		func(s *Spec) { s.Targets = nil },
		func(s *Spec) { s.Scale = math.NaN() },
	} {
		s := DefaultSpec()
		mutate(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("spec %+v should be invalid", s)
		}
	}
}

func frobenius(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v * v
	}
	return math.Sqrt(s)
}

func TestInitsPlaceTheAdapterWhereTheyClaim(t *testing.T) {
	for _, depth := range []int{2, 3, 4} {
		for _, name := range InitNames() {
			set, err := Attach(tinyConfig(), spec(name, depth))
			if err != nil {
				t.Fatal(err)
			}
			a := set.Adapters[0]
			normA := frobenius(toF64(a.Factors[0]))
			normB := frobenius(toF64(a.Factors[depth-1]))
			dw := frobenius(a.Product(depth, set.Spec.Rank))
			switch name {
			case "lora", "gaussian", "saddle":
				if normB != 0 || dw != 0 || normA == 0 {
					t.Errorf("%s depth %d: want B = 0, ΔW = 0, A ≠ 0; got ‖A‖=%g ‖B‖=%g ‖ΔW‖=%g", name, depth, normA, normB, dw)
				}
			case "small":
				if dw == 0 || normB == 0 {
					t.Errorf("small depth %d: want tiny non-zero ΔW, got %g", depth, dw)
				}
			case "orthogonal":
				if normA == 0 || normB == 0 || dw > 1e-6*normA*normB {
					t.Errorf("orthogonal depth %d: want A, B ≠ 0 with B·A = 0; got ‖A‖=%g ‖B‖=%g ‖ΔW‖=%g", depth, normA, normB, dw)
				}
			}
			if name == "saddle" {
				// Each row of A has norm ≈ λ; inner factors are exactly λ·I.
				rowNorm := normA / math.Sqrt(float64(set.Spec.Rank))
				if math.Abs(rowNorm-0.1) > 0.05 {
					t.Errorf("saddle: mean row norm of A %g, want ≈ λ = 0.1", rowNorm)
				}
				for i := 1; i < depth-1; i++ {
					for r := range set.Spec.Rank {
						for c := range set.Spec.Rank {
							want := float32(0)
							if r == c {
								want = 0.1
							}
							if got := a.Factors[i][r*set.Spec.Rank+c]; got != want {
								t.Fatalf("saddle M%d[%d,%d] = %g, want %g", i, r, c, got, want)
							}
						}
					}
				}
			}
		}
	}
	odd := spec("orthogonal", 2)
	odd.Rank = 3
	if _, err := Attach(tinyConfig(), odd); err == nil {
		t.Fatal("orthogonal init with odd rank must fail")
	}
}

func TestFoldEqualsProduct(t *testing.T) {
	set, err := Attach(tinyConfig(), spec("small", 4))
	if err != nil {
		t.Fatal(err)
	}
	a := set.Adapters[0]
	want := a.Product(4, set.Spec.Rank)
	A, B := a.Fold(4, set.Spec.Rank)
	got := matmul(toF64(B), toF64(A), a.Out, set.Spec.Rank, a.In)
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-6*math.Max(1, math.Abs(want[i])) {
			t.Fatalf("folded B'·A [%d] = %g, product %g", i, got[i], want[i])
		}
	}
}

// TestHookAddsScaledProduct runs the hook in a graph and compares with s·B⋯A·x computed on the host.
func TestHookAddsScaledProduct(t *testing.T) {
	s := spec("small", 3)
	s.Alpha, s.RSLoRA = 4, true
	set, err := Attach(tinyConfig(), s)
	if err != nil {
		t.Fatal(err)
	}
	b := testbackend.Get(t)
	a := set.Adapters[0]
	x := make([]float32, 2*a.In)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	n := len(set.Tensors())
	exec := MustNewExec(b, func(in []*Node) *Node {
		hook := set.Hook(in[:n], nil)
		xs := Reshape(in[n], 1, 2, a.In)
		return hook(a.Module, xs, ZerosLike(Reshape(Slice(in[n], AxisRange(0, 2*a.Out)), 1, 2, a.Out)))
	})
	args := []any{}
	for _, t := range set.Tensors() {
		args = append(args, t)
	}
	big := make([]float32, max(2*a.In, 2*a.Out))
	copy(big, x)
	args = append(args, tensors.FromFlatDataAndDimensions(big, len(big)))
	got := tensors.MustCopyFlatData[float32](exec.MustExec(args...)[0])
	dw := set.DeltaW(a)
	if math.Abs(set.Spec.Scaling()-4/math.Sqrt(8)) > 1e-12 {
		t.Fatalf("rsLoRA scaling %g, want 4/√8", set.Spec.Scaling())
	}
	for r := range 2 {
		for o := range a.Out {
			var want float64
			for i := range a.In {
				want += dw[o*a.In+i] * float64(big[r*a.In+i])
			}
			if math.Abs(float64(got[r*a.Out+o])-want) > testbackend.Tol(t, 1e-5)*math.Max(1, math.Abs(want)) {
				t.Fatalf("hook output [%d,%d] = %g, want %g", r, o, got[r*a.Out+o], want)
			}
		}
	}
}
