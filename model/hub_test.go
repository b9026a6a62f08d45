package model

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// testCommit is the commit the test hub names.
const testCommit = "0123456789abcdef0123456789abcdef01234567"

// hubTestServer serves files as the Hugging Face hub does: files["/owner/repo/resolve/main/path"] (path unescaped)
// for GET /owner/repo/resolve/main/path and /owner/repo/resolve/<testCommit>/path, naming testCommit in
// X-Repo-Commit. .gguf and .safetensors files are LFS files: a redirect to /lfs/... carrying their sha256 in
// X-Linked-Etag; others come directly with a sha1 ETag. It counts resolve requests (and keeps their paths and the
// last Authorization header); other paths are 404.
func hubTestServer(t *testing.T, files map[string][]byte) (*atomic.Int32, *atomic.Value) {
	t.Helper()
	var count atomic.Int32
	var auth atomic.Value
	auth.Store("")
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if lfs, ok := strings.CutPrefix(r.URL.Path, "/lfs"); ok {
			w.Write(files[lfs])
			return
		}
		count.Add(1)
		auth.Store(r.Header.Get("Authorization"))
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		key := strings.Replace(r.URL.Path, "/resolve/"+testCommit+"/", "/resolve/main/", 1)
		w.Header().Set("X-Repo-Commit", testCommit)
		data, ok := files[key]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if ext := filepath.Ext(key); ext == ".gguf" || ext == ".safetensors" {
			sum := sha256.Sum256(data)
			w.Header().Set("X-Linked-Etag", `"`+hex.EncodeToString(sum[:])+`"`)
			http.Redirect(w, r, "/lfs"+escapePath(key), http.StatusFound)
			return
		}
		sum := sha1.Sum(data)
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
		w.Write(data)
	}))
	t.Cleanup(srv.Close)
	setHub(t, srv.URL)
	hubPaths = func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(paths) }
	return &count, &auth
}

// hubPaths returns the resolve paths the latest hubTestServer was asked for.
var hubPaths func() []string

// resolvePath is ResolveSource's path.
func resolvePath(nameOrPath, cacheDir string) (string, error) {
	s, err := ResolveSource(nameOrPath, cacheDir)
	return s.Path, err
}

// setHub points downloads at base with a quiet log, restoring the package settings afterwards.
func setHub(t *testing.T, base string) *bytes.Buffer {
	t.Helper()
	oldBase, oldLog, oldStall := HubBaseURL, DownloadLog, DownloadStallTimeout
	t.Cleanup(func() { HubBaseURL, DownloadLog, DownloadStallTimeout = oldBase, oldLog, oldStall })
	var log bytes.Buffer
	HubBaseURL, DownloadLog = base, &log
	return &log
}

