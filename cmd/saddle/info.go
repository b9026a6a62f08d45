package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/saddle-ml/saddle/model"
)

type infoResult struct {
	Model        string         `json:"model"`              // --model as given
	HubID        string         `json:"hub_id,omitempty"`   // its Hugging Face repository, when known
	Embedded     bool           `json:"embedded,omitempty"` // the model built into saddle
	Path         string         `json:"path"`
	Format       string         `json:"format"`
	DType        string         `json:"dtype"`
	Types        map[string]int `json:"tensor_types"` // tensors per storage type (F32, Q4_K, ...)
	Parameters   int            `json:"parameters"`
	Context      int            `json:"context"`
	Vocab        int            `json:"vocab"`
	Architecture string         `json:"architecture"`
	Config       model.Config   `json:"config"`
}

func newInfoCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Print a model's architecture, parameter count, dtype, context and vocabulary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			src, err := resolveModel(cmd)
			if err != nil {
				return err
			}
			path := src.Path
			p, err := model.Load(path)
			if err != nil {
				return err
			}
			c := p.Config
			if err := c.Validate(); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			// info describes the model; a tokenizer that cannot be read is for tokenize and generate to report,
			// but one whose ids the model cannot embed makes the pair unusable, so it is an error here too.
			if tok, err := loadTokenizer(path); err == nil {
				if err := checkVocab(path, tok.VocabSize(), c); err != nil {
					return err
				}
			}
			types := map[string]int{}
			for _, dt := range p.DTypes {
				types[dt]++
			}
			r := infoResult{Path: path, Format: p.Format, DType: p.DType, Types: types, Parameters: c.NumParameters(),
				Context: c.MaxPositions, Vocab: c.VocabSize, Architecture: c.Architecture, Config: c,
				Model: src.Name, HubID: src.HubID, Embedded: src.Embedded}
			if flagBool(cmd, "json") {
				return printJSON(cmd.OutOrStdout(), r)
			}
			out := cmd.OutOrStdout()
			switch {
			case r.Embedded:
				fmt.Fprintf(out, "model:         %s (built into saddle; from Hugging Face %s)\n", r.Model, r.HubID)
			case r.HubID != "":
				fmt.Fprintf(out, "model:         %s (Hugging Face cache)\n", r.Model)
			}
			fmt.Fprintf(out, "path:          %s (%s)\n", r.Path, r.Format)
			fmt.Fprintf(out, "architecture:  %s\n", r.Architecture)
			fmt.Fprintf(out, "parameters:    %d\n", r.Parameters)
			fmt.Fprintf(out, "dtype:         %s\n", r.DType)
			var parts []string
			for _, dt := range slices.Sorted(maps.Keys(types)) {
				parts = append(parts, fmt.Sprintf("%s %d", dt, types[dt]))
			}
			fmt.Fprintf(out, "tensor types:  %s\n", strings.Join(parts, ", "))
			fmt.Fprintf(out, "context:       %d\n", r.Context)
			fmt.Fprintf(out, "vocab:         %d\n", r.Vocab)
			fmt.Fprintf(out, "layers:        %d (hidden %d, ffn %d)\n", c.NumLayers, c.HiddenSize, c.IntermediateSize)
			fmt.Fprintf(out, "heads:         %d query, %d key/value, head dim %d\n", c.NumHeads, c.NumKVHeads, c.HeadDim)
			fmt.Fprintf(out, "tied output:   %v\n", c.TieEmbeddings)
			return nil
		},
	}
	addModelFlag(cmd)
	addJSONFlag(cmd)
	return cmd
}
