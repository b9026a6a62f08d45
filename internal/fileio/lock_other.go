//go:build !unix

package fileio

import (
	"errors"
	"os"
)

var errBusy = errors.New("locked by another process")

// lockFile does nothing where flock is not available: folders are not locked there.
func lockFile(*os.File) error { return nil }
