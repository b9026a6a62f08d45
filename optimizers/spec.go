package optimizers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Spec names an optimizer the way the CLI, sweeps, tables and plots do: a registered rule, plus q for a rule
// registered with RegisterWithQ ("steepest:1.5").
type Spec struct {
	Name string
	Q    float64 // the rule's geometry when it is a setting of the rule (TakesQ); 0 otherwise
}

// ParseSpec reads "adam" or "steepest:1.5" and checks that the rule exists and accepts the value.
func ParseSpec(item string) (Spec, error) {
	name, qs, hasQ := strings.Cut(strings.TrimSpace(item), ":")
	s := Spec{Name: name}
	if hasQ {
		q, err := strconv.ParseFloat(qs, 64)
		if err != nil || !s.TakesQ() {
			return s, fmt.Errorf("optimizer %q: only %s takes a value, as NAME:Q with Q in [1, 2]", item, strings.Join(withQ(), ", "))
		}
		s.Q = q
	}
	if _, err := New(s.Name, s.Apply(Config{})); err != nil {
		return s, fmt.Errorf("optimizer %q: %w", item, err)
	}
	return s, nil
}

// ParseSpecs reads a comma-separated list such as "sgd,adam,sign,steepest:1.5" (empty items are skipped).
func ParseSpecs(list string) ([]Spec, error) {
	var out []Spec
	for _, item := range strings.Split(list, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		s, err := ParseSpec(item)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("no optimizers given")
	}
	return out, nil
}

// ForQ is the rule of the steepest-descent family for geometry q: sign descent for 1, gradient descent for 2,
// steepest descent with q otherwise.
func ForQ(q float64) Spec {
	switch q {
	case 1:
		return Spec{Name: "sign"}
	case 2:
		return Spec{Name: "sgd"}
	}
	return Spec{Name: "steepest", Q: q}
}

// TakesQ reports whether q is a setting of the rule (registered with RegisterWithQ).
func (s Spec) TakesQ() bool {
	r, ok := lookup(s.Name)
	return ok && r.takesQ
}

// Label names the choice in tables, plots and run names: "adam", "steepest:1.5".
func (s Spec) Label() string {
	if s.TakesQ() {
		return s.Name + ":" + strconv.FormatFloat(s.Q, 'g', -1, 64)
	}
	return s.Name
}

// Apply returns cfg with the spec's q: set for a rule that takes one, cleared otherwise.
func (s Spec) Apply(cfg Config) Config {
	cfg.Q = 0
	if s.TakesQ() {
		cfg.Q = s.Q
	}
	return cfg
}

// withQ lists the rules that take q.
func withQ() []string {
	var out []string
	for _, n := range Names() {
		if (Spec{Name: n}).TakesQ() {
			out = append(out, n)
		}
	}
	return out
}
