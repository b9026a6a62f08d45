package main

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// snapshot is every file (its bytes) and folder under root, by path relative to root.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			out[rel] = "<folder>"
			return nil
		}
		b, err := os.ReadFile(path)
		out[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: %s is gone", what, k)
		} else if g != want[k] {
			t.Errorf("%s: %s changed", what, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %s appeared", what, k)
		}
	}
}

// exportCase is one export: its format and whether --out names a .gguf file or a folder.
type exportCase struct {
	format string
	out    string // the last element of --out
}

var safetyCases = []exportCase{
	{"peft", "peft"}, {"merged", "merged"}, {"gguf", "adapter.gguf"}, {"gguf", "gguf-folder"},
	{"merged-gguf", "merged.gguf"}, {"merged-gguf", "merged-gguf-folder"},
}

func (c exportCase) name() string { return c.format + "/" + c.out }

// exportArgs is the command line exporting run in case c's format to out.
func exportArgs(run string, c exportCase, out string, extra ...string) []string {
	return append([]string{"export", "--checkpoint", run, "--format", c.format, "--out", out}, extra...)
}

// An existing --out (a file, or a folder with anything in it) is refused with exit 2, naming it and suggesting
// another path or --overwrite, and not a byte under its parent changes. An empty folder is taken.
func TestExportRefusesExistingOutput(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	run := fakeRun(t, gguf)
	for _, c := range safetyCases {
		t.Run(c.name(), func(t *testing.T) {
			parent := t.TempDir()
			out := filepath.Join(parent, c.out)
			if strings.HasSuffix(c.out, ".gguf") {
				os.WriteFile(out, []byte("a file the user had"), 0o644)
			} else {
				os.Mkdir(out, 0o755)
				os.WriteFile(filepath.Join(out, "notes.txt"), []byte("the user's notes"), 0o644)
			}
			before := snapshot(t, parent)
			code, _, errs := saddle(t, exportArgs(run, c, out)...)
			if code != 2 || !strings.Contains(errs, out) || !strings.Contains(errs, "--overwrite") || !strings.Contains(errs, "another path") {
				t.Errorf("exit %d, want 2 naming %s and suggesting another path or --overwrite:\n%s", code, out, errs)
			}
			sameSnapshot(t, "refused export", snapshot(t, parent), before)
			// Refused before any work: before the base model is even looked for.
			args := append(exportArgs(run, c, out), "--model", filepath.Join(parent, "no-such-model.gguf"))
			if code, _, errs := saddle(t, args...); code != 2 || !strings.Contains(errs, "already exists") {
				t.Errorf("with a missing --model: exit %d, want 2 refusing --out first:\n%s", code, errs)
			}
			sameSnapshot(t, "refused export", snapshot(t, parent), before)

			empty := filepath.Join(parent, "empty-"+strings.TrimSuffix(c.out, ".gguf"))
			os.Mkdir(empty, 0o755)
			if c.format == "gguf" || c.format == "merged-gguf" {
				if strings.HasSuffix(c.out, ".gguf") {
					return // a .gguf --out is a file; the folder case takes the empty folder
				}
			}
			if code, _, errs := saddle(t, exportArgs(run, c, empty)...); code != 0 {
				t.Errorf("export into an empty folder: exit %d\n%s", code, errs)
			}
		})
	}
}

// An --out of the other kind is refused even with --overwrite: a folder never replaces a file, nor a file a folder.
func TestExportOverwriteKeepsKinds(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	run := fakeRun(t, gguf)
	parent := t.TempDir()
	file := filepath.Join(parent, "file")
	os.WriteFile(file, []byte("a file"), 0o644)
	folder := filepath.Join(parent, "folder.gguf")
	os.Mkdir(folder, 0o755)
	os.WriteFile(filepath.Join(folder, "x"), []byte("x"), 0o644)
	before := snapshot(t, parent)
	for _, args := range [][]string{
		exportArgs(run, exportCase{format: "peft"}, file, "--overwrite"),
		exportArgs(run, exportCase{format: "merged"}, file, "--overwrite"),
		exportArgs(run, exportCase{format: "gguf"}, file, "--overwrite"),
		exportArgs(run, exportCase{format: "gguf"}, folder, "--overwrite"),
		exportArgs(run, exportCase{format: "merged-gguf"}, folder, "--overwrite"),
	} {
		if code, _, errs := saddle(t, args...); code != 2 || !strings.Contains(errs, args[len(args)-2]) {
			t.Errorf("saddle %v: exit %d, want 2 naming --out\n%s", args, code, errs)
		}
	}
	sameSnapshot(t, "refused exports", snapshot(t, parent), before)
}

