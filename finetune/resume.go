package finetune

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/internal/setting"
)

// ResumeChanges are the settings a resumed run may change; nil keeps the saved value. Every other setting comes
// from the run configuration saved in the checkpoint.
type ResumeChanges struct {
	Steps, EvalEvery, SaveEvery, Keep, SkipNonfinite *int
	DivergeFactor                                    *float64
}

// ResumableSettings names the settings ResumeChanges holds, as config keys.
var ResumableSettings = []string{"steps", "eval_every", "save_every", "keep", "skip_nonfinite", "diverge_factor"}

// Resume loads the checkpoint at path (a run folder, meaning its latest checkpoint, or one checkpoint folder) and
// the run configuration saved with it, with changes applied. The run continues in its run folder.
func Resume(path string, changes ResumeChanges) (*checkpoints.State, Config, error) {
	var cfg Config
	st, err := checkpoints.Load(path)
	if err != nil {
		return nil, cfg, err
	}
	if err := json.Unmarshal(st.Config, &cfg); err != nil {
		return nil, cfg, fmt.Errorf("%s: run configuration: %w", path, err)
	}
	// Run folders written before the learning rate left optimizers.Config list it among the explicit fields.
	cfg.Opt.Explicit = slices.DeleteFunc(cfg.Opt.Explicit, func(f string) bool { return f == "lr" })
	for _, c := range []struct {
		dst *int
		src *int
	}{{&cfg.Steps, changes.Steps}, {&cfg.EvalEvery, changes.EvalEvery}, {&cfg.SaveEvery, changes.SaveEvery},
		{&cfg.Keep, changes.Keep}, {&cfg.SkipNonfinite, changes.SkipNonfinite}} {
		if c.src != nil {
			*c.dst = *c.src
		}
	}
	if changes.DivergeFactor != nil {
		cfg.DivergeFactor = *changes.DivergeFactor
	}
	// The run folder is the one given, or the one holding the given checkpoint folder.
	cfg.Out = path
	if _, err := os.Stat(filepath.Join(path, "state.json")); err == nil {
		cfg.Out = filepath.Dir(filepath.Dir(path))
	}
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