func TestParseHubRef(t *testing.T) {
	cases := map[string]string{
		"ggml-org/models:tinyllamas/stories260K.gguf": "ggml-org|models|tinyllamas/stories260K.gguf",
		"Qwen/Qwen2.5-0.5B-Instruct":                  "Qwen|Qwen2.5-0.5B-Instruct|",
		"a/b:c.gguf":                                  "a|b|c.gguf",
		"models/x.gguf":                               "", // a mistyped local path
		"./a/b":                                       "",
		"/abs/path":                                   "",
		"a/b/c":                                       "",
		"a/b:../../etc/passwd":                        "",
		"a/b:x//y":                                    "",
		"a/..:x":                                      "",
		"noslash":                                     "",
	}
	for in, want := range cases {
		r, ok := parseHubRef(in)
		got := ""
		if ok {
			got = r.owner + "|" + r.repo + "|" + r.file
		}
		if got != want {
			t.Errorf("parseHubRef(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveLocalAndInvalid(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.gguf")
	os.WriteFile(p, []byte("x"), 0o644)
	if got, err := resolvePath(p, t.TempDir()); err != nil || got != p {
		t.Errorf("local file: %q, %v", got, err)
	}
	_, err := resolvePath(filepath.Join(t.TempDir(), "absent.gguf"), t.TempDir())
	wantErr(t, err, "absent.gguf", "no such file")
}

func TestResolveOffline(t *testing.T) {
	closedHub(t)
	cache := t.TempDir()
	_, err := resolvePath("me/repo:tinyllamas/m.gguf", cache)
	wantErr(t, err, "cannot download me/repo:tinyllamas/m.gguf (offline?)",
		"download it yourself and pass --model /path/to/file")
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("cache not empty: %v", entries)
	}
}

// pinTestFile makes ref a pinned file with data's hash for the test.
func pinTestFile(t *testing.T, ref string, data []byte) {
	sum := sha256.Sum256(data)
	pinnedFiles[ref] = pinnedFile{hex.EncodeToString(sum[:]), int64(len(data))}
	t.Cleanup(func() { delete(pinnedFiles, ref) })
}

func TestResolvePinnedFile(t *testing.T) {
	ggufPath, _ := testenv.Stories260K(t)
	real, err := os.ReadFile(ggufPath)
	if err != nil {
		t.Fatal(err)
	}
	const ref = "me/tiny:tinyllamas/stories.gguf"
	const urlPath = "/me/tiny/resolve/main/tinyllamas/stories.gguf"
	pinTestFile(t, ref, real)
	sum := sha256.Sum256(real)
	blobName := hex.EncodeToString(sum[:])

	t.Run("verified", func(t *testing.T) {
		count, _ := hubTestServer(t, map[string][]byte{urlPath: real})
		cache := t.TempDir()
		got, err := resolvePath(ref, cache)
		if err != nil {
			t.Fatal(err)
		}
		repo := filepath.Join(cache, "models--me--tiny")
		if want := filepath.Join(repo, "snapshots", testCommit, "tinyllamas", "stories.gguf"); got != want {
			t.Errorf("path %q, want %q", got, want)
		}
		// huggingface_hub's layout: a relative link into blobs/<sha256>, and refs/main naming the commit.
		if target, err := os.Readlink(got); err != nil || target != filepath.Join("..", "..", "..", "blobs", blobName) {
			t.Errorf("snapshot link -> %q, %v", target, err)
		}
		if ref, err := os.ReadFile(filepath.Join(repo, "refs", "main")); err != nil || string(ref) != testCommit {
			t.Errorf("refs/main = %q, %v", ref, err)
		}
		if data, _ := os.ReadFile(got); !bytes.Equal(data, real) {
			t.Error("downloaded bytes differ")
		}
		if _, err := loadAll(got); err != nil {
			t.Error(err)
		}
		if _, err := resolvePath(ref, cache); err != nil || count.Load() != 1 {
			t.Errorf("second resolve: %v, %d requests (want 1: cached)", err, count.Load())
		}
		// A cached file that is not the pinned one is refused, not used.
		os.Remove(filepath.Join(repo, "blobs", blobName))
		os.WriteFile(filepath.Join(repo, "blobs", blobName), []byte("other"), 0o644)
		_, err = resolvePath(ref, cache)
		wantErr(t, err, ref, "is not the known file", blobName)
	})
	t.Run("sha mismatch", func(t *testing.T) {
		bad := bytes.Clone(real)
		bad[len(bad)-1] ^= 1
		hubTestServer(t, map[string][]byte{urlPath: bad})
		cache := t.TempDir()
		_, err := resolvePath(ref, cache)
		wantErr(t, err, ref, "sha256", blobName)
		for _, dir := range []string{"blobs", "snapshots", "refs"} {
			if entries, _ := os.ReadDir(filepath.Join(cache, "models--me--tiny", dir)); len(entries) != 0 {
				t.Errorf("left files behind in %s: %v", dir, entries)
			}
		}
	})
}

func TestResolveUnknownFilePrintsSHA(t *testing.T) {
	data := []byte("some model bytes")
	count, auth := hubTestServer(t, map[string][]byte{"/me/repo/resolve/main/dir/m 1.gguf": data})
	log := DownloadLog.(*bytes.Buffer)
	t.Setenv("HF_TOKEN", "tok123")
	got, err := resolvePath("me/repo:dir/m 1.gguf", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, data) || count.Load() != 1 {
		t.Errorf("content %q, %d requests", b, count.Load())
	}
	sum := sha256.Sum256(data)
	if !strings.Contains(log.String(), hex.EncodeToString(sum[:])) {
		t.Errorf("log %q lacks the sha256", log.String())
	}
	if got := auth.Load().(string); got != "Bearer tok123" {
		t.Errorf("Authorization %q", got)
	}
}

func TestResolveHTTPError(t *testing.T) {
	hubTestServer(t, nil)
	_, err := resolvePath("me/repo:absent.gguf", t.TempDir())
	wantErr(t, err, "me/repo:absent.gguf", "404", "--model")
}

func TestResolveStall(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Header().Set("X-Repo-Commit", testCommit)
		w.Header().Set("ETag", `"`+strings.Repeat("ab", 20)+`"`)
		w.Write(make([]byte, 10))
		w.(http.Flusher).Flush()
		select { // hang until the client gives up
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	setHub(t, srv.URL)
	DownloadStallTimeout = 200 * time.Millisecond
	start := time.Now()
	_, err := resolvePath("me/repo:m.gguf", t.TempDir())
	wantErr(t, err, "me/repo:m.gguf", "no data for 200ms")
	if time.Since(start) > 5*time.Second {
		t.Errorf("stall detected after %s", time.Since(start))
	}
}

func TestResolveHFFolder(t *testing.T) {
	_, src := testenv.Stories260K(t)
	files := map[string][]byte{}
	for _, f := range []string{"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		files["/karpathy/stories260K/resolve/main/"+f] = b
	}
	count, _ := hubTestServer(t, files)
	cache := t.TempDir()
	dir, err := resolvePath("karpathy/stories260K", cache)
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.Config.NumLayers != 5 || len(p.Weights) != 47 {
		t.Errorf("loaded %d layers, %d tensors", p.Config.NumLayers, len(p.Weights))
	}
	n := count.Load()
	if _, err := resolvePath("karpathy/stories260K", cache); err != nil || count.Load() != n {
		t.Errorf("second resolve: %v, %d new requests", err, count.Load()-n)
	}
}

func TestResolveHFFolderSharded(t *testing.T) {
	c := synthConfig("qwen2")
	src := t.TempDir()
	writeHFModel(t, src, hfConfigJSON(c), synthWeights(c, 20), "F16", 2)
	files := map[string][]byte{}
	entries, _ := os.ReadDir(src)
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(src, e.Name()))
		files["/o/r/resolve/main/"+e.Name()] = b
	}
	hubTestServer(t, files)
	dir, err := resolvePath("o/r", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadAll(dir); err != nil {
		t.Fatal(err)
	}
}

func TestIsOffline(t *testing.T) {
	dns := &url.Error{Op: "Get", URL: "https://huggingface.co/x", Err: &net.OpError{Op: "dial", Net: "tcp",
		Err: &net.DNSError{Err: "no such host", Name: "huggingface.co", IsNotFound: true}}}
	if !isOffline(dns) {
		t.Error("DNS failure not seen as offline")
	}
	if isOffline(&url.Error{Op: "Get", URL: "https://x", Err: errors.New("tls: bad certificate")}) {
		t.Error("TLS failure seen as offline")
	}
}
