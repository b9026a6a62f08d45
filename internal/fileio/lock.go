package fileio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LockName is the lock file inside a locked folder. It stays after the lock is released (removing it could let two
// processes lock two different files of the same name); it is never written through Write, whose rename would put
// a new, unlocked file in its place.
const LockName = ".lock"

// Locked is an exclusive lock on a folder, held until Unlock or the end of the process (the kernel drops it when the
// process dies, however it dies).
type Locked struct {
	Dir string
	f   *os.File
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
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
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
	// Only the holder writes the file, so a reader sees the holder's line (or, for an instant, nothing).
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "pid %d: %s\n", os.Getpid(), what)
	}
	return &Locked{Dir: dir, f: f}, nil
}

// Unlock releases the lock (a nil lock is fine).
func (l *Locked) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the file releases the lock
	l.f = nil
	return err
}
