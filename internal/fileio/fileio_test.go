package fileio

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteReplacesAndShares(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Errorf("content %q", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if got := names(t, dir); !slices.Equal(got, []string{"f.json"}) {
		t.Errorf("folder holds %v", got)
	}
}

func TestWriteFailureLeavesTargetAlone(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := Write(path, func(w io.Writer) error {
		w.Write([]byte("half"))
		return boom
	})
	if err != boom {
		t.Fatalf("error %v, want fill's error as it is", err)
	}
	func() {
		defer func() { recover() }()
		Write(path, func(w io.Writer) error { panic("fill panicked") })
	}()
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("target changed to %q", b)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"f"}) {
		t.Errorf("temporary files left: %v", got)
	}
	if err := WriteFile(filepath.Join(dir, "absent", "f"), nil); err == nil {
		t.Error("writing into a missing folder succeeded")
	}
}

func TestReplaceDir(t *testing.T) {
	root := t.TempDir()
	final := filepath.Join(root, "step-1")
	for _, content := range []string{"first", "second"} {
		tmp, err := os.MkdirTemp(root, ".step-1.tmp")
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteFile(filepath.Join(tmp, "state.json"), []byte(content)); err != nil {
			t.Fatal(err)
		}
		if err := ReplaceDir(tmp, final); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(final, "state.json")); string(b) != content {
			t.Errorf("state.json = %q, want %q", b, content)
		}
		if got := names(t, root); !slices.Equal(got, []string{"step-1"}) {
			t.Errorf("root holds %v", got)
		}
	}
}

func TestOpenRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := WriteFile(file, []byte("12345")); err != nil {
		t.Fatal(err)
	}
	f, size, err := Open(file)
	if err != nil || size != 5 {
		t.Fatalf("Open(regular file) = size %d, %v", size, err)
	}
	f.Close()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, fifo} { // a FIFO without a writer would block os.Open forever
		if _, _, err := Open(p); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Open(%s) error = %v, want \"not a regular file\"", p, err)
		}
	}
}

func TestReadFileRefusesAFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadFile(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "named pipe") || !strings.Contains(err.Error(), fifo) {
			t.Errorf("ReadFile(FIFO) error = %v, want one naming the file as a named pipe", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadFile blocked on a FIFO")
	}
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(file); err != nil || string(b) != "hello" {
		t.Errorf("ReadFile = %q, %v", b, err)
	}
}

func TestReadLineBoundsTheLine(t *testing.T) {
	in := "short\n" + strings.Repeat("x", 100) + "\nlast"
	r := bufio.NewReaderSize(strings.NewReader(in), 16)
	if line, err := ReadLine(r, 50); string(line) != "short\n" || err != nil {
		t.Fatalf("first line %q, %v", line, err)
	}
	var tooLong *LineTooLongError
	if _, err := ReadLine(r, 50); !errors.As(err, &tooLong) || tooLong.Limit != 50 {
		t.Fatalf("a 101-byte line with limit 50: error %v", err)
	}
	r = bufio.NewReaderSize(strings.NewReader(in), 16)
	var lines []string
	for {
		line, err := ReadLine(r, 200)
		lines = append(lines, string(line))
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"short\n", strings.Repeat("x", 100) + "\n", "last"}; !slices.Equal(lines, want) {
		t.Errorf("lines %q, want %q", lines, want)
	}
}
