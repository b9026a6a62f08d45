package finetune

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/internal/fileio"
)

// RunFiles are the entries a training run writes into its folder (besides fileio.LockName and fileio's temporary
// files).
var RunFiles = []string{"config.json", "metrics.jsonl", "summary.json", checkpoints.Dir, "adapter.json", "adapter.safetensors"}

// overwrittenPrefix names the hidden folder an overwritten run is moved into before it is deleted.
const overwrittenPrefix = ".overwritten-run"

// RunExistsError reports a folder that already holds a run (Files are its run files).
type RunExistsError struct {
	Dir   string
	Files []string
}

func (e *RunExistsError) Error() string {
	return fmt.Sprintf("%s already holds a run (%s)", e.Dir, strings.Join(e.Files, ", "))
}

// NotRunError reports a non-empty folder whose entries (Files) are not a run's: saddle never deletes those.
type NotRunError struct {
	Dir   string
	Files []string
	Kind  string // "run" (when empty) or "sweep"
}

func (e *NotRunError) Error() string {
	const most = 5
	files := e.Files
	more := ""
	if len(files) > most {
		files, more = files[:most], fmt.Sprintf(" and %d more", len(e.Files)-most)
	}
	kind := e.Kind
	if kind == "" {
		kind = "run"
	}
	return fmt.Sprintf("%s is not empty and holds files that are not a saddle %s's (%s%s)", e.Dir, kind, strings.Join(files, ", "), more)
}

// ignorable are entries that say nothing about a folder's owner: the lock, fileio's temporary files, and an
// overwritten run that was being deleted when its process died.
func ignorable(name string) bool {
	return name == fileio.LockName || strings.HasPrefix(name, overwrittenPrefix) ||
		(strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp"))
}

// CheckFreshOut accepts an absent or empty folder for a new run. A folder with a run in it is a *RunExistsError,
// one with anything else a *NotRunError (which wins: a run folder with foreign files in it is not saddle's to clear).
func CheckFreshOut(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var run, other []string
	for _, e := range entries {
		switch name := e.Name(); {
		case ignorable(name):
		case slices.Contains(RunFiles, name):
			run = append(run, name)
		default:
			other = append(other, name)
		}
	}
	if len(other) > 0 {
		return &NotRunError{Dir: dir, Files: other}
	}
	if len(run) > 0 {
		return &RunExistsError{Dir: dir, Files: run}
	}
	return nil
}

// ClearRun removes the run in dir so that a new one starts from nothing: the run's entries are first renamed into
// one hidden folder (each rename atomic; the checkpoints go first, so a half-cleared folder is never resumable
// into the old run) and that folder is then deleted. Anything CheckFreshOut calls foreign refuses the whole
// clearing before anything is moved. The caller holds the folder's lock.
func ClearRun(dir string) error {
	err := CheckFreshOut(dir)
	var exists *RunExistsError
	if !errors.As(err, &exists) {
		return err // nil (nothing to clear) or a refusal
	}
	aside, err := os.MkdirTemp(dir, overwrittenPrefix)
	if err != nil {
		return err
	}
	order := slices.Clone(exists.Files)
	slices.SortStableFunc(order, func(a, b string) int { // checkpoints first
		switch {
		case a == checkpoints.Dir:
			return -1
		case b == checkpoints.Dir:
			return 1
		}
		return 0
	})
	for _, name := range order {
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(aside, name)); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries { // this one and leftovers of earlier clearings
		if strings.HasPrefix(e.Name(), overwrittenPrefix) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// SweepFiles are the entries a sweep (Sweep) writes into its folder: the run folders, the tables, the fits, the
// plots, the report and the command lines that ran it.
var SweepFiles = []string{"runs", "runs.json", "runs.csv", "fits.csv", "fits.json", "loss.png", "loss.svg", "delta_w.png",
	"delta_w.svg", "escape_vs_lambda.png", "escape_vs_lambda.svg", reportFile, commandFile}

// CheckSweepOut accepts an absent or empty folder for a sweep, or one that holds only a sweep's own files (a rerun
// of a sweep keeps its finished runs). Anything else is a *NotRunError: a sweep writes only where nothing of
// someone else's would be mixed with its results.
func CheckSweepOut(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var other []string
	for _, e := range entries {
		if name := e.Name(); !ignorable(name) && !slices.Contains(SweepFiles, name) {
			other = append(other, name)
		}
	}
	if len(other) > 0 {
		return &NotRunError{Dir: dir, Files: other, Kind: "sweep"}
	}
	return nil
}
