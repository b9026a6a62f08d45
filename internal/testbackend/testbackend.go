// Package testbackend gives the tests the compute backend named by $SADDLE_TEST_BACKEND (default: the Go backend,
// as backend.New("go") makes it), so that the whole suite can run on another one:
//
//	SADDLE_TEST_BACKEND=xla:cuda bash scripts/test.sh
//
// Each package whose tests build a backend calls Main from its TestMain: it points $GOMLX_BACKEND at the test
// backend (so that the CLI and theory.Run, which read it, use it too) and, for a backend other than Go, starts it
// before any test runs, so that one that cannot start is one message and exit 1 rather than a failure per test.
// Tests get the one shared backend of their process with Get.
//
// Float tolerances: the Go backend computes float32 in float32, but XLA on a GPU runs float32 matmuls in TF32
// (10-bit mantissa, ~1e-3 relative per dot product) by default, and bfloat16 paths round to 8 bits (~4e-3). A test
// that compares float32 results of matmuls with a tight tolerance wraps it in Tol, which keeps it on the Go backend
// and raises it to LooseTol (or $SADDLE_TEST_TOL) on others. Float64 computations keep their tolerances: XLA does not
// narrow float64. A test that compares two runs bit for bit uses Same, exact on the Go backend (deterministic) and
// within SameTol relative elsewhere (XLA does not promise bitwise-identical reductions from one run to the next on a
// GPU). It imports backend (and so XLA): only the tests of packages that build a backend import it.
package testbackend

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gomlx/compute"

	"github.com/saddle-ml/saddle/backend"
)

// Env names the test backend, as --backend does: go (default), xla:cuda, xla:cpu, xla:/path/plugin.so, ...
const Env = "SADDLE_TEST_BACKEND"

// TolEnv overrides LooseTol.
const TolEnv = "SADDLE_TEST_TOL"

// LooseTol is the least tolerance Tol gives on a backend other than Go (see the package comment).
const LooseTol = 2e-2

// SameTol is the relative difference Same allows on a backend other than Go.
const SameTol = 1e-5

var (
	once     sync.Once
	shared   compute.Backend
	startErr error
)

// Config is the test backend's configuration: $SADDLE_TEST_BACKEND, or "go".
func Config() string {
	if c := strings.TrimSpace(os.Getenv(Env)); c != "" {
		return c
	}
	return "go"
}

// IsGo reports whether the tests run on the Go backend.
func IsGo() bool {
	name, _, _ := strings.Cut(backend.Resolve(Config()), ":")
	return name == "go"
}

func start() (compute.Backend, error) {
	once.Do(func() {
		shared, _, startErr = backend.New(Config())
		if startErr != nil {
			startErr = fmt.Errorf("%s=%s: the test backend did not start: %w", Env, Config(), startErr)
		}
	})
	return shared, startErr
}

// Get returns the test backend, one per test process (never finalize it).
func Get(t testing.TB) compute.Backend {
	t.Helper()
	b, err := start()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Main runs a package's tests on the test backend: call it from TestMain.
func Main(m *testing.M) {
	os.Setenv(backend.EnvVar, Config())
	if !IsGo() {
		if _, err := start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// Tol returns tol on the Go backend and max(tol, LooseTol or $SADDLE_TEST_TOL) on others: for float32 results of
// matmuls, which XLA on a GPU computes in TF32.
func Tol(t testing.TB, tol float64) float64 {
	t.Helper()
	if IsGo() {
		return tol
	}
	loose := LooseTol
	if v := os.Getenv(TolEnv); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0) {
			t.Fatalf("%s=%q: want a positive number", TolEnv, v)
		}
		loose = f
	}
	if loose > tol {
		t.Logf("tolerance %g raised to %g on %s", tol, loose, Config())
		return loose
	}
	return tol
}

// Same reports whether two results of the same computation agree: exactly on the Go backend, within SameTol
// relative on others.
func Same(a, b float64) bool {
	if IsGo() || a == b {
		return a == b
	}
	return math.Abs(a-b) <= SameTol*math.Max(math.Abs(a), math.Abs(b))
}
