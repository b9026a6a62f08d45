// Package fileio writes files so that a reader, a crash or a kill never leaves half of one behind: data go to a
// temporary file beside the target, which is fsynced and renamed over the target, and then the folder is fsynced.
// Every file the project writes goes through here; the binary file readers open their files through Open, text and
// JSON files are read through ReadFile, and line-delimited files line by line through ReadLine (bounded).
package fileio

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write creates path (or replaces it) with what fill writes. fill writes through a buffer, which keeps the first
// write error and reports it when flushed, so fill may ignore the results of single writes. When fill returns an
// error, or anything fails, the temporary file is removed and path is left as it was. fill's error is returned as
// it is; other errors name path (or the temporary file). The file is made readable by everyone (0644): files the
// project writes are meant to be shared.
func Write(path string, fill func(w io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	renamed := false
	defer func() { // also when fill panics
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err := fill(w); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil { // CreateTemp makes 0600
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	renamed = true
	return syncDir(filepath.Dir(path))
}

// WriteFile creates path (or replaces it) with data, as Write does.
func WriteFile(path string, data []byte) error {
	return Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// ReplaceDir moves the finished folder tmp to final, replacing any folder already there, and fsyncs the parent
// folder. tmp and final must be in the same parent folder, and the files in tmp already written (WriteFile
// fsyncs each). A folder left at final by an earlier attempt is removed first, so for a moment neither exists:
// readers should find final through a pointer file written after this returns.
func ReplaceDir(tmp, final string) error {
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return syncDir(filepath.Dir(final))
}

// Open opens path for reading when it is a regular file and returns its size. Anything else (a folder, a FIFO, a
// device) is refused before it is opened: opening or reading it could block or never end.
func Open(path string) (*os.File, int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s: not a regular file but %s: give the path of a file (write a stream to a file first)", path, kind(st.Mode()))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	if st, err = f.Stat(); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// kind names what a non-regular file is.
func kind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a folder"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "a special file (" + m.Type().String() + ")"
}

// ReadFile reads the whole of path, a regular file (see Open).
func ReadFile(path string) ([]byte, error) {
	f, size, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	b.Grow(int(size) + 1)
	if _, err := b.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b.Bytes(), nil
}

// LineTooLongError is ReadLine's error for a line longer than its limit.
type LineTooLongError struct{ Limit int }

func (e *LineTooLongError) Error() string {
	return fmt.Sprintf("the line is longer than %d bytes (%d MiB), the most saddle reads as one line: is the file line-delimited?", e.Limit, e.Limit>>20)
}

// ReadLine reads one line (with its '\n', if any) from r, refusing a line longer than limit bytes with a
// *LineTooLongError instead of holding it all in memory. At the end of the input it returns what is left (possibly
// nothing) with io.EOF.
func ReadLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			return nil, &LineTooLongError{Limit: limit}
		}
		line = append(line, chunk...)
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

// syncDir fsyncs a folder, so that a rename inside it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
