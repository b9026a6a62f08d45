package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
)

type exportResult struct {
	Format    string   `json:"format"`
	Adapter   string   `json:"adapter"`
	BaseModel string   `json:"base_model"`
	Out       string   `json:"out"`
	Files     []string `json:"files"`
	Modules   int      `json:"modules"`
	Rank      int      `json:"rank"`
	Depth     int      `json:"depth"`
	Scaling   float64  `json:"scaling"`

	// BaseModelID is what a PEFT adapter names as its base (base_model_name_or_path).
	BaseModelID string `json:"base_model_id,omitempty"`
}

var exportFormats = []string{"peft", "merged", "gguf", "merged-gguf"}

func newExportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export a trained adapter: PEFT folder, merged HF model, llama.cpp LoRA GGUF or merged GGUF",
		Long: `export writes a trained adapter (the --out folder of 'saddle train', a checkpoint inside it, or a PEFT
adapter folder) in a format other tools read:

  peft         adapter_config.json + adapter_model.safetensors (PEFT, vLLM, llama.cpp's converter); deeper
               products are folded to the rank-r pair B·M⋯, A, keeping the scale
  merged       a plain Hugging Face folder (config.json, model.safetensors, tokenizer) with W + s·B⋯A
  gguf         a llama.cpp LoRA adapter GGUF (llama-cli --lora FILE); an rsLoRA scale is baked into alpha
  merged-gguf  the GGUF base model with the adapter merged in (GGUF bases only): tensors the adapter does not
               touch are copied byte for byte; adapted ones keep a float base's type, and a quantized base's
               (Q4_K, Q8_0, ...) become F16 unless --dtype says otherwise (Q8_0, Q4_K, Q6_K re-quantize them,
               dropping the parts of ΔW smaller than half a quantization step)

For gguf and merged-gguf, --out may name the .gguf file; a folder gets adapter.gguf or model.gguf.

Every export is written under a hidden temporary name beside --out (.NAME.partial-*) and renamed to --out only when
complete. An existing --out (a file, or a folder holding anything) is refused unless --overwrite is given; then the
old output is replaced only after the new one is complete. Nothing is ever written at, inside or over the adapter's
run folder, its checkpoint or the base model, not even with --overwrite.`,
		Args: cobra.NoArgs,
		RunE: runExport,
	}
	addJSONFlag(cmd)
	f := cmd.Flags()
	f.String("checkpoint", "", "adapter folder: a run's --out folder, a checkpoint in it, or a PEFT adapter (required)")
	f.String("format", "peft", "peft, merged, gguf or merged-gguf")
	f.String("out", "", "output folder (or .gguf file for gguf and merged-gguf) (required)")
	f.String("model", "", "base model (default: the model the adapter was trained on, from its adapter.json or config.json)")
	f.String("dtype", "", "tensor type: F32, F16 or BF16, or for merged-gguf also Q8_0, Q4_K or Q6_K (default: F32 for "+
		"adapters, the base's types for merged models, F16 for merged-gguf tensors whose base is quantized)")
	f.String("base-model-id", "", "peft: adapter_config.json's base_model_name_or_path (default: the base's Hugging Face id when known, else its path)")
	f.Bool("overwrite", false, "replace an existing --out (the whole folder, or the file), once the new export is complete")
	return cmd
}

