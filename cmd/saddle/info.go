package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/saddle-ml/saddle/model"
)

type infoResult struct {
	Path         string       `json:"path"`
	Format       string       `json:"format"`
	DType        string       `json:"dtype"`
	Parameters   int          `json:"parameters"`
	Context      int          `json:"context"`
	Vocab        int          `json:"vocab"`
	Architecture string       `json:"architecture"`
	Config       model.Config `json:"config"`
}

func newInfoCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Print a model's architecture, parameter count, dtype, context and vocabulary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := resolveModel(cmd)
			if err != nil {
				return err
			}
			p, err := model.Load(path)
			if err != nil {
				return err
			}
			c := p.Config
			if err := c.Validate(); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			r := infoResult{Path: path, Format: p.Format, DType: p.DType, Parameters: c.NumParameters(),
				Context: c.MaxPositions, Vocab: c.VocabSize, Architecture: c.Architecture, Config: c}
			if flagBool(cmd, "json") {
				return printJSON(r)
			}
			fmt.Printf("path:          %s (%s)\n", r.Path, r.Format)
			fmt.Printf("architecture:  %s\n", r.Architecture)
			fmt.Printf("parameters:    %d\n", r.Parameters)
			fmt.Printf("dtype:         %s\n", r.DType)
			fmt.Printf("context:       %d\n", r.Context)
			fmt.Printf("vocab:         %d\n", r.Vocab)
			fmt.Printf("layers:        %d (hidden %d, ffn %d)\n", c.NumLayers, c.HiddenSize, c.IntermediateSize)
			fmt.Printf("heads:         %d query, %d key/value, head dim %d\n", c.NumHeads, c.NumKVHeads, c.HeadDim)
			fmt.Printf("tied output:   %v\n", c.TieEmbeddings)
			return nil
		},
	}
	addModelFlag(cmd)
	addJSONFlag(cmd)
	return cmd
}
