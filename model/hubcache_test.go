package model

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

func TestHubCacheDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, c := range []struct{ hubCache, hfHome, xdg, want string }{
		{"/a/hub", "/b", "/c", "/a/hub"},
		{"", "/b", "/c", "/b/hub"},
		{"", "", "/c", "/c/huggingface/hub"},
		{"", "", "", filepath.Join(home, ".cache", "huggingface", "hub")},
	} {
		t.Setenv("HF_HUB_CACHE", c.hubCache)
		t.Setenv("HF_HOME", c.hfHome)
		t.Setenv("XDG_CACHE_HOME", c.xdg)
		if got, err := HubCacheDir(); err != nil || got != c.want {
			t.Errorf("HF_HUB_CACHE=%q HF_HOME=%q XDG_CACHE_HOME=%q: %q, %v; want %q", c.hubCache, c.hfHome, c.xdg, got, err, c.want)
		}
	}
}

// closedHub points downloads at a port nothing listens on: any network use fails.
func closedHub(t *testing.T) { setHub(t, testenv.ClosedURL(t)) }

// fillCache lays files out in cache as huggingface_hub does for owner/repo at commit: blobs named by sha256
// (weights) or git sha1 (others), relative links from snapshots/<commit>/, refs/main. It returns the snapshot.
func fillCache(t *testing.T, cache, owner, repo, commit string, files map[string][]byte) string {
	t.Helper()
	dir := filepath.Join(cache, "models--"+owner+"--"+repo)
	snap := filepath.Join(dir, "snapshots", commit)
	for name, data := range files {
		var etag string
		if ext := filepath.Ext(name); ext == ".gguf" || ext == ".safetensors" {
			s := sha256.Sum256(data)
			etag = hex.EncodeToString(s[:])
		} else {
			s := sha1.Sum(data)
			etag = hex.EncodeToString(s[:])
		}
		link := filepath.Join(snap, filepath.FromSlash(name))
		rel, _ := filepath.Rel(filepath.Dir(link), filepath.Join(dir, "blobs", etag))
		if os.MkdirAll(filepath.Join(dir, "blobs"), 0o755) != nil || os.MkdirAll(filepath.Dir(link), 0o755) != nil ||
			os.WriteFile(filepath.Join(dir, "blobs", etag), data, 0o644) != nil || os.Symlink(rel, link) != nil {
			t.Fatal("cannot fill the cache")
		}
	}
	os.MkdirAll(filepath.Join(dir, "refs"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "refs", "main"), []byte(commit), 0o644); err != nil {
		t.Fatal(err)
	}
	return snap
}

