package optimizers_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/optimizers"
)

func TestNames(t *testing.T) {
	names := optimizers.Names()
	for _, n := range []string{"adam", "adam-l2", "adamw", "lion", "sgd", "sign", "signum", "steepest"} {
		if !slices.Contains(names, n) {
			t.Errorf("Names() = %v lacks %q", names, n)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("Names() not sorted: %v", names)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  optimizers.Config
		want string // a piece of the error message
	}{
		{"adamx", optimizers.Config{}, "unknown optimizer \"adamx\" (known: adam, adam-l2, adamw"},
		{"steepest", optimizers.Config{Q: 0.5}, "q must be in [1, 2]"},
		{"steepest", optimizers.Config{Q: 2.5}, "q must be in [1, 2]"},
		{"steepest", optimizers.Config{}, "set q in [1, 2]"},
		{"sgd", optimizers.Config{WeightDecay: -0.1}, "weight-decay must not be negative"},
		{"sgd", optimizers.Config{Momentum: -0.9}, "momentum must not be negative"},
		{"signum", optimizers.Config{Momentum: 1}, "momentum must be in [0, 1)"},
		{"adam", optimizers.Config{Beta1: 1}, "beta1 must be in [0, 1)"},
		{"adam", optimizers.Config{Beta2: -0.1}, "beta2 must be in [0, 1)"},
		{"lion", optimizers.Config{Beta2: 1.5}, "beta2 must be in [0, 1)"},
		{"adam", optimizers.Config{Eps: -1e-8}, "eps must not be negative"},
		{"adam", optimizers.Config{Explicit: []string{"eps"}}, "eps must be > 0"},
		{"adam", optimizers.Config{Eps: 1e-50}, "float32"},
		{"adamw", optimizers.Config{Eps: 1e-39}, "float32"},
		{"sgd", optimizers.Config{WDMode: "l2"}, "unknown weight decay mode \"l2\""},
		{"sgd", optimizers.Config{Nesterov: true}, "nesterov needs momentum > 0"},
		{"adam", optimizers.Config{Momentum: 0.9}, "does not use momentum=0.9"},
		{"sgd", optimizers.Config{Beta1: 0.9, Q: 1.5}, "does not use beta1=0.9, q=1.5"},
		{"sign", optimizers.Config{Nesterov: true}, "does not use nesterov"},
		{"adamw", optimizers.Config{WDMode: "coupled"}, "adamw has decoupled weight decay by definition"},
		{"adam-l2", optimizers.Config{WDMode: "decoupled"}, "adam-l2 has coupled weight decay by definition"},
		{"adam", optimizers.Config{Explicit: []string{"betta1"}}, "unknown field \"betta1\" in Explicit"},
	} {
		_, err := optimizers.New(c.name, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q, %+v) error = %v, want it to contain %q", c.name, c.cfg, err, c.want)
		}
	}
}

func TestResolveDefaults(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  optimizers.Config
		want optimizers.Config
	}{
		{"adamw", optimizers.Config{}, optimizers.Config{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, WDMode: "decoupled"}},
		{"adam-l2", optimizers.Config{}, optimizers.Config{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, WDMode: "coupled"}},
		{"adam", optimizers.Config{Beta2: 0.95}, optimizers.Config{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WDMode: "coupled"}},
		{"adamw", optimizers.Config{Explicit: []string{"weight-decay"}}, optimizers.Config{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WDMode: "decoupled"}},
		{"signum", optimizers.Config{}, optimizers.Config{Momentum: 0.9, WDMode: "coupled"}},
		{"lion", optimizers.Config{WeightDecay: 0.1, WDMode: "decoupled"}, optimizers.Config{Beta1: 0.9, Beta2: 0.99, WeightDecay: 0.1, WDMode: "decoupled"}},
		{"sgd", optimizers.Config{}, optimizers.Config{WDMode: "coupled"}},
	} {
		got, err := optimizers.Resolve(c.name, c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		got.Explicit = nil
		if !equalConfig(got, c.want) {
			t.Errorf("Resolve(%q, %+v) = %+v, want %+v", c.name, c.cfg, got, c.want)
		}
	}
}

func equalConfig(a, b optimizers.Config) bool {
	return a.Momentum == b.Momentum && a.Nesterov == b.Nesterov && a.Beta1 == b.Beta1 &&
		a.Beta2 == b.Beta2 && a.Eps == b.Eps && a.Q == b.Q && a.WeightDecay == b.WeightDecay && a.WDMode == b.WDMode
}

func TestRegisterDuplicatePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("registering \"sgd\" twice did not panic")
		}
	}()
	optimizers.Register("sgd", func(*optimizers.Config) (optimizers.Optimizer, error) { return nil, nil })
}
