package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/tokenizer"
)

func newTokenizeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokenize",
		Short: "Print the token ids of a text as a JSON array",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("text") {
				return usagef("tokenize needs --text")
			}
			var tok *tokenizer.Tokenizer
			var err error
			if file := flagString(cmd, "tokenizer"); file != "" {
				if cmd.Flags().Changed("model") {
					return usagef("give --model or --tokenizer, not both")
				}
				tok, err = tokenizer.FromFile(file)
			} else {
				src, rerr := resolveModel(cmd)
				if rerr != nil {
					return rerr
				}
				path := src.Path
				if tok, err = loadTokenizer(path); err == nil {
					// the ids printed are for this model: they must fit its vocabulary (Load reads headers only;
					// weights it cannot read are for the commands that use them to report)
					if p, lerr := model.Load(path); lerr == nil {
						err = checkVocab(path, tok.VocabSize(), p.Config)
					}
				}
			}
			if err != nil {
				return err
			}
			ids := tok.Encode(flagString(cmd, "text"), flagBool(cmd, "add-special"))
			if ids == nil {
				ids = []int{}
			}
			if flagBool(cmd, "json") {
				tokens := make([]string, len(ids))
				for i, id := range ids {
					tokens[i] = tok.TokenString(id)
				}
				return printJSON(cmd.OutOrStdout(), map[string]any{"ids": ids, "tokens": tokens})
			}
			out, _ := json.Marshal(ids)
			fmt.Fprintln(cmd.OutOrStdout(), string(out))
			return nil
		},
	}
	addModelFlag(cmd)
	addJSONFlag(cmd)
	cmd.Flags().String("tokenizer", "", "a tokenizer.json file (instead of --model)")
	cmd.Flags().String("text", "", "text to tokenize")
	cmd.Flags().Bool("add-special", true, "add the tokenizer's special tokens (e.g. BOS) like Hugging Face's add_special_tokens")
	return cmd
}
