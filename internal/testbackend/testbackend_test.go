package testbackend

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestDefaultIsTheGoBackendWithTightTolerances(t *testing.T) {
	t.Setenv(Env, "")
	if Config() != "go" || !IsGo() {
		t.Fatalf("unset %s: config %q", Env, Config())
	}
	if Tol(t, 1e-6) != 1e-6 || Same(1, 1+1e-12) || !Same(0.5, 0.5) {
		t.Fatal("the Go backend keeps tolerances and compares bitwise")
	}
	t.Setenv(Env, "xla:cuda")
	if IsGo() || Tol(t, 1e-6) != LooseTol || Tol(t, 0.5) != 0.5 || !Same(1, 1+1e-7) || Same(1, 1+1e-3) {
		t.Fatal("other backends: Tol raises to LooseTol, Same allows SameTol")
	}
	t.Setenv(TolEnv, "0.1")
	if Tol(t, 1e-6) != 0.1 {
		t.Fatalf("%s=0.1: Tol %g", TolEnv, Tol(t, 1e-6))
	}
}

// A test backend that cannot start stops the package's tests with one message, before any test runs.
func TestMainStopsOnceWhenTheBackendCannotStart(t *testing.T) {
	if os.Getenv("TESTBACKEND_CHILD") == "1" {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "TestMainStopsOnceWhenTheBackendCannotStart", "-test.v")
	cmd.Env = append(os.Environ(), "TESTBACKEND_CHILD=1", Env+"=nosuchbackend")
	out, err := cmd.CombinedOutput()
	if err == nil || strings.Contains(string(out), "=== RUN") || strings.Count(string(out), "did not start") != 1 ||
		!strings.Contains(string(out), "unknown backend") {
		t.Fatalf("child with %s=nosuchbackend: %v\n%s", Env, err, out)
	}
}

func TestMain(m *testing.M) { Main(m) }
