//go:build unix

package fileio

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLockDirRefusesASecondHolder: a second lock on a held folder is refused at once with the holder's pid and
// description; after Unlock the folder can be locked again, and the lock file is not replaced by a rename.
func TestLockDirRefusesASecondHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run") // absent: LockDir creates it
	first, err := LockDir(dir, "saddle train --out run")
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockDir(dir, "second")
	var busy *BusyError
	if !errors.As(err, &busy) {
		t.Fatalf("second LockDir: %v, want a *BusyError", err)
	}
	want := "pid " + strconv.Itoa(os.Getpid()) + ": saddle train --out run"
	if busy.Holder != want || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), want) {
		t.Fatalf("refusal %q (holder %q), want it to name %s and %q", err, busy.Holder, dir, want)
	}
	if err := first.Unlock(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("Unlock left the folder LockDir made: %v", err)
	}
	// A lock file a killed holder left behind (with its line) does not hold the folder.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, LockName), []byte("pid 1: killed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := LockDir(dir, "third")
	if err != nil {
		t.Fatalf("with a stale lock file: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, LockName)); !strings.HasSuffix(string(data), ": third\n") {
		t.Fatalf("lock file %q does not name the new holder", data)
	}
	if err := again.Unlock(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("Unlock left %d entries in a folder it did not make", len(entries))
	}
}

func TestLockDirOnAFileFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if l, err := LockDir(file, "x"); err == nil {
		l.Unlock()
		t.Fatal("LockDir on a file succeeded")
	}
}
