package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/saddle-ml/saddle/data"
	"github.com/saddle-ml/saddle/internal/fileio"
)

// DefaultModel names the model commands use without --model: stories260K, built into the binary.
const DefaultModel = "stories260K"

// embeddedModel is a model file built into the binary.
type embeddedModel struct {
	names []string // what --model accepts for it; the first is its own name
	hub   hubRef   // its upstream file, whose pinned hash the bytes must have
	data  []byte
}

var embeddedModels = []embeddedModel{{
	names: []string{DefaultModel, "ggml-org/models:tinyllamas/stories260K.gguf"},
	hub:   hubRef{"ggml-org", "models", "tinyllamas/stories260K.gguf"},
	data:  data.Stories260K,
}}

// findEmbedded returns the embedded model called name, or nil.
func findEmbedded(name string) *embeddedModel {
	for i := range embeddedModels {
		if slices.Contains(embeddedModels[i].names, name) {
			return &embeddedModels[i]
		}
	}
	return nil
}

// materialize returns the path of a file holding the model's bytes: a file in saddle's cache
// (DefaultCacheDir/embedded/<sha256>/<name>), written when missing or not those bytes, and verified by its sha256
// on every use. Nothing is downloaded.
func (e *embeddedModel) materialize() (string, error) {
	pin := pinnedFiles[e.hub.String()]
	if sum := sha256.Sum256(e.data); hex.EncodeToString(sum[:]) != pin.sha256 || int64(len(e.data)) != pin.size {
		return "", fmt.Errorf("the embedded %s is damaged (its sha256 is not %s): rebuild saddle", e.names[0], pin.sha256)
	}
	cache, err := DefaultCacheDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(cache, "embedded", pin.sha256, filepath.Base(e.hub.file))
	if fileSHA256(path) == pin.sha256 {
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("cannot write the embedded model %s into saddle's cache: %w (set SADDLE_CACHE to a writable folder)", e.names[0], err)
	}
	if err := fileio.WriteFile(path, e.data); err != nil {
		return "", fmt.Errorf("cannot write the embedded model %s into saddle's cache: %w (set SADDLE_CACHE to a writable folder)", e.names[0], err)
	}
	return path, nil
}

// fileSHA256 is the hex sha256 of a regular file, or "" when it cannot be read.
func fileSHA256(path string) string {
	f, _, err := fileio.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}
