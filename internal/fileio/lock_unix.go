//go:build unix

package fileio

import (
	"errors"
	"os"
	"syscall"
)

var errBusy = errors.New("locked by another process")

// lockFile takes an exclusive flock on f without waiting; errBusy when another open file holds it (flock locks
// belong to open files, so a second LockDir in the same process is refused too).
func lockFile(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return errBusy
		default:
			return err
		}
	}
}
