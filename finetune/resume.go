package finetune

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/internal/setting"
)

// ResumableSettings are the settings a resumed run may change (by their config keys); every other one comes from
// the run configuration saved in the checkpoint.
var ResumableSettings = []string{"steps", "eval_every", "save_every", "keep", "skip_nonfinite", "diverge_factor",
	"grad_checkpoint", "eval_batches", "trainer"}

// Resume loads the checkpoint at path (a run folder, meaning its latest checkpoint, or one checkpoint folder) and
// the run configuration saved with it, with changes applied: resumable settings and their new values as JSON
// ("steps": 200). The run continues in its run folder.
func Resume(path string, changes map[string]json.RawMessage) (*checkpoints.State, Config, error) {
	var cfg Config
	for _, name := range slices.Sorted(maps.Keys(changes)) {
		if !slices.Contains(ResumableSettings, name) {
			return nil, cfg, setting.Errorf(name, "cannot change when resuming (the run's settings are in its config.json)")
		}
	}
	st, err := checkpoints.Load(path)
	if err != nil {
		return nil, cfg, err
	}
	if err := json.Unmarshal(st.Config, &cfg); err != nil {
		return nil, cfg, fmt.Errorf("%s: run configuration: %w", path, err)
	}
	// Run folders written before the learning rate left optimizers.Config list it among the explicit fields.
	cfg.Opt.Explicit = slices.DeleteFunc(cfg.Opt.Explicit, func(f string) bool { return f == "lr" })
	for _, name := range slices.Sorted(maps.Keys(changes)) {
		patch, err := json.Marshal(map[string]json.RawMessage{name: changes[name]})
		if err == nil {
			err = json.Unmarshal(patch, &cfg)
		}
		if err != nil {
			return nil, cfg, setting.Errorf(name, "%s is not a value it can take", changes[name])
		}
	}
	cfg.Out = checkpoints.RunDir(path)
	if cfg.Steps < st.Step {
		return nil, cfg, setting.Errorf("steps", "%d is below the checkpoint's step %d", cfg.Steps, st.Step)
	}
	return st, cfg, nil
}

// CheckBase refuses to continue a checkpoint on another base model than the one it was trained on.
func CheckBase(st *checkpoints.State, base checkpoints.BaseIdentity) error {
	if base.SHA256 != st.Base.SHA256 {
		return fmt.Errorf("%s: this is not the base model the checkpoint was trained on (%s, sha256 %.12s…)",
			base.Path, st.Base.Path, st.Base.SHA256)
	}
	return nil
}
