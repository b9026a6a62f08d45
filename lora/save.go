package lora

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/internal/safetensors"
)

// Native adapter files in a run's output folder: every factor at full depth (so training can resume and export
// can fold), as adapter.safetensors plus adapter.json describing the spec and the base model.
const (
	nativeWeights = "adapter.safetensors"
	nativeConfig  = "adapter.json"
)

type nativeManifest struct {
	Format    string     `json:"format"`
	BaseModel string     `json:"base_model"`
	Spec      Spec       `json:"spec"`
	Adapters  []*Adapter `json:"adapters"`
}

// Save writes the adapter set into dir (atomically per file).
func Save(dir string, set *Set, baseModel string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	named := map[string]safetensors.Tensor{}
	for _, a := range set.Adapters {
		for i, f := range a.Factors {
			name := a.Module + "." + FactorName(i, set.Spec.Depth)
			named[name] = safetensors.Tensor{Shape: a.FactorShape(i, set.Spec.Depth, set.Spec.Rank), Data: f}
		}
	}
	if err := safetensors.Write(filepath.Join(dir, nativeWeights), named, map[string]string{"format": "saddle"}); err != nil {
		return err
	}
	m := nativeManifest{Format: "saddle-adapter/1", BaseModel: baseModel, Spec: set.Spec, Adapters: set.Adapters}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return fileio.WriteFile(filepath.Join(dir, nativeConfig), append(data, '\n'))
}

// Load reads an adapter set saved by Save.
func Load(dir string) (*Set, string, error) {
	cfgPath := filepath.Join(dir, nativeConfig)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, "", err
	}
	var m nativeManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, "", fmt.Errorf("%s: %w", cfgPath, err)
	}
	if m.Format != "saddle-adapter/1" {
		return nil, "", fmt.Errorf("%s: unknown adapter format %q", cfgPath, m.Format)
	}
	if err := m.Spec.Validate(); err != nil {
		return nil, "", fmt.Errorf("%s: %w", cfgPath, err)
	}
	weightsPath := filepath.Join(dir, nativeWeights)
	tensors, _, err := safetensors.Read(weightsPath)
	if err != nil {
		return nil, "", err
	}
	set := &Set{Spec: m.Spec, Adapters: m.Adapters}
	for _, a := range set.Adapters {
		a.Factors = make([][]float32, m.Spec.Depth)
		for i := range a.Factors {
			name := a.Module + "." + FactorName(i, m.Spec.Depth)
			t, ok := tensors[name]
			if !ok {
				return nil, "", fmt.Errorf("%s: missing tensor %q", weightsPath, name)
			}
			if want := a.FactorShape(i, m.Spec.Depth, m.Spec.Rank); !slices.Equal(t.Shape, want) {
				return nil, "", fmt.Errorf("%s: tensor %q has shape %v, want %v", weightsPath, name, t.Shape, want)
			}
			a.Factors[i] = t.Data
		}
	}
	return set, m.BaseModel, nil
}
