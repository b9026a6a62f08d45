package checkpoints

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// HashBase computes the identity of a base model: sha256 over its weight files (GGUF file; or config.json and the
// .safetensors files of an HF folder), in name order. Reading a multi-GB model takes minutes, so the result is
// cached on disk (DefaultHasher) and in memory, keyed by each file's path, size, modification time and inode: an
// unchanged model is read once per machine, and a changed file is read again.
func HashBase(path string) (BaseIdentity, error) { return DefaultHasher.Hash(path) }

// DefaultHasher keeps its cache in $SADDLE_BASEHASH_CACHE, else in the user cache folder (~/.cache/saddle/basehash
// on Linux); without either it caches in memory only.
var DefaultHasher = &Hasher{CacheDir: defaultHashCache()}

func defaultHashCache() string {
	if dir := os.Getenv("SADDLE_BASEHASH_CACHE"); dir != "" {
		return dir
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "saddle", "basehash")
}

// hashCacheEntries bounds the cache folder: the oldest entries beyond it are removed when one is written.
const hashCacheEntries = 256

// Hasher computes base model identities, caching them by the files' stamps.
type Hasher struct {
	CacheDir string // where entries are kept between processes; "" keeps them in memory only
	// Open opens a file for hashing; nil uses fileio.Open. Tests count reads through it.
	Open func(path string) (io.ReadCloser, error)

	mu     sync.Mutex
	memory map[string]hashEntry // by absolute model path
}

// fileStamp is what identifies a file's content without reading it. Ctime changes with any write, also one that
// restores the modification time afterwards.
type fileStamp struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode,omitempty"`
	Device  uint64 `json:"device,omitempty"`
	CTime   int64  `json:"ctime_ns,omitempty"`
}

// hashEntry is one cache file: the stamps of the files hashed and their hash.
type hashEntry struct {
	Version int         `json:"version"`
	Model   string      `json:"model"`
	Files   []fileStamp `json:"files"`
	SHA256  string      `json:"sha256"`
}

const hashEntryVersion = 1

// Hash returns the identity of the model at path: from the cache when every file's stamp is unchanged, else by
// reading the files (and then caching the result). A cache entry that cannot be read or parsed is ignored, and a
// cache that cannot be written only costs the next run the reading.
func (h *Hasher) Hash(path string) (BaseIdentity, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	files, err := baseFiles(abs)
	if err != nil {
		return BaseIdentity{}, err
	}
	stamps, err := stampFiles(files)
	if err != nil {
		return BaseIdentity{}, err
	}
	if e, ok := h.cached(abs, stamps); ok {
		return BaseIdentity{Path: abs, SHA256: e.SHA256}, nil
	}
	sum, err := h.hashFiles(files)
	if err != nil {
		return BaseIdentity{}, err
	}
	id := BaseIdentity{Path: abs, SHA256: sum}
	// A file that changed while it was read may have been hashed half old, half new: use the hash, keep no entry.
	if after, err := stampFiles(files); err == nil && slices.Equal(after, stamps) {
		h.store(hashEntry{Version: hashEntryVersion, Model: abs, Files: stamps, SHA256: sum})
	}
	return id, nil
}

// HashBaseCost is how many bytes HashBase(path) would read: 0 when the hash is cached (or path cannot be read).
func HashBaseCost(path string) int64 { return DefaultHasher.Cost(path) }

// Cost is how many bytes Hash(path) would read: 0 when the hash is cached (or path cannot be read).
func (h *Hasher) Cost(path string) int64 {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	files, err := baseFiles(abs)
	if err != nil {
		return 0
	}
	stamps, err := stampFiles(files)
	if err != nil {
		return 0
	}
	if _, ok := h.cached(abs, stamps); ok {
		return 0
	}
	var n int64
	for _, s := range stamps {
		n += s.Size
	}
	return n
}

// baseFiles lists the files whose bytes make up a model's identity, in hashing order.
func baseFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	matches, err := filepath.Glob(filepath.Join(path, "*.safetensors"))
	if err != nil {
		return nil, err
	}
	sort.Strings(matches)
	return append([]string{filepath.Join(path, "config.json")}, matches...), nil
}

func stampFiles(files []string) ([]fileStamp, error) {
	stamps := make([]fileStamp, len(files))
	for i, f := range files {
		info, err := os.Stat(f) // follows links: the hub cache links to blobs
		if err != nil {
			return nil, err
		}
		stamps[i] = fileStamp{Path: f, Size: info.Size(), ModTime: info.ModTime().UnixNano()}
		stamps[i].Inode, stamps[i].Device, stamps[i].CTime = sysStamp(info)
	}
	return stamps, nil
}

func (h *Hasher) hashFiles(files []string) (string, error) {
	open := h.Open
	if open == nil {
		open = func(path string) (io.ReadCloser, error) {
			f, _, err := fileio.Open(path)
			return f, err
		}
	}
	sum := sha256.New()
	for _, f := range files {
		r, err := open(f)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(sum, r)
		r.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", f, err)
		}
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// entryFile is the cache file of a model path: one per model, replaced when its files change.
func (h *Hasher) entryFile(model string) string {
	key := sha256.Sum256([]byte(model))
	return filepath.Join(h.CacheDir, hex.EncodeToString(key[:16])+".json")
}

// cached finds a valid entry for model with exactly these stamps, in memory or on disk.
func (h *Hasher) cached(model string, stamps []fileStamp) (hashEntry, bool) {
	valid := func(e hashEntry) bool {
		return e.Version == hashEntryVersion && e.Model == model && slices.Equal(e.Files, stamps) && validSHA256(e.SHA256)
	}
	h.mu.Lock()
	e, ok := h.memory[model]
	h.mu.Unlock()
	if ok && valid(e) {
		return e, true
	}
	if h.CacheDir == "" {
		return hashEntry{}, false
	}
	data, err := os.ReadFile(h.entryFile(model))
	if err != nil {
		return hashEntry{}, false
	}
	e = hashEntry{}
	if json.Unmarshal(data, &e) != nil || !valid(e) {
		return hashEntry{}, false
	}
	h.remember(e)
	return e, true
}

func validSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size && s == strings.ToLower(s)
}

func (h *Hasher) remember(e hashEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.memory == nil {
		h.memory = map[string]hashEntry{}
	}
	h.memory[e.Model] = e
}

// store keeps e in memory and, best effort, on disk.
func (h *Hasher) store(e hashEntry) {
	h.remember(e)
	if h.CacheDir == "" {
		return
	}
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil || os.MkdirAll(h.CacheDir, 0o755) != nil {
		return
	}
	if fileio.WriteFile(h.entryFile(e.Model), append(data, '\n')) == nil {
		h.prune()
	}
}

// prune removes the oldest entries beyond hashCacheEntries (models that were moved or deleted leave theirs).
func (h *Hasher) prune() {
	entries, err := os.ReadDir(h.CacheDir)
	if err != nil {
		return
	}
	type aged struct {
		name string
		mod  int64
	}
	var files []aged
	for _, d := range entries {
		if !d.Type().IsRegular() || filepath.Ext(d.Name()) != ".json" {
			continue
		}
		if info, err := d.Info(); err == nil {
			files = append(files, aged{d.Name(), info.ModTime().UnixNano()})
		}
	}
	if len(files) <= hashCacheEntries {
		return
	}
	slices.SortFunc(files, func(a, b aged) int { return int(max(-1, min(1, b.mod-a.mod))) })
	for _, f := range files[hashCacheEntries:] {
		os.Remove(filepath.Join(h.CacheDir, f.name))
	}
}
