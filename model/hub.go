package model

import (
	"cmp"
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
	// HubBaseURL is where Hugging Face references are fetched: <base>/<owner>/<repo>/resolve/<revision>/<file>;
	// $HF_ENDPOINT (huggingface_hub's setting, e.g. a mirror), else https://huggingface.co.
	HubBaseURL = cmp.Or(os.Getenv("HF_ENDPOINT"), "https://huggingface.co")
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

// DefaultCacheDir is $SADDLE_CACHE, else ~/.cache/saddle: saddle's own cache (the embedded model's file).
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

// HubCacheDir is the Hugging Face hub cache, where huggingface_hub (and so transformers, PEFT, vLLM) keeps its
// downloads: $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
func HubCacheDir() (string, error) {
	if d := os.Getenv("HF_HUB_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("HF_HOME"); d != "" {
		return filepath.Join(d, "hub"), nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "huggingface", "hub"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no Hugging Face cache folder: set HF_HUB_CACHE or HF_HOME (%w)", err)
	}
	return filepath.Join(home, ".cache", "huggingface", "hub"), nil
}

// HubOffline reports whether HF_HUB_OFFLINE is set to a true value (1, ON, YES or TRUE, as huggingface_hub reads
// it): Hugging Face references then resolve from the cache only, and nothing touches the network.
func HubOffline() bool {
	switch strings.ToUpper(strings.TrimSpace(os.Getenv("HF_HUB_OFFLINE"))) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}

// Source is where a model argument was found.
type Source struct {
	// Path is the local file or folder to load.
	Path string
	// Name is what a run records to find the model again: the argument as given.
	Name string
	// HubID is the Hugging Face repository ("owner/repo") of a model named by a hub reference or given by a path in
	// a hub cache snapshot, and of the embedded model (its upstream repository); "" for other local paths.
	HubID string
	// Embedded is set for the model built into the binary.
	Embedded bool
}

// ResolveSource turns a model argument into a local path. An existing file or folder is returned as is. The names
// of the embedded model (DefaultModel and its Hugging Face reference) give a cache file of the binary's own bytes,
// without network. Otherwise a Hugging Face reference is looked up in the hub cache cacheDir (HubCacheDir when
// empty), laid out as huggingface_hub lays it out, and downloaded there when missing (never with HF_HUB_OFFLINE):
// "owner/repo:path/in/repo.gguf" is that file; "owner/repo" an HF folder (config.json, generation_config.json,
// tokenizer files and the safetensors weights, sharded or not), the snapshot folder of one commit.
func ResolveSource(nameOrPath string, cacheDir string) (Source, error) {
	if _, err := os.Stat(nameOrPath); err == nil {
		return Source{Path: nameOrPath, Name: nameOrPath, HubID: hubIDOfCachePath(nameOrPath)}, nil
	}
	if e := findEmbedded(nameOrPath); e != nil {
		path, err := e.materialize()
		return Source{Path: path, Name: nameOrPath, HubID: e.hub.owner + "/" + e.hub.repo, Embedded: true}, err
	}
	ref, ok := parseHubRef(nameOrPath)
	if !ok {
		return Source{}, fmt.Errorf("%s: no such file or folder, and not a Hugging Face reference (owner/repo or owner/repo:path/to/file.gguf)", nameOrPath)
	}
	if cacheDir == "" {
		var err error
		if cacheDir, err = HubCacheDir(); err != nil {
			return Source{}, err
		}
	}
	h := &hubRepo{ref: ref, dir: filepath.Join(cacheDir, "models--"+ref.owner+"--"+ref.repo)}
	h.readRef()
	var path string
	var err error
	if ref.file != "" {
		path, err = h.file(ref.file)
	} else {
		path, err = h.folder()
	}
	return Source{Path: path, Name: nameOrPath, HubID: ref.owner + "/" + ref.repo}, err
}

// errHubUnreachable matches download errors that mean the hub cannot be reached at all (unreachableError).
var errHubUnreachable = errors.New("hub unreachable")

type unreachableError struct{ error }

func (e unreachableError) Unwrap() error        { return e.error }
func (e unreachableError) Is(target error) bool { return target == errHubUnreachable }

// hubIDOfCachePath returns "owner/repo" for a path inside a Hugging Face cache snapshot
// (.../models--owner--repo/snapshots/<commit>/...), else "".
func hubIDOfCachePath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return ""
	}
	parts := strings.Split(filepath.ToSlash(abs), "/")
	for i := 0; i+2 < len(parts); i++ {
		rest, ok := strings.CutPrefix(parts[i], "models--")
		owner, repo, found := strings.Cut(rest, "--")
		if ok && found && parts[i+1] == "snapshots" && hubCommit.MatchString(parts[i+2]) {
			if ref, ok := parseHubRef(owner + "/" + repo); ok && ref.file == "" {
				return ref.String()
			}
		}
	}
	return ""
}

