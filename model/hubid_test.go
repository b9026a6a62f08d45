package model

import (
	"path/filepath"
	"testing"

	"github.com/saddle-ml/saddle/internal/gguf"
	"github.com/saddle-ml/saddle/internal/testenv"
)

func TestGGUFHubID(t *testing.T) {
	cases := []struct {
		kvs  []gguf.KV
		want string
	}{
		{[]gguf.KV{{Key: "general.source.repo_url", Value: "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct"}}, "Qwen/Qwen2.5-0.5B-Instruct"},
		{[]gguf.KV{{Key: "general.source.url", Value: "https://huggingface.co/meta-llama/Llama-3.2-1B/tree/main"}}, "meta-llama/Llama-3.2-1B"},
		{[]gguf.KV{{Key: "general.source.huggingface.repository", Value: "TinyLlama/TinyLlama-1.1B"}}, "TinyLlama/TinyLlama-1.1B"},
		{[]gguf.KV{{Key: "general.source.url", Value: "https://github.com/karpathy/llama2.c"}}, ""},
		{[]gguf.KV{{Key: "general.name", Value: "llama"}, {Key: "general.base_model.0.repo_url", Value: "https://huggingface.co/a/parent"}}, ""},
		{[]gguf.KV{{Key: "general.source.repo_url", Value: "https://huggingface.co/x"}}, ""},
		{[]gguf.KV{{Key: "general.source.repo_url", Value: uint32(7)}}, ""},
	}
	for i, c := range cases {
		path := filepath.Join(t.TempDir(), "m.gguf")
		if err := gguf.Write(path, append([]gguf.KV{{Key: "general.architecture", Value: "llama"}}, c.kvs...), nil); err != nil {
			t.Fatal(err)
		}
		if got := GGUFHubID(path); got != c.want {
			t.Errorf("case %d %v: %q, want %q", i, c.kvs, got, c.want)
		}
	}
	gguf260K, _ := testenv.Stories260K(t)
	if got := GGUFHubID(gguf260K); got != "" {
		t.Errorf("stories260K (general.name llama, no source): %q", got)
	}
}
