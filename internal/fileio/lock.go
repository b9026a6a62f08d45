package fileio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LockName is the lock file inside a locked folder. Unlock removes it (a process that dies leaves it behind,
// unlocked); it is never written through Write, whose rename would put a new, unlocked file in its place.
const LockName = ".lock"

// Locked is an exclusive lock on a folder, held until Unlock or the end of the process (the kernel drops it when the
// process dies, however it dies).
type Locked struct {
	Dir     string
	f       *os.File
	created bool // LockDir made Dir; Unlock removes it again when it is empty
}

// BusyError reports a folder locked by another process; Holder is what that process wrote into the lock file (its
// pid and command line), or "" when it wrote nothing yet.
type BusyError struct {
	Dir    string
	Holder string
}

func (e *BusyError) Error() string {
	holder := "another process"
	if e.Holder != "" {
		holder = e.Holder
	}
	return fmt.Sprintf("%s is in use by %s; wait for it to finish or choose another folder", e.Dir, holder)
}

// LockDir creates dir if needed and takes an exclusive lock on dir/.lock without waiting: a folder another process
// holds is refused at once with a *BusyError naming the holder. what describes the holder for that message (e.g.
// the command line); the lock file records "pid N: what".
func LockDir(dir, what string) (*Locked, error) {
	path := filepath.Join(dir, LockName)
	for tries := 0; ; tries++ {
		_, statErr := os.Stat(dir)
		created := errors.Is(statErr, os.ErrNotExist)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if errors.Is(err, os.ErrNotExist) && tries < 10 { // the previous holder just removed the folder it made
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := lockFile(f); err != nil {
			f.Close()
			if errors.Is(err, errBusy) {
				holder, _ := os.ReadFile(path)
				return nil, &BusyError{Dir: dir, Holder: strings.TrimSpace(string(holder))}
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		// The previous holder removes the file before it lets go: a lock on a file no longer at path is no lock.
		held, err1 := f.Stat()
		now, err2 := os.Stat(path)
		if err1 != nil || err2 != nil || !os.SameFile(held, now) {
			f.Close()
			if tries < 10 {
				continue
			}
			return nil, fmt.Errorf("%s: the lock file keeps changing", path)
		}
		// Only the holder writes the file, so a reader sees the holder's line (or, for an instant, nothing).
		if err := f.Truncate(0); err == nil {
			fmt.Fprintf(f, "pid %d: %s\n", os.Getpid(), what)
		}
		return &Locked{Dir: dir, f: f, created: created}, nil
	}
}

// Unlock releases the lock (a nil lock is fine).
func (l *Locked) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	os.Remove(filepath.Join(l.Dir, LockName)) // while still held; see LockDir
	err := l.f.Close()                        // closing the file releases the lock
	l.f = nil
	if l.created {
		os.Remove(l.Dir) // only if empty: a refused run leaves no folder behind
	}
	return err
}