// hubRepo is one repository in the Hugging Face hub cache: dir is <cache>/models--owner--repo, holding
// blobs/<etag> (the files' contents), snapshots/<commit>/<path> (symbolic links into blobs), refs/main (the commit
// main pointed at when last downloaded) and .no_exist/<commit>/<path> (files the hub said are absent).
type hubRepo struct {
	ref    hubRef // owner and repo (file unused)
	dir    string
	commit string // the snapshot in use: refs/main, or the commit the hub named for the first download
}

var (
	// hubCommit is a git commit id as the hub names snapshots.
	hubCommit = regexp.MustCompile(`^[0-9a-f]{40}$`)
	// hubETag is a blob name: a git blob sha1 or an LFS sha256 (anything else must not become a file name).
	hubETag = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)
)

// readRef takes the commit of refs/main, when the cache has one.
func (h *hubRepo) readRef() {
	if b, err := fileio.ReadFile(filepath.Join(h.dir, "refs", "main")); err == nil {
		if c := strings.TrimSpace(string(b)); hubCommit.MatchString(c) {
			h.commit = c
		}
	}
}

func (h *hubRepo) name(file string) string { return hubRef{h.ref.owner, h.ref.repo, file}.String() }

func (h *hubRepo) snapshot(file string) string {
	return filepath.Join(h.dir, "snapshots", h.commit, filepath.FromSlash(file))
}

// cached reports whether the current snapshot holds file (present) or the hub said it has none (absent).
func (h *hubRepo) cached(file string) (present, absent bool) {
	if h.commit == "" {
		return false, false
	}
	if _, err := os.Stat(h.snapshot(file)); err == nil {
		return true, false
	}
	_, err := os.Stat(filepath.Join(h.dir, ".no_exist", h.commit, filepath.FromSlash(file)))
	return false, err == nil
}

func (h *hubRepo) offlineError(file string) error {
	where := filepath.Join(h.dir, "snapshots", "<commit of refs/main>", filepath.FromSlash(file))
	if h.commit != "" {
		where = h.snapshot(file)
	}
	return fmt.Errorf("%s is not in the Hugging Face cache (no %s) and HF_HUB_OFFLINE is set: download it once online "+
		"(unset HF_HUB_OFFLINE) or pass --model /path/to/file", h.name(file), where)
}

// file returns the snapshot path of one file, downloading it when the cache lacks it.
func (h *hubRepo) file(file string) (string, error) {
	if present, _ := h.cached(file); !present {
		if HubOffline() {
			return "", h.offlineError(file)
		}
		if _, err := h.download(file, false); err != nil {
			return "", err
		}
	}
	path := h.snapshot(file)
	return path, checkPinned(h.name(file), path)
}

// checkPinned verifies a cached file whose content saddle knows.
func checkPinned(name, path string) error {
	pin, ok := pinnedFiles[name]
	if !ok {
		return nil
	}
	if sum := fileSHA256(path); sum != pin.sha256 {
		return fmt.Errorf("%s (%s) is not the known file: sha256 %s, want %s; remove it from the cache",
			path, name, cmp.Or(sum, "unreadable"), pin.sha256)
	}
	return nil
}

