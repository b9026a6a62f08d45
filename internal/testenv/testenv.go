// Package testenv finds what the tests need from outside the repository: the shared test data (../shared from
// the repository root, or $SADDLE_SHARED) and the tokenizer cache of scripts/fetch-tokenizers.sh
// (~/.cache/saddle/tokenizers, or $SADDLE_TOKENIZER_CACHE). What is missing skips a test, and fails it under
// CI=true, where everything must be there. Only tests import this package.
package testenv

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"runtime/metrics"
	"testing"
)

// Missing skips the test, or fails it under CI=true, where missing test data or a missing oracle is an error.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// SharedDir is the shared test-data folder: $SADDLE_SHARED, else "shared" beside the repository root (the
// folder above the working directory that holds go.mod); "" when there is no such root.
func SharedDir() string {
	if d := os.Getenv("SADDLE_SHARED"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
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

// Shared returns the path of parts under SharedDir, calling Missing when it does not exist.
func Shared(t testing.TB, parts ...string) string {
	t.Helper()
	dir := SharedDir()
	if dir == "" {
		Missing(t, "shared test data not found: no go.mod above the working directory (set SADDLE_SHARED)")
	}
	p := filepath.Join(append([]string{dir}, parts...)...)
	if _, err := os.Stat(p); err != nil {
		Missing(t, "shared test data missing (set SADDLE_SHARED): %v", err)
	}
	return p
}

// Stories260K returns the shared stories260K model as a GGUF file and as an HF folder, calling Missing when the
// GGUF file or the HF weights are absent.
func Stories260K(t testing.TB) (gguf, hf string) {
	t.Helper()
	gguf = Shared(t, "models", "stories260K", "stories260K.gguf")
	return gguf, filepath.Dir(Shared(t, "models", "stories260K-hf", "model.safetensors"))
}

// TokenizerCache is where scripts/fetch-tokenizers.sh puts real tokenizers and the oracles' packages:
// $SADDLE_TOKENIZER_CACHE, else ~/.cache/saddle/tokenizers.
func TokenizerCache() string {
	if d := os.Getenv("SADDLE_TOKENIZER_CACHE"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "saddle", "tokenizers")
}

// Cached returns the path of parts under TokenizerCache, calling Missing when it does not exist.
func Cached(t testing.TB, parts ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{TokenizerCache()}, parts...)...)
	if _, err := os.Stat(p); err != nil {
		Missing(t, "not cached (run scripts/fetch-tokenizers.sh): %v", err)
	}
	return p
}

// ChatTemplate returns the chat template of the cached tokenizer name (its tokenizer_config.json), calling
// Missing when it is not cached; a file without a chat_template string fails the test.
func ChatTemplate(t testing.TB, name string) string {
	t.Helper()
	path := Cached(t, name, "tokenizer_config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ChatTemplate string `json:"chat_template"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if cfg.ChatTemplate == "" {
		t.Fatalf("%s has no chat_template", path)
	}
	return cfg.ChatTemplate
}

// CopyTree copies a file, or a folder of plain files, to to.
func CopyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// HeapAllocated runs fn and returns the bytes allocated on the heap meanwhile. runtime/metrics does not stop the
// world (ReadMemStats does, which would halve a fuzzer's speed); the count covers every goroutine, the fuzzing
// engine's own included, so callers that find too much measure again (see OverBudget).
func HeapAllocated(fn func()) uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(sample)
	before := sample[0].Value.Uint64()
	fn()
	metrics.Read(sample)
	return sample[0].Value.Uint64() - before
}

// OverBudget runs fn (at most twice) and reports the bytes it allocated, and whether both runs exceeded budget:
// noise from other goroutines does not repeat, an allocation sized by the input does.
func OverBudget(budget uint64, fn func()) (uint64, bool) {
	alloc := HeapAllocated(fn)
	if alloc <= budget {
		return alloc, false
	}
	alloc = min(alloc, HeapAllocated(fn))
	return alloc, alloc > budget
}

// ClosedURL is an http:// URL of a local port nothing listens on: a connection to it is refused at once.
func ClosedURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}
