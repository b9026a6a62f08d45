package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// sharedDir is the test-data directory outside the repo: $SADDLE_SHARED, else ../shared next to
// the repository root.
func sharedDir(t testing.TB) string {
	if d := os.Getenv("SADDLE_SHARED"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(filepath.Dir(dir), "shared")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// sharedFile returns a file under the shared directory or skips the test.
func sharedFile(t testing.TB, rel string) string {
	p := filepath.Join(sharedDir(t), rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("test data %s not found (set SADDLE_SHARED): %v", rel, err)
	}
	return p
}

func loadCorpus(t testing.TB) []string {
	data, err := os.ReadFile(filepath.Join("testdata", "corpus.json"))
	if err != nil {
		t.Fatal(err)
	}
	var corpus []string
	if err := json.Unmarshal(data, &corpus); err != nil {
		t.Fatalf("testdata/corpus.json: %v", err)
	}
	return corpus
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