func runExport(cmd *cobra.Command, _ []string) error {
	checkpoint, out, format := flagString(cmd, "checkpoint"), flagString(cmd, "out"), flagString(cmd, "format")
	dtype := strings.ToUpper(flagString(cmd, "dtype"))
	switch {
	case checkpoint == "":
		return usagef("--checkpoint is required: the adapter folder to export")
	case out == "":
		return usagef("--out is required")
	case !slices.Contains(exportFormats, format):
		return usagef("--format %q: want one of %s", format, strings.Join(exportFormats, ", "))
	case format == "merged-gguf" && slices.Contains(lora.MergedGGUFTypes, dtype):
	case slices.Contains(lora.MergedGGUFTypes, dtype):
		return usagef("--dtype %s: quantized types are for --format merged-gguf only; want F32, F16 or BF16", dtype)
	case dtype != "" && dtype != "F32" && dtype != "F16" && dtype != "BF16":
		return usagef("--dtype %q: want F32, F16 or BF16 (or Q8_0, Q4_K, Q6_K with --format merged-gguf)", dtype)
	case cmd.Flags().Changed("base-model-id") && format != "peft":
		return usagef("--base-model-id is for --format peft (adapter_config.json's base_model_name_or_path)")
	}
	overwrite := flagBool(cmd, "overwrite")
	asFile := (format == "gguf" || format == "merged-gguf") && strings.HasSuffix(strings.ToLower(out), ".gguf")
	if err := checkExportOut(out, asFile, overwrite); err != nil {
		return err
	}
	dir, err := lora.ResolveDir(checkpoint)
	if err != nil {
		return err
	}
	base := strings.TrimSpace(flagString(cmd, "model"))
	if base == "" {
		if base = lora.BaseModelOf(dir); base == "" {
			return usagef("%s does not say which base model it was trained on; pass --model", dir)
		}
	}
	src, err := model.ResolveSource(base, "")
	if err != nil {
		return fmt.Errorf("base model %s: %w (pass --model to point at it)", base, err)
	}
	basePath := src.Path
	if err := checkExportNotOver(out, checkpoint, dir, basePath); err != nil {
		return err
	}
	p, err := model.Load(basePath)
	if err != nil {
		return err
	}
	set, err := lora.LoadAny(dir, p.Config)
	if err != nil {
		return err
	}
	r := exportResult{Format: format, Adapter: dir, BaseModel: basePath, Out: out, Modules: len(set.Adapters),
		Rank: set.Spec.Rank, Depth: set.Spec.Depth, Scaling: set.Spec.Scaling()}
	if format == "merged-gguf" && p.Format != "gguf" {
		return usagef("--format merged-gguf needs a GGUF base model; %s is a %s folder (use --format merged)", basePath, p.Format)
	}
	// write makes the export's files in tmp (a folder, or the file's temporary path), which is renamed to out.
	var write func(tmp string) error
	switch format {
	case "peft":
		if r.BaseModelID, err = baseModelID(cmd, src); err != nil {
			return err
		}
		write = func(tmp string) error {
			return lora.WritePEFT(tmp, set, lora.PEFTOptions{BaseModel: r.BaseModelID, DType: dtype, NumLayers: p.Config.NumLayers})
		}
	case "merged":
		write = func(tmp string) error { return lora.WriteMergedHF(tmp, p, set, lora.MergeOptions{DType: dtype}) }
	case "gguf":
		write = func(tmp string) error {
			if !asFile {
				tmp = filepath.Join(tmp, "adapter.gguf")
			}
			return lora.WriteGGUFAdapter(tmp, set, p.Config, lora.GGUFAdapterOptions{DType: dtype, Name: filepath.Base(filepath.Clean(checkpoint))})
		}
	case "merged-gguf":
		write = func(tmp string) error {
			if !asFile {
				tmp = filepath.Join(tmp, "model.gguf")
			}
			return lora.WriteMergedGGUF(tmp, p, set, lora.MergeOptions{DType: dtype, Notes: cmd.ErrOrStderr()})
		}
	}
	fill := func(tmp string) error {
		if err := write(tmp); err != nil {
			return err
		}
		if exportFault != nil {
			return exportFault(tmp)
		}
		return nil
	}
	if parent := filepath.Dir(filepath.Clean(out)); parent != "" {
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return err
		}
	}
	if asFile {
		err = fileio.WriteNew(out, overwrite, fill)
		r.Files = []string{out}
	} else {
		err = fileio.WriteDir(out, overwrite, fill)
		r.Files = listFiles(out)
	}
	if errors.Is(err, fs.ErrExist) { // it appeared while the export was written
		return existsError(out)
	}
	if err != nil {
		return err
	}
	if flagBool(cmd, "json") {
		return printJSON(cmd.OutOrStdout(), r)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "exported %d adapted modules (rank %d, depth %d, scale %g) as %s:\n", r.Modules, r.Rank, r.Depth, r.Scaling, format)
	for _, f := range r.Files {
		fmt.Fprintln(cmd.OutOrStdout(), "  "+f)
	}
	return nil
}

