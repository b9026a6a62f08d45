package model

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// What saddle downloads is a Hugging Face hub cache that Hugging Face's own tools read: the official JS library's
// scanner (@huggingface/hub, scripts/hubcache-oracle/scan.js, installed by scripts/fetch-tokenizers.sh) finds each
// repository, its commit with the ref main, and every file's blob, with no warning.
func TestHubCacheReadByHuggingFaceJS(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node not found (run scripts/fetch-tokenizers.sh)")
	}
	testenv.Cached(t, "node_modules", "@huggingface", "hub", "package.json")
	files := map[string][]byte{
		"config.json":       []byte(`{"model_type": "llama"}`),
		"model.safetensors": []byte("pretend safetensors bytes"),
		"tokenizer.json":    []byte(`{"version": "1.0"}`),
		"m.gguf":            []byte("GGUF pretend"),
	}
	served := map[string][]byte{}
	for name, data := range files {
		served["/o/r/resolve/main/"+name] = data
	}
	hubTestServer(t, served)
	cache := t.TempDir()
	for _, ref := range []string{"o/r", "o/r:m.gguf"} { // pretend files: only the cache is looked at
		if _, err := resolvePath(ref, cache); err != nil {
			t.Fatal(err)
		}
	}

	script, err := filepath.Abs(filepath.Join("..", "scripts", "hubcache-oracle", "scan.js"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, script, cache)
	cmd.Env = append(os.Environ(), "SADDLE_TOKENIZER_CACHE="+testenv.TokenizerCache())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scan.js: %v\n%s", err, out)
	}
	var scan struct {
		Repos []struct {
			ID, Type  string
			Revisions []struct {
				Commit string
				Refs   []string
				Files  []struct {
					Name, Blob string
					Size       int64
				}
			}
		}
		Warnings []string
	}
	if err := json.Unmarshal(out, &scan); err != nil {
		t.Fatalf("scan.js printed %q: %v", out, err)
	}
	if len(scan.Warnings) > 0 || len(scan.Repos) != 1 || scan.Repos[0].ID != "o/r" || scan.Repos[0].Type != "model" ||
		len(scan.Repos[0].Revisions) != 1 {
		t.Fatalf("scan: %s", out)
	}
	rev := scan.Repos[0].Revisions[0]
	if rev.Commit != testCommit || !slices.Equal(rev.Refs, []string{"main"}) || len(rev.Files) != len(files) {
		t.Fatalf("revision: %s", out)
	}
	for _, f := range rev.Files {
		name := filepath.Base(f.Name)
		data := files[name]
		etag := sha1.Sum(data)
		blob := hex.EncodeToString(etag[:])
		if ext := filepath.Ext(name); ext == ".gguf" || ext == ".safetensors" {
			sum := sha256.Sum256(data)
			blob = hex.EncodeToString(sum[:])
		}
		want, _ := filepath.EvalSymlinks(filepath.Join(cache, "models--o--r", "blobs", blob))
		if f.Size != int64(len(data)) || f.Blob != want {
			t.Errorf("%s: blob %s (%d bytes), want %s (%d bytes)", name, f.Blob, f.Size, want, len(data))
		}
	}
}