// folder returns the snapshot folder of an HF model, downloading the files the cache lacks into the same commit.
func (h *hubRepo) folder() (string, error) {
	get := func(file string, optional bool) (bool, error) {
		if present, absent := h.cached(file); present || absent {
			return present, nil
		}
		if HubOffline() {
			if optional {
				return false, nil
			}
			return false, h.offlineError(file)
		}
		found, err := h.download(file, optional)
		if optional && h.commit != "" && errors.Is(err, errHubUnreachable) {
			// What the cache holds (a folder huggingface_hub filled) is used without the optional extras.
			fmt.Fprintf(DownloadLog, "%s: using the cached snapshot without %s (%v)\n", h.ref, file, err)
			return false, nil
		}
		return found, err
	}
	if _, err := get("config.json", false); err != nil {
		return "", err
	}
	for _, f := range []string{"generation_config.json", "tokenizer.json", "tokenizer_config.json"} {
		if _, err := get(f, true); err != nil {
			return "", err
		}
	}
	sharded := false
	if present, _ := h.cached("model.safetensors"); !present {
		var err error
		if sharded, err = get("model.safetensors.index.json", true); err != nil {
			return "", err
		}
	}
	if !sharded {
		if _, err := get("model.safetensors", false); err != nil {
			return "", err
		}
	} else {
		indexPath := h.snapshot("model.safetensors.index.json")
		data, err := fileio.ReadFile(indexPath)
		if err != nil {
			return "", err
		}
		index, err := parseWeightMap(indexPath, data)
		if err != nil {
			return "", err
		}
		seen := map[string]bool{}
		for _, shard := range index.WeightMap {
			if seen[shard] {
				continue
			}
			seen[shard] = true
			if !plainFileName(shard) {
				return "", fmt.Errorf("%s: shard name %q is not a plain file name", h.ref, shard)
			}
			if _, err := get(shard, false); err != nil {
				return "", err
			}
		}
	}
	return filepath.Join(h.dir, "snapshots", h.commit), nil
}