// exportFault, when set (by tests), runs after an export's files are written to their temporary name and before
// they are renamed into place; an error from it stands for a failure or a kill at that point.
var exportFault func(tmp string) error

// checkExportOut refuses an --out that exists (a file, or a folder that is not empty) unless overwrite, and an
// --out that --overwrite could not replace by an output of the other kind.
func checkExportOut(out string, asFile, overwrite bool) error {
	st, err := os.Lstat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("--out %s: %w", out, err)
	}
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		return usagef("--out %s is a symbolic link; give the path it points to, or another path", out)
	case asFile && st.IsDir():
		return usagef("--out %s is a folder, but a .gguf --out names the file to write; choose a file path, or a folder name without .gguf", out)
	case asFile && !st.Mode().IsRegular():
		return usagef("--out %s exists and is not a regular file; choose another path", out)
	case !asFile && !st.IsDir():
		return usagef("--out %s is a file, but this export writes a folder; choose another path", out)
	case !asFile:
		entries, err := os.ReadDir(out)
		if err != nil {
			return fmt.Errorf("--out %s: %w", out, err)
		}
		if len(entries) == 0 {
			return nil // an empty folder is taken as it is
		}
	}
	if overwrite {
		return nil
	}
	return existsError(out)
}

func existsError(out string) error {
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return usagef("--out %s already exists and is not empty; choose another path, or pass --overwrite to replace the whole folder", out)
	}
	return usagef("--out %s already exists; choose another path, or pass --overwrite to replace it", out)
}

// checkExportNotOver refuses an --out at, inside or holding the adapter folder (as given and as resolved), the run
// folder a checkpoint belongs to, or the base model, with or without --overwrite: an export must never replace or
// mix with the files it is made from, nor with a run's own files (its config.json, adapter and checkpoints).
func checkExportNotOver(out, checkpoint, adapterDir, basePath string) error {
	what := func(dir string) string {
		if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
			return "the run folder"
		}
		if filepath.Base(filepath.Dir(filepath.Clean(dir))) == "checkpoints" {
			return "the checkpoint"
		}
		return "the adapter folder"
	}
	type place struct{ path, what string }
	places := []place{{checkpoint, what(checkpoint)}, {adapterDir, what(adapterDir)}}
	if parent := filepath.Dir(filepath.Clean(adapterDir)); filepath.Base(parent) == "checkpoints" {
		places = append(places, place{filepath.Dir(parent), "the run folder"})
	}
	places = append(places, place{basePath, "the base model"})
	o := realPath(out)
	relations := []struct {
		word string
		is   func(o, p string) bool
	}{
		{"is", func(o, p string) bool { return o == p }},
		{"is inside", within},
		{"holds", func(o, p string) bool { return within(p, o) }},
	}
	for _, rel := range relations {
		for _, pl := range places {
			if rel.is(o, realPath(pl.path)) {
				return usagef("--out %s %s %s %s; an export is never written there, even with --overwrite, since it would replace or mix with the files it is made from; choose a path outside it", out, rel.word, pl.what, pl.path)
			}
		}
	}
	return nil
}

// realPath is path made absolute with symbolic links resolved as far as it exists.
func realPath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return filepath.Clean(path)
	}
	rest := ""
	for p := abs; ; p = filepath.Dir(p) {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(r, rest)
		}
		if filepath.Dir(p) == p {
			return abs
		}
		rest = filepath.Join(filepath.Base(p), rest)
	}
}

// within reports whether path lies strictly inside dir.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

func listFiles(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}
