package fileio

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// WriteDir makes the folder final out of what fill writes into the empty temporary folder it is given
// (.NAME.partial-XXXXXX beside final). Only when fill returns nil is that folder renamed to final, so final is
// either as it was or complete; on any error (or a panic in fill) the temporary folder is removed. A process
// killed while fill runs leaves only the hidden temporary folder.
//
// Without replace, final must not exist or must be an empty folder; anything else is an error wrapping
// fs.ErrExist, decided by the rename itself, so a folder that appears while fill runs is not replaced. With
// replace, a folder at final is swapped for the new one (in one step where the system allows, else the old one is
// moved aside first and back on failure) and removed only after the new one is in place; a file at final is an
// error.
func WriteDir(final string, replace bool, fill func(dir string) error) error {
	parent, base := filepath.Split(filepath.Clean(final))
	if parent == "" {
		parent = "."
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".partial-")
	if err != nil {
		return err
	}
	published := false
	defer func() {
		if !published {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes 0700
		return err
	}
	if err := fill(tmp); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if !replace {
		if err := renameDir(tmp, final); err != nil { // fails on anything at final but an empty folder
			if _, serr := os.Lstat(final); serr == nil {
				return fmt.Errorf("%s: %w", final, fs.ErrExist)
			}
			return err
		}
		published = true
		return syncDir(parent)
	}
	st, err := os.Lstat(final)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
		published = true
		return syncDir(parent)
	case err != nil:
		return err
	case !st.IsDir():
		return fmt.Errorf("%s: not a folder; only a folder is replaced by a folder", final)
	}
	if err := swap(tmp, final); err == nil {
		published = true // tmp now holds the old folder, which the deferred RemoveAll would remove too
		if err := syncDir(parent); err != nil {
			return err
		}
		return os.RemoveAll(tmp)
	}
	// No exchange here: move the old folder aside, the new one in, then remove the old one.
	old, err := os.MkdirTemp(parent, "."+base+".old-")
	if err != nil {
		return err
	}
	if err := renameDir(final, old); err != nil { // over the empty folder just made
		os.Remove(old)
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Rename(old, final)
		return err
	}
	published = true
	if err := syncDir(parent); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

// WriteNew makes the file final out of what fill writes at the temporary path it is given
// (.NAME.partial-XXXXXX beside final; fill may replace that file, e.g. with Write). As WriteDir: final appears
// complete or not at all, and the temporary file is removed on any error. Without replace, an existing final (of
// any kind) is an error wrapping fs.ErrExist and is never touched, also when it appears while fill runs. With
// replace, a regular file at final is replaced in one rename; anything else there is an error.
func WriteNew(final string, replace bool, fill func(tmp string) error) error {
	dir, base := filepath.Split(filepath.Clean(final))
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".partial-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	f.Close()
	published := false
	defer func() {
		if !published {
			os.Remove(tmp)
		}
	}()
	if err := fill(tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	if replace {
		if st, err := os.Lstat(final); err == nil && !st.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file; only a file is replaced by a file", final)
		}
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
		published = true
		return syncDir(dir)
	}
	// link(2) fails when final exists, atomically; a file system without hard links falls back to a check and a
	// rename.
	if err := os.Link(tmp, final); err != nil {
		if isExistErr(err) {
			return fmt.Errorf("%s: %w", final, fs.ErrExist)
		}
		if _, serr := os.Lstat(final); serr == nil {
			return fmt.Errorf("%s: %w", final, fs.ErrExist)
		}
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
		published = true
		return syncDir(dir)
	}
	published = true
	os.Remove(tmp)
	return syncDir(dir)
}

// swap is exchange; tests take it away to check the fallback.
var swap = exchange

func isExistErr(err error) bool {
	return errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST)
}
