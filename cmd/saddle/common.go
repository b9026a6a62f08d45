package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gomlx/compute"
	"github.com/spf13/cobra"

	"github.com/saddle-ml/saddle/backend"
	"github.com/saddle-ml/saddle/internal/setting"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/tokenizer"
)

func addModelFlag(cmd *cobra.Command) {
	cmd.Flags().String("model", model.DefaultModel, "GGUF file, Hugging Face folder, Hugging Face name owner/repo[:file], "+
		"or "+model.DefaultModel+" (built in)")
}

func addJSONFlag(cmd *cobra.Command) {
	cmd.Flags().Bool("json", false, "print one JSON object with the result")
}

func flagString(cmd *cobra.Command, name string) string {
	v, _ := cmd.Flags().GetString(name)
	return v
}

func flagBool(cmd *cobra.Command, name string) bool {
	v, _ := cmd.Flags().GetBool(name)
	return v
}

// resolveModel turns --model into a local path (model.ResolveSource): the built-in model, a local file or folder,
// or a Hugging Face name from the Hugging Face cache, downloaded there when missing.
func resolveModel(cmd *cobra.Command) (model.Source, error) {
	name := strings.TrimSpace(flagString(cmd, "model"))
	if name == "" {
		return model.Source{}, usagef("--model is empty: give a GGUF file, a Hugging Face folder or owner/repo:file")
	}
	return model.ResolveSource(name, "")
}

// newBackend creates the backend chosen by --backend / --pjrt-plugin / GOMLX_BACKEND.
func newBackend(cmd *cobra.Command) (compute.Backend, string, error) {
	cfg := flagString(cmd, "backend")
	if plugin := flagString(cmd, "pjrt-plugin"); plugin != "" {
		if cfg != "" && !strings.HasPrefix(cfg, "xla") {
			return nil, "", usagef("--pjrt-plugin needs the xla backend, but --backend is %q", cfg)
		}
		abs, err := filepath.Abs(plugin)
		if err != nil {
			return nil, "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, "", fmt.Errorf("PJRT plugin %s: %w", plugin, err)
		}
		// Options after the plugin's name stay: --backend xla:cuda,tf32=false --pjrt-plugin P is xla:P,tf32=false.
		_, opts, _ := strings.Cut(cfg, ",")
		cfg = "xla:" + abs
		if opts != "" {
			cfg += "," + opts
		}
	}
	b, name, err := backend.New(cfg)
	if errors.Is(err, backend.ErrUnknown) {
		return nil, name, usageError{err}
	}
	return b, name, err
}

// loadTokenizer finds the tokenizer that ships with a model: tokenizer.json in an HF folder, or GGUF metadata.
func loadTokenizer(modelPath string) (*tokenizer.Tokenizer, error) {
	info, err := os.Stat(modelPath)
	if err != nil {
		return nil, err
	}
	if info.IsDir() {
		file := filepath.Join(modelPath, "tokenizer.json")
		if os.Getenv("SADDLE_TOKENIZER") == "rust" { // opt-in: binaries built with -tags hftokenizers
			return tokenizer.FromFileNative(file)
		}
		return tokenizer.FromFile(file)
	}
	return tokenizer.FromGGUF(modelPath)
}

// checkVocab refuses a model whose vocabulary does not cover its tokenizer's ids (tokVocab of them): the
// embedding would be read outside its rows, and generation would sample ids the tokenizer cannot decode. train,
// escape, generate and info check every model they load with its tokenizer through it.
func checkVocab(path string, tokVocab int, cfg model.Config) error {
	if tokVocab > cfg.VocabSize {
		return fmt.Errorf("%s: the tokenizer has %d tokens but the model's vocabulary only %d: the model and tokenizer do not belong together; "+
			"use the tokenizer that came with the model (or a model whose vocab_size covers the tokenizer)", path, tokVocab, cfg.VocabSize)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// newModel builds the model on b with the compute type compute, or --dtype's when compute is "". A dtype the
// backend cannot use is a usage error naming --dtype.
func newModel(cmd *cobra.Command, b compute.Backend, p *model.Pretrained, computeType string) (*model.Model, error) {
	if computeType == "" {
		computeType = flagString(cmd, "dtype")
	}
	name, err := model.ResolveCompute(b, computeType)
	if err != nil {
		return nil, usageError{setting.Errorf("dtype", "%v", err)}
	}
	return model.NewWithCompute(b, p, name)
}
