package finetune

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// TestReadJSONLRefusesAFIFOAndAFolder: a data file that is not a regular file is refused at once, naming it, instead
// of blocking until something writes to the pipe.
func TestReadJSONLRefusesAFIFOAndAFolder(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "data.jsonl")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	for path, what := range map[string]string{fifo: "named pipe", dir: "folder"} {
		done := make(chan error, 1)
		go func() { _, err := ReadJSONL(path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), what) {
				t.Errorf("ReadJSONL(%s) error = %v, want one naming it as a %s", what, err, what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("ReadJSONL blocked on a %s", what)
		}
	}
}

// TestParseJSONLBoundsALine: a line beyond the limit is refused with its file:line and the limit, without reading
// the rest of it; lines within it parse as before.
func TestParseJSONLBoundsALine(t *testing.T) {
	ok := `{"text": "hello"}` + "\n"
	long := `{"text": "` + strings.Repeat("a", 300) + `"}`
	recs, err := parseJSONL(strings.NewReader(ok+ok), "d.jsonl", 100)
	if err != nil || len(recs) != 2 {
		t.Fatalf("two short lines: %d records, %v", len(recs), err)
	}
	_, err = parseJSONL(strings.NewReader(ok+long+"\n"+ok), "d.jsonl", 100)
	var tooLong *fileio.LineTooLongError
	if !errors.As(err, &tooLong) || !strings.HasPrefix(err.Error(), "d.jsonl:2: ") || !strings.Contains(err.Error(), "100 bytes") {
		t.Errorf("a 300-byte line with limit 100: error %v, want d.jsonl:2 and the limit", err)
	}
	// the real limit: a file of one line just over it
	path := filepath.Join(t.TempDir(), "one-line.jsonl")
	if err := os.WriteFile(path, []byte(strings.Repeat("x", MaxLineBytes+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJSONL(path); !errors.As(err, &tooLong) || !strings.Contains(err.Error(), path+":1: ") {
		t.Errorf("a file without newlines over MaxLineBytes: error %v", err)
	}
}
