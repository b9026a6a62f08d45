package finetune

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAnUpdateThatOverflowsStopsTheRun: a learning rate so high that the first update overflows the adapters (the
// loss and gradient of the step itself being finite) stops the run with the state before the step saved, instead of
// failing at metrics.jsonl with "json: unsupported value: +Inf"; every metrics row written stays valid JSON.
func TestAnUpdateThatOverflowsStopsTheRun(t *testing.T) {
	f := newFixture(t)
	cfg := testConfig(t, "sgd", 1e30, 3)
	cfg.Adapter.Init, cfg.Adapter.Scale, cfg.DivergeFactor = "saddle", 0.1, 0
	_, err := Run(context.Background(), Job{Model: f.model, Train: f.batcher(t, 4, 32), Plan: testPlan(t, f, cfg)}, nil)
	if err == nil || !strings.Contains(err.Error(), "non-finite") || !strings.Contains(err.Error(), "step 1") ||
		strings.Contains(err.Error(), "unsupported value") {
		t.Fatalf("Run with lr 1e30: error %v, want the step that left the adapters non-finite", err)
	}
	file, err := os.Open(filepath.Join(cfg.Out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var row MetricsRow
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Errorf("metrics.jsonl row %q: %v", sc.Text(), err)
		}
		if row.Step > 0 {
			t.Errorf("metrics.jsonl has a row for step %d, which was undone", row.Step)
		}
	}
}
