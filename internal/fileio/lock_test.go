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
	info, err := os.Stat(filepath.Join(dir, LockName))
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
	again, err := LockDir(dir, "third")
	if err != nil {
		t.Fatalf("after Unlock: %v", err)
	}
	defer again.Unlock()
	after, err := os.Stat(filepath.Join(dir, LockName))
	if err != nil || !os.SameFile(info, after) {
		t.Fatalf("the lock file was replaced (%v)", err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, LockName)); !strings.HasSuffix(string(data), ": third\n") {
		t.Fatalf("lock file %q does not name the new holder", data)
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