// With --overwrite the old output is replaced by exactly what a fresh export writes (nothing of the old one
// is left in a replaced folder), and no temporary file or folder stays behind.
func TestExportOverwriteReplaces(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	run := fakeRun(t, gguf)
	for _, c := range safetyCases {
		t.Run(c.name(), func(t *testing.T) {
			fresh, parent := t.TempDir(), t.TempDir()
			out := filepath.Join(parent, c.out)
			if code, _, errs := saddle(t, exportArgs(run, c, out, "--dtype", "F32")...); code != 0 {
				t.Fatalf("first export: exit %d\n%s", code, errs)
			}
			if !strings.HasSuffix(c.out, ".gguf") {
				os.WriteFile(filepath.Join(out, "notes.txt"), []byte("old"), 0o644)
			}
			old := snapshot(t, parent)
			if code, _, errs := saddle(t, exportArgs(run, c, out, "--dtype", "F16", "--overwrite")...); code != 0 {
				t.Fatalf("export --overwrite: exit %d\n%s", code, errs)
			}
			if code, _, errs := saddle(t, exportArgs(run, c, filepath.Join(fresh, c.out), "--dtype", "F16")...); code != 0 {
				t.Fatalf("fresh export: exit %d\n%s", code, errs)
			}
			got := snapshot(t, parent)
			sameSnapshot(t, "--overwrite against a fresh export", got, snapshot(t, fresh))
			if maps.Equal(got, old) {
				t.Error("--overwrite left the old export as it was")
			}
		})
	}
}

// An export that fails after writing its files (standing for a crash or a kill before the rename) leaves nothing
// under --out and no temporary leftovers; with --overwrite, the previous export is left byte for byte.
func TestExportFailureLeavesNothing(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	run := fakeRun(t, gguf)
	var sawPartial []string
	record := func(tmp string) error {
		if _, err := os.Stat(tmp); err != nil {
			t.Errorf("the fault hook got %s: %v", tmp, err)
		}
		sawPartial = append(sawPartial, tmp)
		return errors.New("injected failure before the rename")
	}
	defer func() { exportFault = nil }()
	for _, c := range safetyCases {
		t.Run(c.name(), func(t *testing.T) {
			exportFault = record
			parent := t.TempDir()
			out := filepath.Join(parent, c.out)
			code, _, errs := saddle(t, exportArgs(run, c, out)...)
			if code != 1 || !strings.Contains(errs, "injected failure") {
				t.Errorf("exit %d, want 1 with the injected error\n%s", code, errs)
			}
			if names := snapshot(t, parent); len(names) != 1 {
				t.Errorf("a failed export left %v", slices.Sorted(maps.Keys(names)))
			}
			if n := len(sawPartial); n == 0 || !strings.HasPrefix(filepath.Base(sawPartial[n-1]), "."+c.out+".partial-") {
				t.Errorf("the export was not written under a temporary name: %v", sawPartial)
			}

			exportFault = nil
			if code, _, errs := saddle(t, exportArgs(run, c, out)...); code != 0 {
				t.Fatalf("export: exit %d\n%s", code, errs)
			}
			before := snapshot(t, parent)
			exportFault = func(string) error { return errors.New("injected failure before the rename") }
			code, _, errs = saddle(t, exportArgs(run, c, out, "--dtype", "F16", "--overwrite")...)
			if code != 1 || !strings.Contains(errs, "injected failure") {
				t.Errorf("--overwrite: exit %d, want 1 with the injected error\n%s", code, errs)
			}
			sameSnapshot(t, "failed --overwrite", snapshot(t, parent), before)
		})
	}
}

