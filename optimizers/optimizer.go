package optimizers

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads better unqualified
)

// Optimizer builds one parameter's update inside a graph. It holds no state itself: the state lives in NumSlots
// slots shaped like the parameter, which start at zero and which the caller stores between steps.
type Optimizer interface {
	// Name is the registered name, e.g. "adamw".
	Name() string
	// Q is the steepest-descent geometry the rule follows: 2 for gradient descent (with or without momentum),
	// 1 for sign-like rules (sign, signum, lion, the Adam family), q for "steepest".
	Q() float64
	// NumSlots is the number of state tensors per parameter (0 for sign, 1 for signum, 2 for Adam, ...).
	NumSlots() int
	// Update returns the new parameter and slots. param, grad and every slot have the same shape and dtype; step
	// (1-based, for bias correction) and lr are scalar nodes (float32 in saddle), so changing them never
	// recompiles. Apply checks these preconditions; Update itself relies on them.
	Update(param, grad *Node, slots []*Node, step, lr *Node) (newParam *Node, newSlots []*Node)
}

// Weight decay modes.
const (
	Coupled   = "coupled"   // wd·x is added to the gradient before the rule (L2 regularization)
	Decoupled = "decoupled" // x ← x − lr·(rule + wd·x), the paper's α; AdamW style
)

// Config holds every optimizer's hyperparameters; a rule uses the fields it needs. A zero field means "the rule's
// default" (see Resolve for what New filled in) unless it is listed in Explicit. A nonzero field the rule does not
// use is an error, so that e.g. --momentum given to adam is never silently ignored.
type Config struct {
	Momentum    float64 // sgd (default 0) and signum (default 0.9)
	Nesterov    bool    // sgd only; needs momentum > 0
	Beta1       float64 // adam family (default 0.9), lion (default 0.9)
	Beta2       float64 // adam family (default 0.999), lion (default 0.99)
	Eps         float64 // adam family (default 1e-8), added after the square root
	Q           float64 // steepest only, in [1, 2]: 2 is gradient descent, 1 is sign descent
	WeightDecay float64 // every rule; default 0 (0.01 for adamw and adam-l2)
	WDMode      string  // "coupled" or "decoupled"; default decoupled for adamw, coupled otherwise

	// Explicit names fields (by their flag names: momentum, beta1, beta2, eps, q, weight-decay) whose zero value
	// is meant literally instead of "use the default", e.g. {"weight-decay"} for AdamW without decay. A CLI can
	// simply list every flag the user set. (The learning rate is not here: it is a graph input, see NewSchedule.)
	Explicit []string
}

// floatFields maps flag names to the Config fields, for Explicit, Default and the error messages.
func (c *Config) floatFields() []struct {
	name string
	p    *float64
} {
	return []struct {
		name string
		p    *float64
	}{
		{"momentum", &c.Momentum}, {"beta1", &c.Beta1}, {"beta2", &c.Beta2},
		{"eps", &c.Eps}, {"q", &c.Q}, {"weight-decay", &c.WeightDecay},
	}
}

// Default sets *field (a pointer to one of c's fields) to value if it is zero and not listed in c.Explicit.
// Factories use it to apply their defaults: cfg.Default(&cfg.Beta1, 0.9).
func (c *Config) Default(field *float64, value float64) {
	if *field != 0 {
		return
	}
	for _, f := range c.floatFields() {
		if f.p == field && slices.Contains(c.Explicit, f.name) {
			return
		}
	}
	*field = value
}

// allowOnly returns an error if a hyperparameter that the rule does not use is set (nonzero or true).
func (c *Config) allowOnly(used ...string) error {
	var unused []string
	for _, f := range c.floatFields() {
		if *f.p != 0 && f.name != "weight-decay" && !slices.Contains(used, f.name) {
			unused = append(unused, fmt.Sprintf("%s=%g", f.name, *f.p))
		}
	}
	if c.Nesterov && !slices.Contains(used, "nesterov") {
		unused = append(unused, "nesterov")
	}
	if len(unused) > 0 {
		uses := "only lr and weight decay"
		if len(used) > 0 {
			uses = strings.Join(used, ", ") + ", lr and weight decay"
		}
		return fmt.Errorf("does not use %s (it uses %s)", strings.Join(unused, ", "), uses)
	}
	return nil
}

// Factory builds a rule from a configuration: it fills in its defaults in cfg (with cfg.Default, including
// WeightDecay and WDMode if they differ from 0 and coupled), checks the fields only it knows about, and returns
// the rule without weight decay; New validates the common fields and adds weight decay.
type Factory func(cfg *Config) (Optimizer, error)

// rule is a registered optimizer.
type rule struct {
	factory Factory
	takesQ  bool // its geometry q is a setting (see RegisterWithQ)
}

var (
	registryMu sync.RWMutex
	registry   = map[string]rule{}
)

// Register makes an optimizer available to New under name; call it from an init function. Registering a name
// twice, an empty name or a nil factory is a programming error and panics at program start.
func Register(name string, factory Factory) { register(name, factory, false) }

// RegisterWithQ registers a rule of the steepest-descent family whose geometry q is one of its settings
// (steepest): its Spec is written "name:Q", and its label carries q.
func RegisterWithQ(name string, factory Factory) { register(name, factory, true) }

