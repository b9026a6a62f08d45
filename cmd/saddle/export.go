package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

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
  merged-gguf  the GGUF base model with the adapter merged in (GGUF bases only)

For gguf and merged-gguf, --out may name the .gguf file; a folder gets adapter.gguf or model.gguf.`,
		Args: cobra.NoArgs,
		RunE: runExport,
	}
	addJSONFlag(cmd)
	f := cmd.Flags()
	f.String("checkpoint", "", "adapter folder: a run's --out folder, a checkpoint in it, or a PEFT adapter (required)")
	f.String("format", "peft", "peft, merged, gguf or merged-gguf")
	f.String("out", "", "output folder (or .gguf file for gguf and merged-gguf) (required)")
	f.String("model", "", "base model (default: the model the adapter was trained on, from its adapter.json or config.json)")
	f.String("dtype", "", "tensor type: F32, F16 or BF16 (default: F32 for adapters, the base's types for merged models)")
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
	case dtype != "" && dtype != "F32" && dtype != "F16" && dtype != "BF16":
		return usagef("--dtype %q: want F32, F16 or BF16", dtype)
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
	basePath, err := model.Resolve(base, "")
	if err != nil {
		return fmt.Errorf("base model %s: %w (pass --model to point at it)", base, err)
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
	switch format {
	case "peft":
		err = lora.WritePEFT(out, set, lora.PEFTOptions{BaseModel: base, DType: dtype, NumLayers: p.Config.NumLayers})
		r.Files = []string{filepath.Join(out, lora.PEFTConfigFile), filepath.Join(out, lora.PEFTWeightsFile)}
	case "merged":
		err = lora.WriteMergedHF(out, p, set, lora.MergeOptions{DType: dtype})
		r.Files = listFiles(out)
	case "gguf":
		file := ggufOut(out, "adapter.gguf")
		err = lora.WriteGGUFAdapter(file, set, p.Config, lora.GGUFAdapterOptions{DType: dtype, Name: filepath.Base(filepath.Clean(checkpoint))})
		r.Files = []string{file}
	case "merged-gguf":
		if p.Format != "gguf" {
			return usagef("--format merged-gguf needs a GGUF base model; %s is a %s folder (use --format merged)", basePath, p.Format)
		}
		file := ggufOut(out, "model.gguf")
		err = lora.WriteMergedGGUF(file, p, set, lora.MergeOptions{DType: dtype})
		r.Files = []string{file}
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

// ggufOut is out itself when it names a .gguf file, else name inside the folder out (created).
func ggufOut(out, name string) string {
	if strings.HasSuffix(strings.ToLower(out), ".gguf") {
		if d := filepath.Dir(out); d != "" {
			os.MkdirAll(d, 0o755)
		}
		return out
	}
	os.MkdirAll(out, 0o755)
	return filepath.Join(out, name)
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
