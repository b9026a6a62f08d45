package model

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// Download settings. They are variables so that tests (and the CLI) can adjust them.
var (
	// HubBaseURL is where Hugging Face references are fetched: <base>/<owner>/<repo>/resolve/main/<file>.
	HubBaseURL = "https://huggingface.co"
	// DownloadConnectTimeout bounds DNS + TCP connect and the TLS handshake.
	DownloadConnectTimeout = 10 * time.Second
	// DownloadStallTimeout aborts a download that receives no bytes for this long (there is no overall limit:
	// a slow but moving download of a large model is fine).
	DownloadStallTimeout = 60 * time.Second
	// DownloadLog receives one line per download and the sha256 of files without a pinned hash.
	DownloadLog io.Writer = os.Stderr
)

// pinnedFile is the expected content of a known Hugging Face file.
type pinnedFile struct {
	sha256 string
	size   int64
}

// pinnedFiles lists known references whose content is verified after download.
var pinnedFiles = map[string]pinnedFile{
	"ggml-org/models:tinyllamas/stories260K.gguf": {"270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d", 1185376},
}

// hubRepoPart is one owner or repo name as Hugging Face allows them.
var hubRepoPart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// hubRef is a parsed "owner/repo" or "owner/repo:path/in/repo".
type hubRef struct {
	owner, repo, file string
}

func (r hubRef) String() string {
	if r.file == "" {
		return r.owner + "/" + r.repo
	}
	return r.owner + "/" + r.repo + ":" + r.file
}

// parseHubRef recognizes "owner/repo" and "owner/repo:path/to/file"; ok is false for anything else.
func parseHubRef(s string) (hubRef, bool) {
	repoPart, file, hasFile := strings.Cut(s, ":")
	owner, repo, found := strings.Cut(repoPart, "/")
	if !found || !hubRepoPart.MatchString(owner) || !hubRepoPart.MatchString(repo) || strings.Contains(repo, "..") {
		return hubRef{}, false
	}
	if !hasFile {
		// "models/x.gguf" that does not exist is a mistyped local path, not a repository.
		for _, ext := range []string{".gguf", ".safetensors", ".json", ".bin"} {
			if strings.HasSuffix(strings.ToLower(repo), ext) {
				return hubRef{}, false
			}
		}
		return hubRef{owner: owner, repo: repo}, true
	}
	for _, seg := range strings.Split(file, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "\\\x00") {
			return hubRef{}, false
		}
	}
	return hubRef{owner: owner, repo: repo, file: file}, true
}

// DefaultCacheDir is $SADDLE_CACHE, else ~/.cache/saddle.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("SADDLE_CACHE"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no cache folder: set SADDLE_CACHE (%w)", err)
	}
	return filepath.Join(home, ".cache", "saddle"), nil
}

// Resolve turns a model argument into a local path. An existing file or folder is returned as is. Otherwise a
// Hugging Face reference is downloaded into cacheDir (DefaultCacheDir when empty) unless already there:
// "owner/repo:path/in/repo.gguf" fetches that file; "owner/repo" fetches an HF folder (config.json,
// generation_config.json, tokenizer files and the safetensors weights, sharded or not).
func Resolve(nameOrPath string, cacheDir string) (string, error) {
	if _, err := os.Stat(nameOrPath); err == nil {
		return nameOrPath, nil
	}
	ref, ok := parseHubRef(nameOrPath)
	if !ok {
		return "", fmt.Errorf("%s: no such file or folder, and not a Hugging Face reference (owner/repo or owner/repo:path/to/file.gguf)", nameOrPath)
	}
	if cacheDir == "" {
		var err error
		if cacheDir, err = DefaultCacheDir(); err != nil {
			return "", err
		}
	}
	dir := filepath.Join(cacheDir, "huggingface", ref.owner, ref.repo)
	if ref.file != "" {
		dest := filepath.Join(dir, filepath.FromSlash(ref.file))
		if _, err := os.Stat(dest); err == nil {
			return dest, nil // files only appear there complete (temp + rename) and verified
		}
		_, err := downloadHubFile(ref, ref.file, dest, false)
		return dest, err
	}
	return dir, downloadHubFolder(ref, dir)
}

// hubFolderComplete marks a folder whose every file arrived.
const hubFolderComplete = ".saddle-complete"