func register(name string, factory Factory, takesQ bool) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if name == "" || factory == nil {
		panic("optimizers.Register: empty name or nil factory")
	}
	if _, dup := registry[name]; dup {
		panic(fmt.Sprintf("optimizers.Register: %q registered twice", name))
	}
	registry[name] = rule{factory: factory, takesQ: takesQ}
}

func lookup(name string) (rule, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	r, ok := registry[name]
	return r, ok
}

// Names lists the registered optimizers, sorted.
func Names() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New returns the named optimizer with its defaults applied, the configuration validated and weight decay added.
func New(name string, cfg Config) (Optimizer, error) {
	opt, _, err := build(name, cfg)
	return opt, err
}

// Resolve returns the configuration New would use for name, with every default filled in (for logs and
// checkpoint metadata).
func Resolve(name string, cfg Config) (Config, error) {
	_, resolved, err := build(name, cfg)
	return resolved, err
}

func build(name string, cfg Config) (Optimizer, Config, error) {
	r, ok := lookup(name)
	if !ok {
		return nil, cfg, fmt.Errorf("optimizers: unknown optimizer %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	cfg.Explicit = slices.Clone(cfg.Explicit)
	known := make([]string, 0, 6)
	for _, f := range cfg.floatFields() {
		known = append(known, f.name)
	}
	for _, e := range cfg.Explicit {
		if !slices.Contains(known, e) {
			return nil, cfg, fmt.Errorf("optimizers: %s: unknown field %q in Explicit (known: %s)", name, e, strings.Join(known, ", "))
		}
	}
	if err := validate(&cfg); err != nil { // the user's values, before defaults hide anything
		return nil, cfg, fmt.Errorf("optimizers: %s: %w", name, err)
	}
	opt, err := r.factory(&cfg)
	if err != nil {
		return nil, cfg, fmt.Errorf("optimizers: %s: %w", name, err)
	}
	if opt == nil {
		return nil, cfg, fmt.Errorf("optimizers: %s: factory returned no optimizer", name)
	}
	if cfg.WDMode == "" {
		cfg.WDMode = Coupled
	}
	if err := validate(&cfg); err != nil { // the factory's defaults
		return nil, cfg, fmt.Errorf("optimizers: %s: %w", name, err)
	}
	if cfg.WeightDecay == 0 {
		return opt, cfg, nil
	}
	return &weightDecay{Optimizer: opt, wd: cfg.WeightDecay, decoupled: cfg.WDMode == Decoupled}, cfg, nil
}

// validate checks the ranges every rule shares; zero fields are "unset" and pass.
func validate(c *Config) error {
	for _, f := range c.floatFields() {
		if math.IsNaN(*f.p) || math.IsInf(*f.p, 0) {
			return fmt.Errorf("%s must be finite, got %g", f.name, *f.p)
		}
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"weight-decay", c.WeightDecay}, {"momentum", c.Momentum}, {"eps", c.Eps}} {
		if f.v < 0 {
			return fmt.Errorf("%s must not be negative, got %g", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"beta1", c.Beta1}, {"beta2", c.Beta2}} {
		if f.v < 0 || f.v >= 1 {
			return fmt.Errorf("%s must be in [0, 1), got %g", f.name, f.v)
		}
	}
	if c.Q != 0 && (c.Q < 1 || c.Q > 2) {
		return fmt.Errorf("q must be in [1, 2] (2 is gradient descent, 1 is sign descent), got %g", c.Q)
	}
	switch c.WDMode {
	case "", Coupled, Decoupled:
	default:
		return fmt.Errorf("unknown weight decay mode %q (use %s or %s)", c.WDMode, Coupled, Decoupled)
	}
	return nil
}

// weightDecay adds weight decay around any rule.
type weightDecay struct {
	Optimizer
	wd        float64
	decoupled bool
}

func (w *weightDecay) Update(param, grad *Node, slots []*Node, step, lr *Node) (*Node, []*Node) {
	wd := Scalar(param.Graph(), param.DType(), w.wd)
	if !w.decoupled {
		return w.Optimizer.Update(param, Add(grad, Mul(wd, param)), slots, step, lr)
	}
	// x ← x − lr·(rule + wd·x), with the decay term taken at the old x (as PyTorch's AdamW does).
	newParam, newSlots := w.Optimizer.Update(param, grad, slots, step, lr)
	return Sub(newParam, Mul(Mul(asDType(lr, param), wd), param)), newSlots
}

// asDType converts a scalar node (lr, step or a coefficient computed from them) to x's dtype.
func asDType(s, x *Node) *Node {
	if s.DType() == x.DType() {
		return s
	}
	return ConvertDType(s, x.DType())
}

// ema returns β·m + (1−β)·g.
func ema(m, g *Node, beta float64) *Node {
	gr := m.Graph()
	return Add(Mul(Scalar(gr, m.DType(), beta), m), Mul(Scalar(gr, g.DType(), 1-beta), g))
}

// descend returns x − lr·update.
func descend(x, update, lr *Node) *Node {
	return Sub(x, Mul(asDType(lr, x), update))
}
