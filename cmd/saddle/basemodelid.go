package main

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/saddle-ml/saddle/model"
)

// baseModelID is what an exported PEFT adapter names as its base (base_model_name_or_path, from which Python
// tools load the base): --base-model-id; else the Hugging Face id saddle knows for the base (it was resolved by
// that name, it is the built-in model, or its GGUF metadata records its source); else the base as given (a local
// path), with a note on stderr suggesting --base-model-id.
func baseModelID(cmd *cobra.Command, src model.Source) (string, error) {
	if cmd.Flags().Changed("base-model-id") {
		id := strings.TrimSpace(flagString(cmd, "base-model-id"))
		if id == "" || strings.ContainsFunc(id, unicode.IsControl) {
			return "", usagef("--base-model-id %q: give the base's Hugging Face id (owner/name) or a path", id)
		}
		return id, nil
	}
	if src.HubID != "" {
		return src.HubID, nil
	}
	if id := model.GGUFHubID(src.Path); id != "" {
		return id, nil
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "note: base_model_name_or_path is the local path %s; pass --base-model-id owner/name so that Python tools can find the base\n", src.Name)
	return src.Name, nil
}
