package checkpoints

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/saddle-ml/saddle/internal/safetensors"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
)

func testState(t *testing.T, step int) *State {
	t.Helper()
	cfg := model.Config{Architecture: "llama", HiddenSize: 16, IntermediateSize: 24, NumLayers: 1, NumHeads: 2,
		NumKVHeads: 1, HeadDim: 8, VocabSize: 16, MaxPositions: 32, RMSNormEps: 1e-5, RopeTheta: 10000, TieEmbeddings: true}
	spec := lora.DefaultSpec()
	spec.Init, spec.Scale, spec.Seed = "small", 0.1, uint64(step)
	set, err := lora.Attach(cfg, spec)
	if err != nil {
		t.Fatal(err)
	}
	st := &State{Step: step, Optimizer: "adam", Adapter: set, RNG: []uint64{1, 2, uint64(step)},
		Config: json.RawMessage(`{"lr":0.001}`), Runner: json.RawMessage(`{}`), Base: BaseIdentity{Path: "m", SHA256: "abc"}}
	for i, name := range set.ParamNames() {
		_ = name
		shape := set.Adapters[i/2].FactorShape(i%2, 2, spec.Rank)
		n := shape[0] * shape[1]
		m, v := make([]float32, n), make([]float32, n)
		for j := range m {
			m[j], v[j] = float32(step*j), float32(j)
		}
		st.Slots = append(st.Slots, []safetensors.Tensor{{Shape: shape, Data: m}, {Shape: shape, Data: v}})
	}
	return st
}

func TestSaveLoadRoundTripAndKeep(t *testing.T) {
	run := t.TempDir()
	for step := 1; step <= 4; step++ {
		if _, err := Save(run, testState(t, step), 2); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Load(run)
	if err != nil {
		t.Fatal(err)
	}
	want := testState(t, 4)
	var cfg bytes.Buffer
	if err := json.Compact(&cfg, got.Config); err != nil {
		t.Fatal(err)
	}
	if got.Step != 4 || !slices.Equal(got.RNG, want.RNG) || got.Optimizer != "adam" || cfg.String() != `{"lr":0.001}` {
		t.Fatalf("loaded %+v", got)
	}
	for i, a := range want.Adapter.Adapters {
		for k := range a.Factors {
			if !slices.Equal(a.Factors[k], got.Adapter.Adapters[i].Factors[k]) {
				t.Fatalf("adapter %s factor %d differs after the round trip", a.Module, k)
			}
		}
	}
	for i := range want.Slots {
		for k := range want.Slots[i] {
			if !slices.Equal(want.Slots[i][k].Data, got.Slots[i][k].Data) {
				t.Fatalf("slot %d/%d differs after the round trip", i, k)
			}
		}
	}
	entries, _ := os.ReadDir(filepath.Join(run, Dir))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"latest", "step-000003", "step-000004"}) {
		t.Fatalf("checkpoints folder holds %v, want the newest 2 and latest", names)
	}
}

// TestKilledSaveLeavesThePreviousCheckpoint simulates a kill at each point of a save: a half-written temporary
// folder, a half-written "latest.tmp", and a renamed folder that "latest" does not point at yet.
func TestKilledSaveLeavesThePreviousCheckpoint(t *testing.T) {
	run := t.TempDir()
	if _, err := Save(run, testState(t, 1), 0); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(run, Dir)
	partial := filepath.Join(root, ".step-000002.tmp123")
	if err := os.MkdirAll(partial, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(partial, "adapter.safetensors"), []byte("half"), 0o644)
	os.WriteFile(filepath.Join(root, "latest.tmp"), []byte("step-0000"), 0o644)
	// A complete folder renamed into place, but the kill came before "latest" moved.
	if err := os.MkdirAll(filepath.Join(root, "step-000002"), 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := Load(run)
	if err != nil || st.Step != 1 {
		t.Fatalf("after a killed save: step %v, err %v; want the step-1 checkpoint", st, err)
	}
	if _, err := Save(run, testState(t, 2), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Fatal("the stale temporary folder survived the next save")
	}
	if st, err := Load(run); err != nil || st.Step != 2 {
		t.Fatalf("after the next save: %v, %v", st, err)
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(t.TempDir()); err == nil {
		t.Fatal("an empty folder has no checkpoint")
	}
	run := t.TempDir()
	os.MkdirAll(filepath.Join(run, Dir), 0o755)
	os.WriteFile(filepath.Join(run, Dir, "latest"), []byte("../../etc\n"), 0o644)
	if _, err := Load(run); err == nil {
		t.Fatal("a latest pointer leaving the folder must be refused")
	}
}
