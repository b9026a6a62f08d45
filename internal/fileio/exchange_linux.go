package fileio

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// exchange swaps the paths a and b in one step (renameat2 RENAME_EXCHANGE).
func exchange(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}

// renameDir is rename(2) itself, which (unlike os.Rename) moves a folder over an empty folder, in one step, and
// fails on a folder that is not empty or on a file.
func renameDir(from, to string) error {
	if err := syscall.Rename(from, to); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
