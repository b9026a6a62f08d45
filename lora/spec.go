// Package lora attaches product adapters ΔW = s·B·M_{L−2}⋯M_1·A to a model's linear layers (L = 2 is LoRA), creates
// their initial factors, and folds, merges, exports and imports them.
package lora

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Spec says where adapters go and what they look like.
type Spec struct {
	Targets []string `json:"targets"` // module short names (q_proj), globs over full paths, or "all-linear"
	Layers  []int    `json:"layers"`  // empty = every layer
	Rank    int      `json:"rank"`
	Alpha   float64  `json:"alpha"`
	RSLoRA  bool     `json:"rslora"` // scale α/√r instead of α/r
	Depth   int      `json:"depth"`  // number of factors L ≥ 2
	Dropout float64  `json:"dropout"`
	Init    string   `json:"init"`
	Scale   float64  `json:"init_scale"` // λ for the saddle, small and orthogonal inits
	Seed    uint64   `json:"seed"`
}

// AllLinear lists every linear module of a Llama-family block.
var AllLinear = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// DefaultSpec is LoRA r=8, α=16 on the attention projections.
func DefaultSpec() Spec {
	return Spec{Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj"}, Rank: 8, Alpha: 16, Depth: 2, Init: "lora", Scale: 0.01}
}

// Validate rejects meaningless specs.
func (s Spec) Validate() error {
	switch {
	case s.Rank < 1:
		return fmt.Errorf("adapter rank %d must be >= 1", s.Rank)
	case s.Depth < 2:
		return fmt.Errorf("adapter depth %d must be >= 2 (2 is LoRA's B·A)", s.Depth)
	case s.Alpha <= 0 || math.IsNaN(s.Alpha) || math.IsInf(s.Alpha, 0):
		return fmt.Errorf("adapter alpha %g must be positive", s.Alpha)
	case s.Dropout < 0 || s.Dropout >= 1:
		return fmt.Errorf("adapter dropout %g must be in [0, 1)", s.Dropout)
	case len(s.Targets) == 0:
		return fmt.Errorf("no adapter targets given")
	case s.Scale < 0 || math.IsNaN(s.Scale) || math.IsInf(s.Scale, 0):
		return fmt.Errorf("init scale %g must be >= 0", s.Scale)
	}
	if _, err := lookupInit(s.Init); err != nil {
		return err
	}
	for _, l := range s.Layers {
		if l < 0 {
			return fmt.Errorf("adapter layer %d must be >= 0", l)
		}
	}
	for _, t := range s.Targets {
		if _, err := path.Match(t, ""); err != nil {
			return fmt.Errorf("adapter target %q: %v", t, err)
		}
	}
	return nil
}

// Scaling is s in ΔW = s·B⋯A: α/r, or α/√r with rsLoRA.
func (s Spec) Scaling() float64 {
	if s.RSLoRA {
		return s.Alpha / math.Sqrt(float64(s.Rank))
	}
	return s.Alpha / float64(s.Rank)
}

// Matches reports whether the adapter applies to the module at an HF path such as
// "model.layers.3.self_attn.q_proj".
func (s Spec) Matches(module string) bool {
	layer, short, ok := splitModule(module)
	if !ok {
		return false
	}
	if len(s.Layers) > 0 && !slices.Contains(s.Layers, layer) {
		return false
	}
	for _, t := range s.Targets {
		switch {
		case t == "all-linear":
			if slices.Contains(AllLinear, short) {
				return true
			}
		case t == short:
			return true
		default:
			if ok, _ := path.Match(t, module); ok {
				return true
			}
		}
	}
	return false
}

// splitModule takes "model.layers.3.self_attn.q_proj" apart into (3, "q_proj").
func splitModule(module string) (int, string, bool) {
	rest, ok := strings.CutPrefix(module, "model.layers.")
	if !ok {
		return 0, "", false
	}
	num, tail, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, "", false
	}
	layer, err := strconv.Atoi(num)
	if err != nil {
		return 0, "", false
	}
	return layer, tail[strings.LastIndexByte(tail, '.')+1:], true
}
