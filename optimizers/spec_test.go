package optimizers_test

import (
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/optimizers"
)

func TestParseSpecs(t *testing.T) {
	got, err := optimizers.ParseSpecs(" sgd, adam,,steepest:1.5,sign")
	if err != nil {
		t.Fatal(err)
	}
	want := []optimizers.Spec{{Name: "sgd"}, {Name: "adam"}, {Name: "steepest", Q: 1.5}, {Name: "sign"}}
	if len(got) != len(want) {
		t.Fatalf("ParseSpecs = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("item %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	labels := []string{"sgd", "adam", "steepest:1.5", "sign"}
	for i, s := range got {
		if s.Label() != labels[i] {
			t.Errorf("%+v.Label() = %q, want %q", s, s.Label(), labels[i])
		}
	}
	for _, c := range []struct{ list, want string }{
		{"", "no optimizers"},
		{"adam:1.5", "only steepest takes a value"},
		{"steepest:x", "only steepest takes a value"},
		{"steepest", "set q in [1, 2]"},
		{"steepest:3", "q must be in [1, 2]"},
		{"adamx", "unknown optimizer \"adamx\""},
	} {
		if _, err := optimizers.ParseSpecs(c.list); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseSpecs(%q) error = %v, want it to contain %q", c.list, err, c.want)
		}
	}
}

func TestForQAndApply(t *testing.T) {
	for q, want := range map[float64]string{1: "sign", 2: "sgd", 1.5: "steepest:1.5"} {
		if got := optimizers.ForQ(q).Label(); got != want {
			t.Errorf("ForQ(%g).Label() = %q, want %q", q, got, want)
		}
	}
	if cfg := (optimizers.Spec{Name: "adam", Q: 1.5}).Apply(optimizers.Config{Q: 1.2, Beta1: 0.8}); cfg.Q != 0 || cfg.Beta1 != 0.8 {
		t.Errorf("adam's Apply kept q or lost beta1: %+v", cfg)
	}
	if cfg := (optimizers.Spec{Name: "steepest", Q: 1.5}).Apply(optimizers.Config{}); cfg.Q != 1.5 {
		t.Errorf("steepest's Apply did not set q: %+v", cfg)
	}
}