// A folder or file that appears at --out while the export is written is not replaced: the rename itself
// refuses it (exit 2, naming --out), and the export's temporary files are removed.
func TestExportDoesNotReplaceWhatAppearsMeanwhile(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	run := fakeRun(t, gguf)
	for _, c := range []exportCase{{"peft", "peft"}, {"gguf", "adapter.gguf"}} {
		t.Run(c.name(), func(t *testing.T) {
			parent := t.TempDir()
			out := filepath.Join(parent, c.out)
			exportFault = func(string) error {
				if strings.HasSuffix(out, ".gguf") {
					return os.WriteFile(out, []byte("another process"), 0o644)
				}
				os.Mkdir(out, 0o755)
				return os.WriteFile(filepath.Join(out, "x"), []byte("another process"), 0o644)
			}
			defer func() { exportFault = nil }()
			code, _, errs := saddle(t, exportArgs(run, c, out)...)
			if code != 2 || !strings.Contains(errs, out) {
				t.Errorf("exit %d, want 2 naming %s\n%s", code, out, errs)
			}
			got := snapshot(t, parent)
			for k, v := range got {
				if v != "<folder>" && v != "another process" {
					t.Errorf("%s: left behind or replaced", k)
				}
			}
			if len(got) != 2 && len(got) != 3 {
				t.Errorf("left %v", slices.Sorted(maps.Keys(got)))
			}
		})
	}
}

// An export is never written at, inside or around the run folder, its checkpoint or the base model, not even with
// --overwrite, and the refusal says why; no byte of the run or the model changes.
func TestExportNeverWritesOverItsSources(t *testing.T) {
	ggufShared, hfShared := testenv.Stories260K(t)
	models := t.TempDir() // copies, so that a failure of this test cannot touch the shared models
	gguf, hf := filepath.Join(models, "stories260K.gguf"), filepath.Join(models, "stories260K-hf")
	testenv.CopyTree(t, ggufShared, gguf)
	testenv.CopyTree(t, hfShared, hf)
	run := fakeRun(t, gguf)
	step := filepath.Join(run, "checkpoints", "step-000010")
	os.MkdirAll(step, 0o755)
	for _, f := range []string{"adapter.json", "adapter.safetensors"} {
		data, _ := os.ReadFile(filepath.Join(run, f))
		os.WriteFile(filepath.Join(step, f), data, 0o644)
	}
	os.WriteFile(filepath.Join(run, "checkpoints", "latest"), []byte("step-000010\n"), 0o644)
	runBefore, modelsBefore := snapshot(t, run), snapshot(t, models)
	runLink := filepath.Join(t.TempDir(), "run-link")
	if err := os.Symlink(run, runLink); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		checkpoint, format, out, want string
		extra                         []string
	}{
		{run, "peft", run, "is the run folder", nil},
		{run, "merged", run, "is the run folder", nil},
		{run, "gguf", run, "is the run folder", nil},
		{run, "peft", filepath.Join(run, "peft"), "is inside the run folder", nil},
		{run, "gguf", filepath.Join(run, "adapter.gguf"), "is inside the run folder", nil},
		{run, "peft", filepath.Dir(run), "holds the run folder", nil},
		{runLink, "peft", run, "the run folder", nil},
		{run, "peft", filepath.Join(runLink, "checkpoints"), "is inside the run folder", nil},
		{step, "peft", step, "is the checkpoint", nil},
		{step, "peft", run, "is the run folder", nil},
		{run, "merged-gguf", gguf, "is the base model", nil},
		{run, "merged-gguf", models, "holds the base model", nil},
		{run, "merged", hf, "is the base model", []string{"--model", hf}},
		{run, "merged", filepath.Join(hf, "merged"), "is inside the base model", []string{"--model", hf}},
	} {
		args := append(exportArgs(tc.checkpoint, exportCase{format: tc.format}, tc.out, "--overwrite"), tc.extra...)
		code, _, errs := saddle(t, args...)
		if code != 2 || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "even with --overwrite") {
			t.Errorf("saddle %v: exit %d, want 2 saying %q even with --overwrite\n%s", args, code, tc.want, errs)
		}
		sameSnapshot(t, "the run", snapshot(t, run), runBefore)
		sameSnapshot(t, "the models", snapshot(t, models), modelsBefore)
	}
}