// download fetches file at the snapshot's commit (main for the first file) into blobs/<etag>, links it from
// snapshots/<commit>/<file> and records main's commit in refs/main, as huggingface_hub does, so that each reuses
// the other's downloads. A blob already there is not fetched again. Every file appears only complete (fileio.Write);
// an LFS file's content must match its sha256 ETag, a pinned file its known hash. With optional, a 404 returns
// found=false and no error (and is remembered in .no_exist).
func (h *hubRepo) download(file string, optional bool) (found bool, err error) {
	name := h.name(file)
	rev := cmp.Or(h.commit, "main")
	u := strings.TrimSuffix(HubBaseURL, "/") + "/" + url.PathEscape(h.ref.owner) + "/" + url.PathEscape(h.ref.repo) +
		"/resolve/" + rev + "/" + escapePath(file)
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
	// The hub names the commit and an LFS file's sha256 on its answer, which for LFS files is a redirect to
	// where the content is.
	var commit, linkedETag string
	note := func(hd http.Header) {
		commit = cmp.Or(commit, hd.Get("X-Repo-Commit"))
		linkedETag = cmp.Or(linkedETag, hd.Get("X-Linked-Etag"))
	}
	reused := false // the redirect named a blob the cache has: its content is not fetched
	client := hubClient()
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.Response != nil {
			note(r.Response.Header)
		}
		if etag := strings.Trim(strings.TrimPrefix(linkedETag, "W/"), `"`); hubETag.MatchString(etag) {
			if _, err := os.Stat(filepath.Join(h.dir, "blobs", etag)); err == nil {
				reused = true
				return http.ErrUseLastResponse
			}
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	resp, err := client.Do(req)
	if err != nil {
		if stalled.Load() {
			return false, fmt.Errorf("cannot download %s: no response for %s%s", name, DownloadStallTimeout, hint)
		}
		if isOffline(err) {
			return false, unreachableError{fmt.Errorf("cannot download %s (offline?): %w%s", name, err, hint)}
		}
		return false, fmt.Errorf("cannot download %s: %w%s", name, err, hint)
	}
	defer resp.Body.Close()
	note(resp.Header)
	if resp.StatusCode == http.StatusNotFound && optional {
		if hubCommit.MatchString(commit) && (h.commit == "" || commit == h.commit) {
			noExist := filepath.Join(h.dir, ".no_exist", commit, filepath.FromSlash(file))
			if os.MkdirAll(filepath.Dir(noExist), 0o755) == nil {
				_ = fileio.WriteFile(noExist, nil) // only spares a request next time
			}
		}
		return false, nil
	}
	if resp.StatusCode != http.StatusOK && !reused {
		extra := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			extra = " (a gated repository? accept its license on huggingface.co and set HF_TOKEN)"
		}
		return false, fmt.Errorf("cannot download %s: GET %s: %s%s%s", name, u, resp.Status, extra, hint)
	}
	if !hubCommit.MatchString(commit) {
		return false, fmt.Errorf("cannot download %s: GET %s named no commit (X-Repo-Commit %q): not a Hugging Face hub?%s", name, u, commit, hint)
	}
	if h.commit != "" && commit != h.commit {
		return false, fmt.Errorf("cannot download %s: asked for commit %s, the hub answered with %s%s", name, h.commit, commit, hint)
	}
	etag := strings.Trim(strings.TrimPrefix(cmp.Or(linkedETag, resp.Header.Get("ETag")), "W/"), `"`)
	if !hubETag.MatchString(etag) {
		return false, fmt.Errorf("cannot download %s: GET %s gave no usable ETag (%q): not a Hugging Face hub?%s", name, u, etag, hint)
	}
	blob := filepath.Join(h.dir, "blobs", etag)
	if _, err := os.Stat(blob); err != nil {
		if err := h.fetchBlob(name, blob, etag, resp, watchdog, &stalled, hint); err != nil {
			return false, err
		}
	}
	h.commit = commit
	if err := h.link(file, blob); err != nil {
		return false, err
	}
	if rev == "main" {
		if err := os.MkdirAll(filepath.Join(h.dir, "refs"), 0o755); err != nil {
			return false, err
		}
		if err := fileio.WriteFile(filepath.Join(h.dir, "refs", "main"), []byte(commit)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// fetchBlob writes resp's body to blob, checking its length, its sha256 against an LFS ETag and a pinned hash.
func (h *hubRepo) fetchBlob(name, blob, etag string, resp *http.Response, watchdog *time.Timer, stalled *atomic.Bool, hint string) error {
	if resp.ContentLength > 0 {
		fmt.Fprintf(DownloadLog, "downloading %s (%.1f MB)\n", name, float64(resp.ContentLength)/1e6)
	} else {
		fmt.Fprintf(DownloadLog, "downloading %s\n", name)
	}
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return err
	}
	return fileio.Write(blob, func(w io.Writer) error {
		hash := sha256.New()
		body := &progressReader{r: resp.Body, onData: func() { watchdog.Reset(DownloadStallTimeout) }}
		n, err := io.Copy(io.MultiWriter(w, hash), body)
		if err != nil {
			if stalled.Load() {
				return fmt.Errorf("cannot download %s: no data for %s after %d bytes%s", name, DownloadStallTimeout, n, hint)
			}
			return fmt.Errorf("cannot download %s: after %d bytes: %w%s", name, n, err, hint)
		}
		if resp.ContentLength >= 0 && n != resp.ContentLength {
			return fmt.Errorf("cannot download %s: got %d of %d bytes%s", name, n, resp.ContentLength, hint)
		}
		sum := hex.EncodeToString(hash.Sum(nil))
		if len(etag) == 64 && sum != etag {
			return fmt.Errorf("download of %s is not the file the hub named: sha256 %s, ETag %s%s", name, sum, etag, hint)
		}
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
}

// link points snapshots/<commit>/<file> at blob with a relative symbolic link (as huggingface_hub makes them),
// replacing whatever was there in one rename.
func (h *hubRepo) link(file, blob string) error {
	dest := h.snapshot(file)
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(dest), blob)
	if err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.saddle-%d.tmp", dest, os.Getpid())
	os.Remove(tmp)
	if err := os.Symlink(rel, tmp); err != nil {
		return fmt.Errorf("cannot link %s into the Hugging Face cache: %w", file, err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
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
