package fileio

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readAll(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// onlyNames fails unless dir holds exactly want (no temporary leftovers).
func onlyNames(t *testing.T, dir string, want ...string) {
	t.Helper()
	got := names(t, dir)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, want)
	}
}

func TestWriteDirAppearsComplete(t *testing.T) {
	parent := t.TempDir()
	final := filepath.Join(parent, "out")
	err := WriteDir(final, false, func(dir string) error {
		if _, err := os.Stat(final); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists while it is written", final)
		}
		if filepath.Dir(dir) != parent || !strings.HasPrefix(filepath.Base(dir), ".out.partial-") {
			t.Errorf("temporary folder %s, want .out.partial-* in %s", dir, parent)
		}
		return WriteFile(filepath.Join(dir, "a"), []byte("A"))
	})
	if err != nil {
		t.Fatal(err)
	}
	onlyNames(t, parent, "out")
	onlyNames(t, final, "a")
	if st, _ := os.Stat(final); st.Mode().Perm() != 0o755 {
		t.Errorf("folder mode %v, want 0755", st.Mode().Perm())
	}
}

// A fill that fails (or panics) halfway leaves nothing under the final name and no temporary folder.
func TestWriteDirFailureLeavesNothing(t *testing.T) {
	parent := t.TempDir()
	final := filepath.Join(parent, "out")
	boom := errors.New("boom")
	err := WriteDir(final, false, func(dir string) error {
		WriteFile(filepath.Join(dir, "a"), []byte("A"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want boom", err)
	}
	onlyNames(t, parent)
	func() {
		defer func() { recover() }()
		WriteDir(final, false, func(dir string) error { panic("halfway") })
	}()
	onlyNames(t, parent)
}

func TestWriteDirRefusesExisting(t *testing.T) {
	for _, kind := range []string{"folder", "file"} {
		t.Run(kind, func(t *testing.T) {
			parent := t.TempDir()
			final := filepath.Join(parent, "out")
			if kind == "folder" {
				os.Mkdir(final, 0o755)
				os.WriteFile(filepath.Join(final, "old"), []byte("OLD"), 0o644)
			} else {
				os.WriteFile(final, []byte("OLD"), 0o644)
			}
			err := WriteDir(final, false, func(dir string) error { return WriteFile(filepath.Join(dir, "a"), []byte("A")) })
			if !errors.Is(err, fs.ErrExist) {
				t.Fatalf("error %v, want fs.ErrExist", err)
			}
			onlyNames(t, parent, "out")
			if kind == "folder" {
				onlyNames(t, final, "old")
				if readAll(t, filepath.Join(final, "old")) != "OLD" {
					t.Error("old file changed")
				}
			} else if readAll(t, final) != "OLD" {
				t.Error("old file changed")
			}
		})
	}
}

// An empty folder (made by hand beforehand) is taken.
func TestWriteDirTakesEmptyFolder(t *testing.T) {
	parent := t.TempDir()
	final := filepath.Join(parent, "out")
	os.Mkdir(final, 0o755)
	if err := WriteDir(final, false, func(dir string) error { return WriteFile(filepath.Join(dir, "a"), []byte("A")) }); err != nil {
		t.Fatal(err)
	}
	onlyNames(t, final, "a")
}

// With replace the old folder stays whole until the new one is complete, and a failed fill keeps it.
func TestWriteDirReplace(t *testing.T) {
	for _, name := range []string{"exchange", "fallback"} {
		t.Run(name, func(t *testing.T) {
			if name == "fallback" {
				swap = func(a, b string) error { return errors.ErrUnsupported }
				defer func() { swap = exchange }()
			}
			testWriteDirReplace(t)
		})
	}
}

func testWriteDirReplace(t *testing.T) {
	parent := t.TempDir()
	final := filepath.Join(parent, "out")
	os.Mkdir(final, 0o755)
	os.WriteFile(filepath.Join(final, "old"), []byte("OLD"), 0o644)
	boom := errors.New("boom")
	if err := WriteDir(final, true, func(dir string) error {
		WriteFile(filepath.Join(dir, "a"), []byte("A"))
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("error %v, want boom", err)
	}
	onlyNames(t, parent, "out")
	onlyNames(t, final, "old")
	if err := WriteDir(final, true, func(dir string) error {
		if readAll(t, filepath.Join(final, "old")) != "OLD" {
			t.Error("the old folder changed before the new one was complete")
		}
		return WriteFile(filepath.Join(dir, "a"), []byte("A"))
	}); err != nil {
		t.Fatal(err)
	}
	onlyNames(t, parent, "out")
	onlyNames(t, final, "a")
	file := filepath.Join(parent, "file")
	os.WriteFile(file, []byte("F"), 0o644)
	if err := WriteDir(file, true, func(dir string) error { return nil }); err == nil {
		t.Error("a file was replaced by a folder")
	}
	onlyNames(t, parent, "file", "out")
}

func TestWriteNew(t *testing.T) {
	parent := t.TempDir()
	final := filepath.Join(parent, "x.gguf")
	boom := errors.New("boom")
	if err := WriteNew(final, false, func(tmp string) error {
		WriteFile(tmp, []byte("half"))
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("error %v, want boom", err)
	}
	onlyNames(t, parent)
	write := func(replace bool, data string) error {
		return WriteNew(final, replace, func(tmp string) error {
			if !strings.HasPrefix(filepath.Base(tmp), ".x.gguf.partial-") {
				t.Errorf("temporary file %s", tmp)
			}
			return WriteFile(tmp, []byte(data))
		})
	}
	if err := write(false, "one"); err != nil {
		t.Fatal(err)
	}
	if err := write(false, "two"); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("error %v, want fs.ErrExist", err)
	}
	if readAll(t, final) != "one" {
		t.Error("an existing file was replaced without replace")
	}
	onlyNames(t, parent, "x.gguf")
	if err := write(true, "three"); err != nil {
		t.Fatal(err)
	}
	if readAll(t, final) != "three" {
		t.Error("not replaced")
	}
	if st, _ := os.Stat(final); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	onlyNames(t, parent, "x.gguf")
	sub := filepath.Join(parent, "d.gguf")
	os.Mkdir(sub, 0o755)
	if err := WriteNew(sub, true, func(tmp string) error { return WriteFile(tmp, []byte("x")) }); err == nil {
		t.Error("a folder was replaced by a file")
	}
	onlyNames(t, parent, "d.gguf", "x.gguf")
}
