package lora

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// Init fills a freshly allocated adapter's factors (all zero on entry). A new init is one file that calls
// RegisterInit from init().
type Init func(rng *rand.Rand, a *Adapter, spec Spec) error

var inits = map[string]Init{}

// RegisterInit makes an init selectable by name (--init NAME).
func RegisterInit(name string, fn Init) { inits[name] = fn }

// InitNames lists the registered inits.
func InitNames() []string {
	names := make([]string, 0, len(inits))
	for n := range inits {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func lookupInit(name string) (Init, error) {
	fn, ok := inits[name]
	if !ok {
		return nil, fmt.Errorf("unknown adapter init %q (known: %s)", name, strings.Join(InitNames(), ", "))
	}
	return fn, nil
}

// fillNormal sets x to N(0, std²) draws.
func fillNormal(rng *rand.Rand, x []float32, std float64) {
	for i := range x {
		x[i] = float32(rng.NormFloat64() * std)
	}
}

// fillScaledIdentity sets the r×r matrix x to scale·I.
func fillScaledIdentity(x []float32, rank int, scale float64) {
	clear(x)
	for i := range rank {
		x[i*rank+i] = float32(scale)
	}
}

// innerIdentity sets every inner factor M_i to scale·I.
func innerIdentity(a *Adapter, spec Spec, scale float64) {
	for i := 1; i < spec.Depth-1; i++ {
		fillScaledIdentity(a.Factors[i], spec.Rank, scale)
	}
}
