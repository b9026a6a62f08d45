package theory

import (
	"context"
	"os"
	"testing"
)

// TestFullRun regenerates the full run's report (DefaultOptions, a few minutes on two cores) into the directory
// named by SADDLE_THEORY_FULL; it is skipped otherwise.
func TestFullRun(t *testing.T) {
	dir := os.Getenv("SADDLE_THEORY_FULL")
	if dir == "" {
		t.Skip("set SADDLE_THEORY_FULL=<dir> to run the full theory experiment")
	}
	rep, err := Run(context.Background(), DefaultOptions(), dir, os.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rep.Exponents {
		if !e.OK && e.Optimizer != "adam" {
			t.Errorf("%s q=%g L=%d: %s", e.Optimizer, e.Q, e.Depth, e.summary())
		}
	}
	for _, b := range rep.Balance {
		if !b.OK {
			t.Errorf("balance %s q=%g α=%g not ok", b.Optimizer, b.Q, b.WeightDecay)
		}
	}
}
