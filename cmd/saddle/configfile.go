package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// applyConfigFile sets every flag named in a YAML or JSON file (keys are flag names, e.g. "lr" or "batch-size")
// unless the same flag was given on the command line: flags override the file.
func applyConfigFile(cmd *cobra.Command, path string) error {
	data, err := fileio.ReadFile(path)
	if err != nil {
		return err
	}
	values := map[string]any{}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		err = json.Unmarshal(data, &values)
	default:
		err = yaml.Unmarshal(data, &values)
	}
	if err != nil {
		return usagef("config file %s: %v", path, err)
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		name := strings.ReplaceAll(key, "_", "-")
		f := cmd.Flags().Lookup(name)
		if f == nil || name == "config" {
			return usagef("config file %s: unknown setting %q", path, key)
		}
		if f.Changed {
			continue
		}
		if err := setFlag(cmd.Flags(), f, values[key]); err != nil {
			return usagef("config file %s: setting %q: %v", path, key, err)
		}
	}
	return nil
}

func setFlag(fs *pflag.FlagSet, f *pflag.Flag, v any) error {
	var s string
	switch x := v.(type) {
	case []any:
		parts := make([]string, len(x))
		for i, p := range x {
			parts[i] = fmt.Sprint(p)
		}
		s = strings.Join(parts, ",")
	case nil:
		return fmt.Errorf("empty value")
	case float64:
		s = fmt.Sprint(x) // keeps 1e-4 short and exact
	default:
		s = fmt.Sprint(x)
	}
	if err := fs.Set(f.Name, s); err != nil {
		return err
	}
	return nil
}
