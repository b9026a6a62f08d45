package checkpoints

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// countingHasher counts the files its hasher opens.
func countingHasher(cache string) (*Hasher, *int) {
	opened := new(int)
	return &Hasher{CacheDir: cache, Open: func(path string) (io.ReadCloser, error) {
		*opened++
		return os.Open(path)
	}}, opened
}

// hfFolder writes a small HF-style folder: config.json and two weight shards.
func hfFolder(t *testing.T) string {
	dir := t.TempDir()
	for name, data := range map[string]string{"config.json": `{"a":1}`, "model-00001-of-00002.safetensors": "first",
		"model-00002-of-00002.safetensors": "second", "tokenizer.json": "not hashed"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestHashBaseIsTheFilesSHA256InNameOrder(t *testing.T) {
	dir := hfFolder(t)
	h, _ := countingHasher("")
	id, err := h.Hash(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte(`{"a":1}` + "first" + "second"))
	if id.SHA256 != hex.EncodeToString(want[:]) || id.Path != dir {
		t.Fatalf("got %+v, want sha256 %x of %s", id, want, dir)
	}
	gguf := filepath.Join(dir, "model-00001-of-00002.safetensors")
	id, err = h.Hash(gguf)
	if want := sha256.Sum256([]byte("first")); err != nil || id.SHA256 != hex.EncodeToString(want[:]) {
		t.Fatalf("single file: %+v, %v", id, err)
	}
}

func TestHashBaseCacheReadsEachUnchangedFileOnce(t *testing.T) {
	dir, cache := hfFolder(t), t.TempDir()
	h, opened := countingHasher(cache)
	if cost := h.Cost(dir); cost != int64(len(`{"a":1}`+"first"+"second")) {
		t.Fatalf("cost before hashing: %d bytes", cost)
	}
	first, err := h.Hash(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cost := h.Cost(dir); cost != 0 || *opened != 3 {
		t.Fatalf("cost after hashing: %d bytes", cost)
	}
	if *opened != 3 {
		t.Fatalf("first hash opened %d files, want 3", *opened)
	}
	if again, err := h.Hash(dir); err != nil || again != first || *opened != 3 {
		t.Fatalf("same process, second hash: %+v %v, %d files opened in all", again, err, *opened)
	}
	// A new process: a fresh hasher over the same cache folder.
	h2, opened2 := countingHasher(cache)
	if again, err := h2.Hash(dir); err != nil || again != first || *opened2 != 0 {
		t.Fatalf("new hasher over the cache: %+v %v, %d files opened", again, err, *opened2)
	}
	// A shard rewritten with the same size and its old modification time still gets a new hash (ctime, inode).
	shard := filepath.Join(dir, "model-00002-of-00002.safetensors")
	info, err := os.Stat(shard)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shard, []byte("SECOND"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(shard, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	changed, err := h2.Hash(dir)
	want := sha256.Sum256([]byte(`{"a":1}` + "first" + "SECOND"))
	if err != nil || changed.SHA256 != hex.EncodeToString(want[:]) || *opened2 != 3 {
		t.Fatalf("after rewriting a shard: %+v %v, %d files opened", changed, err, *opened2)
	}
	// Touched only (same bytes, new mtime): read again, same hash.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "config.json"), later, later); err != nil {
		t.Fatal(err)
	}
	if touched, err := h2.Hash(dir); err != nil || touched != changed || *opened2 != 6 {
		t.Fatalf("after touching config.json: %+v %v, %d files opened", touched, err, *opened2)
	}
	// A new shard is part of the model.
	if err := os.WriteFile(filepath.Join(dir, "extra.safetensors"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if grown, err := h2.Hash(dir); err != nil || grown == changed || *opened2 != 10 {
		t.Fatalf("after adding a shard: %+v %v, %d files opened", grown, err, *opened2)
	}
}

func TestHashBaseIgnoresABadCacheEntry(t *testing.T) {
	dir, cache := hfFolder(t), t.TempDir()
	h, _ := countingHasher(cache)
	want, err := h.Hash(dir)
	if err != nil {
		t.Fatal(err)
	}
	entry := h.entryFile(dir)
	good, err := os.ReadFile(entry)
	if err != nil {
		t.Fatalf("no cache entry written: %v", err)
	}
	for name, bad := range map[string][]byte{
		"truncated": good[:len(good)/2],
		"not json":  []byte("\x00\x01garbage"),
		"bad hash":  []byte(strings.Replace(string(good), want.SHA256, "not-a-hash", 1)),
		"upper":     []byte(strings.Replace(string(good), want.SHA256, strings.ToUpper(want.SHA256), 1)),
		"folder":    nil, // the entry's path is a folder: unreadable
	} {
		t.Run(name, func(t *testing.T) {
			os.RemoveAll(entry)
			if bad == nil {
				if err := os.Mkdir(entry, 0o755); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(entry)
			} else if err := os.WriteFile(entry, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			fresh, opened := countingHasher(cache)
			got, err := fresh.Hash(dir)
			if err != nil || got != want || *opened != 3 {
				t.Fatalf("got %+v %v with %d files read, want %+v recomputed", got, err, *opened, want)
			}
		})
	}
	// A cache folder that cannot be created is no error either.
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h3, _ := countingHasher(filepath.Join(blocker, "cache"))
	if got, err := h3.Hash(dir); err != nil || got != want {
		t.Fatalf("unwritable cache: %+v %v", got, err)
	}
}

func TestHashBaseMissingFileIsAnError(t *testing.T) {
	dir := hfFolder(t)
	os.Remove(filepath.Join(dir, "config.json"))
	h, _ := countingHasher(t.TempDir())
	if _, err := h.Hash(dir); err == nil {
		t.Fatal("a folder without config.json hashed")
	}
}

func TestHashCachePrunesOldEntries(t *testing.T) {
	cache := t.TempDir()
	for i := range hashCacheEntries + 5 {
		name := filepath.Join(cache, hex.EncodeToString([]byte{byte(i), byte(i >> 8)})+".json")
		if err := os.WriteFile(name, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Duration(1000-i) * time.Minute)
		os.Chtimes(name, old, old)
	}
	h, _ := countingHasher(cache)
	dir := hfFolder(t)
	if _, err := h.Hash(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(cache)
	if len(entries) != hashCacheEntries {
		t.Fatalf("%d entries after pruning, want %d", len(entries), hashCacheEntries)
	}
	if _, err := os.Stat(h.entryFile(dir)); err != nil {
		t.Fatalf("the new entry was pruned: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cache, "0000.json")); err == nil {
		t.Fatal("the oldest entry was kept")
	}
}
