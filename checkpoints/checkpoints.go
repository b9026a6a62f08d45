// Package checkpoints saves and loads training state atomically: a kill at any instant leaves the previous
// checkpoint intact and loadable.
//
// Layout inside a run folder:
//
//	checkpoints/step-000120/  adapter.json adapter.safetensors optimizer.safetensors state.json
//	checkpoints/latest        the name of the newest complete checkpoint folder (written last)
//
// A checkpoint folder is written under a temporary name, every file fsynced, then renamed into place; only then is
// "latest" replaced (temp file, fsync, rename). Readers follow "latest", so they never see a partial checkpoint.
package checkpoints

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/internal/safetensors"
	"github.com/saddle-ml/saddle/lora"
)

// Dir is the checkpoints folder inside a run folder.
const Dir = "checkpoints"

const (
	latestFile    = "latest"
	stateFile     = "state.json"
	optimizerFile = "optimizer.safetensors"
)

// BaseIdentity pins the base model a checkpoint belongs to.
type BaseIdentity struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"` // over the weight files (and config.json for HF folders), in name order
	// Model is --model as given, which resolves again (a Hugging Face name, the built-in model) where Path, a
	// cache file, may not; the checkpoint's adapter.json names it as the base. Empty in older checkpoints.
	Model string `json:"model,omitempty"`
}

// State is everything needed to continue a run exactly where it stopped.
type State struct {
	Step      int                    `json:"step"`
	Base      BaseIdentity           `json:"base"`
	Config    json.RawMessage        `json:"config"`    // the run configuration
	Optimizer string                 `json:"optimizer"` // registered name
	Runner    json.RawMessage        `json:"runner"`    // runner bookkeeping (escape tracker, losses, token count)
	RNG       []uint64               `json:"rng"`       // dropout random state
	Adapter   *lora.Set              `json:"-"`
	Slots     [][]safetensors.Tensor `json:"-"` // optimizer slots per adapter parameter, in Set.Tensors order
}

// Save writes st as checkpoints/step-NNNNNN in runDir, points "latest" at it, and deletes all but the newest keep
// checkpoints (keep ≤ 0 keeps all).
func Save(runDir string, st *State, keep int) (string, error) {
	root := filepath.Join(runDir, Dir)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	name := fmt.Sprintf("step-%06d", st.Step)
	tmp, err := os.MkdirTemp(root, "."+name+".tmp")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // a no-op after the rename
	if err := lora.Save(tmp, st.Adapter, cmp.Or(st.Base.Model, st.Base.Path)); err != nil {
		return "", err
	}
	slots := map[string]safetensors.Tensor{}
	names := st.Adapter.ParamNames()
	if len(st.Slots) != len(names) {
		return "", fmt.Errorf("checkpoint: %d slot groups for %d adapter parameters", len(st.Slots), len(names))
	}
	for i, group := range st.Slots {
		for k, t := range group {
			slots[fmt.Sprintf("%s/slot%d", names[i], k)] = t
		}
	}
	if err := safetensors.Write(filepath.Join(tmp, optimizerFile), slots, map[string]string{"optimizer": st.Optimizer}); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return "", err
	}
	if err := fileio.WriteFile(filepath.Join(tmp, stateFile), data); err != nil {
		return "", err
	}
	final := filepath.Join(root, name)
	// ReplaceDir also removes a same-step leftover from a run that died after renaming.
	if err := fileio.ReplaceDir(tmp, final); err != nil {
		return "", err
	}
	if err := fileio.WriteFile(filepath.Join(root, latestFile), []byte(name+"\n")); err != nil {
		return "", err
	}
	return final, prune(root, name, keep)
}

// prune deletes complete checkpoints older than the newest keep, and stale temporary folders.
func prune(root, current string, keep int) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	var steps []string
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e.Name(), ".step-"):
			os.RemoveAll(filepath.Join(root, e.Name()))
		case e.IsDir() && strings.HasPrefix(e.Name(), "step-"):
			steps = append(steps, e.Name())
		}
	}
	if keep <= 0 {
		return nil
	}
	sort.Strings(steps)
	for len(steps) > keep {
		if steps[0] != current {
			if err := os.RemoveAll(filepath.Join(root, steps[0])); err != nil {
				return err
			}
		}
		steps = steps[1:]
	}
	return nil
}

// RunDir is the run folder of path: the folder holding a checkpoint folder, or path itself.
func RunDir(path string) string {
	if _, err := os.Stat(filepath.Join(path, stateFile)); err == nil {
		return filepath.Dir(filepath.Dir(path))
	}
	return path
}

// Resolve turns a run folder (meaning its latest checkpoint) or a checkpoint folder into a checkpoint folder.
func Resolve(path string) (string, error) {
	if _, err := os.Stat(filepath.Join(path, stateFile)); err == nil {
		return path, nil
	}
	latest, err := os.ReadFile(filepath.Join(path, Dir, latestFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s: no checkpoint here (neither %s nor %s/%s/%s)", path, stateFile, path, Dir, latestFile)
		}
		return "", err
	}
	name := strings.TrimSpace(string(latest))
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return "", fmt.Errorf("%s: %s/%s names %q, not a checkpoint folder", path, Dir, latestFile, name)
	}
	return filepath.Join(path, Dir, name), nil
}

// Load reads the checkpoint at path (a run folder or a checkpoint folder).
func Load(path string) (*State, error) {
	dir, err := Resolve(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	if st.Adapter, _, err = lora.Load(dir); err != nil {
		return nil, err
	}
	optPath := filepath.Join(dir, optimizerFile)
	slots, _, err := safetensors.Read(optPath)
	if err != nil {
		return nil, err
	}
	for _, name := range st.Adapter.ParamNames() {
		var group []safetensors.Tensor
		for k := 0; ; k++ {
			t, ok := slots[fmt.Sprintf("%s/slot%d", name, k)]
			if !ok {
				break
			}
			group = append(group, t)
		}
		st.Slots = append(st.Slots, group)
	}
	return &st, nil
}