// hfFolderFiles reads the shared stories260K HF folder's files.
func hfFolderFiles(t *testing.T, names ...string) map[string][]byte {
	_, src := testenv.Stories260K(t)
	files := map[string][]byte{}
	for _, f := range names {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	return files
}

// A folder huggingface_hub filled (no tokenizer_config.json, no record of the absent index) is used as it is,
// with no network: model.safetensors being there, the index is not asked for, and optional extras that cannot
// be fetched are skipped.
func TestResolveFromPythonFilledCache(t *testing.T) {
	closedHub(t)
	cache := t.TempDir()
	const commit = "fedcba9876543210fedcba9876543210fedcba98"
	snap := fillCache(t, cache, "karpathy", "stories260K", commit,
		hfFolderFiles(t, "config.json", "generation_config.json", "model.safetensors", "tokenizer.json"))
	src, err := ResolveSource("karpathy/stories260K", cache)
	if err != nil {
		t.Fatal(err)
	}
	if src.Path != snap || src.HubID != "karpathy/stories260K" || src.Name != "karpathy/stories260K" || src.Embedded {
		t.Errorf("source %+v, want the snapshot %s", src, snap)
	}
	if p, err := loadAll(src.Path); err != nil || p.Config.NumLayers != 5 {
		t.Fatalf("loading the snapshot: %v", err)
	}
	// Given by its path (as older runs recorded it), a snapshot still says which repository it is.
	if byPath, err := ResolveSource(snap, cache); err != nil || byPath.HubID != "karpathy/stories260K" || byPath.Path != snap {
		t.Errorf("snapshot path: %+v, %v", byPath, err)
	}
	if local, _ := ResolveSource(t.TempDir(), cache); local.HubID != "" {
		t.Errorf("a plain folder has hub id %q", local.HubID)
	}

	gguf, _ := testenv.Stories260K(t)
	data, _ := os.ReadFile(gguf)
	file := fillCache(t, cache, "someone", "ggufs", commit, map[string][]byte{"q/m.gguf": data})
	if got, err := resolvePath("someone/ggufs:q/m.gguf", cache); err != nil || got != filepath.Join(file, "q", "m.gguf") {
		t.Errorf("file from the cache: %q, %v", got, err)
	}
}

func TestResolveHubOffline(t *testing.T) {
	files := hfFolderFiles(t, "config.json", "model.safetensors", "tokenizer.json")
	served := map[string][]byte{}
	for f, b := range files {
		served["/o/r/resolve/main/"+f] = b
	}
	count, _ := hubTestServer(t, served)
	t.Setenv("HF_HUB_OFFLINE", "1")
	cache := t.TempDir()

	_, err := resolvePath("o/r:m.gguf", cache)
	wantErr(t, err, "o/r:m.gguf", "HF_HUB_OFFLINE", filepath.Join(cache, "models--o--r", "snapshots"), "--model")
	_, err = resolvePath("o/r", cache)
	wantErr(t, err, "o/r:config.json", "HF_HUB_OFFLINE")
	fillCache(t, cache, "o", "r", testCommit, map[string][]byte{"config.json": files["config.json"]})
	_, err = resolvePath("o/r", cache)
	wantErr(t, err, "o/r:model.safetensors", "HF_HUB_OFFLINE", filepath.Join("snapshots", testCommit, "model.safetensors"))
	if count.Load() != 0 {
		t.Errorf("%d requests with HF_HUB_OFFLINE=1", count.Load())
	}

	// Online, the missing files come from the cached commit, not from whatever main is now.
	t.Setenv("HF_HUB_OFFLINE", "")
	dir, err := resolvePath("o/r", cache)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range hubPaths() {
		if strings.Contains(p, "/resolve/main/") || strings.HasSuffix(p, "/config.json") {
			t.Errorf("asked for %s: want only the missing files, at commit %s", p, testCommit)
		}
	}
	if _, err := loadAll(dir); err != nil {
		t.Fatal(err)
	}
	// Absent optional files are remembered as huggingface_hub remembers them.
	if _, err := os.Stat(filepath.Join(cache, "models--o--r", ".no_exist", testCommit, "tokenizer_config.json")); err != nil {
		t.Error(err)
	}
	n := count.Load()
	t.Setenv("HF_HUB_OFFLINE", "1")
	if _, err := resolvePath("o/r", cache); err != nil || count.Load() != n {
		t.Errorf("offline after the download: %v, %d requests", err, count.Load()-n)
	}
}

// A blob the cache already has (another snapshot's, or one Python fetched) is linked, not fetched again.
func TestResolveReusesBlobs(t *testing.T) {
	data := []byte("GGUF pretend weights")
	hubTestServer(t, map[string][]byte{"/o/r/resolve/main/new.gguf": data})
	cache := t.TempDir()
	fillCache(t, cache, "o", "r", "1111111111111111111111111111111111111111", map[string][]byte{"old.gguf": data})
	os.Remove(filepath.Join(cache, "models--o--r", "refs", "main")) // main has moved on
	got, err := resolvePath("o/r:new.gguf", cache)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, data) {
		t.Errorf("content %q", b)
	}
	for _, p := range hubPaths() {
		if strings.HasPrefix(p, "/lfs") {
			t.Errorf("fetched %s although its blob was cached", p)
		}
	}
	if len(hubPaths()) != 1 {
		t.Errorf("requests %v", hubPaths())
	}
}

func TestEmbeddedModel(t *testing.T) {
	closedHub(t)
	t.Setenv("HF_HUB_CACHE", t.TempDir())
	cache := t.TempDir()
	t.Setenv("SADDLE_CACHE", cache)
	src, err := ResolveSource(DefaultModel, "")
	if err != nil {
		t.Fatal(err)
	}
	if !src.Embedded || src.HubID != "ggml-org/models" || src.Name != DefaultModel || !strings.HasPrefix(src.Path, cache) {
		t.Errorf("source %+v", src)
	}
	gguf, _ := testenv.Stories260K(t)
	want, _ := os.ReadFile(gguf)
	if got, _ := os.ReadFile(src.Path); !bytes.Equal(got, want) {
		t.Error("the embedded file differs from ../shared's stories260K.gguf")
	}
	if _, err := loadAll(src.Path); err != nil {
		t.Fatal(err)
	}
	// The upstream name is the same file, without network; a damaged cache file is written again.
	os.WriteFile(src.Path, []byte("damaged"), 0o644)
	again, err := ResolveSource("ggml-org/models:tinyllamas/stories260K.gguf", "")
	if err != nil || again.Path != src.Path || !again.Embedded {
		t.Fatalf("hub name: %+v, %v", again, err)
	}
	if got, _ := os.ReadFile(src.Path); !bytes.Equal(got, want) {
		t.Error("damaged cache file not replaced")
	}
	// A local file or folder of that name still wins.
	t.Chdir(t.TempDir())
	os.WriteFile(DefaultModel, []byte("x"), 0o644)
	if local, err := ResolveSource(DefaultModel, ""); err != nil || local.Embedded || local.Path != DefaultModel {
		t.Errorf("local file named %s: %+v, %v", DefaultModel, local, err)
	}
}
