//go:build !linux

package fileio

import (
	"errors"
	"os"
)

// exchange is not available here; WriteDir moves the old folder aside instead.
func exchange(a, b string) error { return errors.ErrUnsupported }

// renameDir moves the folder from to to, over an empty folder (removed first) but never over anything else.
func renameDir(from, to string) error {
	if st, err := os.Lstat(to); err == nil && st.IsDir() {
		if err := os.Remove(to); err != nil { // fails unless empty
			return err
		}
	}
	return os.Rename(from, to)
}