func downloadHubFolder(ref hubRef, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, hubFolderComplete)); err == nil {
		return nil
	}
	get := func(file string, optional bool) (bool, error) {
		dest := filepath.Join(dir, file)
		if _, err := os.Stat(dest); err == nil {
			return true, nil // from an interrupted earlier attempt
		}
		return downloadHubFile(ref, file, dest, optional)
	}
	if _, err := get("config.json", false); err != nil {
		return err
	}
	for _, f := range []string{"generation_config.json", "tokenizer.json", "tokenizer_config.json"} {
		if _, err := get(f, true); err != nil {
			return err
		}
	}
	sharded, err := get("model.safetensors.index.json", true)
	if err != nil {
		return err
	}
	if !sharded {
		if _, err := get("model.safetensors", false); err != nil {
			return err
		}
	} else {
		indexPath := filepath.Join(dir, "model.safetensors.index.json")
		data, err := os.ReadFile(indexPath)
		if err != nil {
			return err
		}
		index, err := parseWeightMap(indexPath, data)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, shard := range index.WeightMap {
			if seen[shard] {
				continue
			}
			seen[shard] = true
			if !plainFileName(shard) {
				return fmt.Errorf("%s: shard name %q is not a plain file name", ref, shard)
			}
			if _, err := get(shard, false); err != nil {
				return err
			}
		}
	}
	return fileio.WriteFile(filepath.Join(dir, hubFolderComplete), nil)
}

// downloadHubFile fetches one file of ref to dest through fileio.Write: dest appears only complete and, for a
// pinned file, verified. With optional, a 404 returns found=false and no error.
func downloadHubFile(ref hubRef, file, dest string, optional bool) (found bool, err error) {
	name := hubRef{ref.owner, ref.repo, file}.String()
	u := strings.TrimSuffix(HubBaseURL, "/") + "/" + url.PathEscape(ref.owner) + "/" + url.PathEscape(ref.repo) +
		"/resolve/main/" + escapePath(file)
	hint := "; download it yourself and pass --model /path/to/file"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stalled atomic.Bool
	watchdog := time.AfterFunc(DownloadStallTimeout, func() { stalled.Store(true); cancel() })
	defer watchdog.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, fmt.Errorf("cannot download %s: %w", name, err)
	}
	if tok := os.Getenv("HF_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok) // gated repositories; Go drops it on cross-host redirects
	}
	resp, err := hubClient().Do(req)
	if err != nil {
		if stalled.Load() {
			return false, fmt.Errorf("cannot download %s: no response for %s%s", name, DownloadStallTimeout, hint)
		}
		if isOffline(err) {
			return false, fmt.Errorf("cannot download %s (offline?): %w%s", name, err, hint)
		}
		return false, fmt.Errorf("cannot download %s: %w%s", name, err, hint)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound && optional {
		return false, nil
	}
	if resp.StatusCode != http.StatusOK {
		extra := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			extra = " (a gated repository? accept its license on huggingface.co and set HF_TOKEN)"
		}
		return false, fmt.Errorf("cannot download %s: GET %s: %s%s%s", name, u, resp.Status, extra, hint)
	}
	if resp.ContentLength > 0 {
		fmt.Fprintf(DownloadLog, "downloading %s (%.1f MB)\n", name, float64(resp.ContentLength)/1e6)
	} else {
		fmt.Fprintf(DownloadLog, "downloading %s\n", name)
	}

	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return false, err
	}
	err = fileio.Write(dest, func(w io.Writer) error {
		h := sha256.New()
		body := &progressReader{r: resp.Body, onData: func() { watchdog.Reset(DownloadStallTimeout) }}
		n, err := io.Copy(io.MultiWriter(w, h), body)
		if err != nil {
			if stalled.Load() {
				return fmt.Errorf("cannot download %s: no data for %s after %d bytes%s", name, DownloadStallTimeout, n, hint)
			}
			return fmt.Errorf("cannot download %s: after %d bytes: %w%s", name, n, err, hint)
		}
		if resp.ContentLength >= 0 && n != resp.ContentLength {
			return fmt.Errorf("cannot download %s: got %d of %d bytes%s", name, n, resp.ContentLength, hint)
		}
		sum := hex.EncodeToString(h.Sum(nil))
		if pin, ok := pinnedFiles[name]; ok {
			if sum != pin.sha256 || n != pin.size {
				return fmt.Errorf("download of %s is not the known file: sha256 %s (%d bytes), want %s (%d bytes)",
					name, sum, n, pin.sha256, pin.size)
			}
		} else {
			fmt.Fprintf(DownloadLog, "%s: %d bytes, sha256 %s\n", name, n, sum)
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	return true, nil
}

// escapePath escapes each segment of a slash-separated path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// hubClient has connect and header timeouts but no overall timeout; the stall watchdog covers the body.
func hubClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: DownloadConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   DownloadConnectTimeout,
		ResponseHeaderTimeout: DownloadStallTimeout,
	}}
}

// isOffline reports network errors that mean "no route to the server": DNS failure, refused or unreachable
// connections, dial timeouts.
func isOffline(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	for _, e := range []error{syscall.ECONNREFUSED, syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.ENETDOWN} {
		if errors.Is(err, e) {
			return true
		}
	}
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// progressReader calls onData whenever bytes arrive.
type progressReader struct {
	r      io.Reader
	onData func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.onData()
	}
	return n, err
}
