package model

import (
	"strings"

	"github.com/saddle-ml/saddle/internal/gguf"
)

// ggufHubKeys are the GGUF metadata keys in which llama.cpp's converters record where a model came from, most
// specific first: gguf-py's general.source.repo_url and general.source.url (URLs), and the older
// general.source.huggingface.repository (an id; its first version misspelled "hugginface"). general.name is a
// display name and general.base_model.* names the model this one was derived from, so neither is used.
var ggufHubKeys = []string{
	"general.source.repo_url",
	"general.source.huggingface.repository",
	"general.source.hugginface.repository",
	"general.source.url",
}

// GGUFHubID returns the Hugging Face repository ("owner/repo") a GGUF file's metadata says it was converted from,
// or "" when it says none (or the file cannot be read).
func GGUFHubID(path string) string {
	f, err := gguf.ReadMetadata(path)
	if err != nil {
		return ""
	}
	for _, key := range ggufHubKeys {
		v, ok := f.Get(key)
		s, isString := v.(string)
		if !ok || !isString {
			continue
		}
		if id := hubIDOf(s); id != "" {
			return id
		}
	}
	return ""
}

// hubIDOf turns "owner/repo" or a Hugging Face URL (https://huggingface.co/owner/repo[/...]) into "owner/repo".
func hubIDOf(s string) string {
	s = strings.TrimSpace(s)
	for _, prefix := range []string{"https://huggingface.co/", "http://huggingface.co/", "https://hf.co/", "huggingface.co/"} {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			parts := strings.SplitN(rest, "/", 3)
			if len(parts) < 2 {
				return ""
			}
			s = parts[0] + "/" + parts[1]
			break
		}
	}
	if ref, ok := parseHubRef(s); ok && ref.file == "" {
		return ref.String()
	}
	return ""
}
