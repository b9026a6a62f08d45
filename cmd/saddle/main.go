// Command saddle fine-tunes pretrained LLMs through product adapters and shows how each optimizer escapes the
// zero saddle. This package only wires flags to the library packages.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/saddle-ml/saddle/finetune"
	"github.com/saddle-ml/saddle/internal/setting"
)

// Exit codes: 0 success, 1 runtime error, 2 usage error, 130/143 a run stopped by SIGINT/SIGTERM (exitCodeError).
const (
	exitError = 1
	exitUsage = 2
)

// usageError marks errors in how saddle was called (flags, arguments), which exit with code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// flagName is the flag of a run setting: its config key with dashes (batch_size → batch-size).
func flagName(setting string) string { return strings.ReplaceAll(setting, "_", "-") }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "saddle",
		Short: "Fine-tune pretrained LLMs with product adapters and watch optimizers escape the zero saddle",
		Long: `saddle loads a pretrained Llama-family model (GGUF file or Hugging Face folder), tokenizes exactly like
Hugging Face tokenizers, generates text, and fine-tunes through LoRA-style product adapters.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().String("backend", "", "compute backend: go (default), xla:cuda, xla:tpu, xla:cpu or xla:/path/to/plugin.so (env GOMLX_BACKEND)")
	root.PersistentFlags().String("pjrt-plugin", "", "path to a PJRT plugin .so for the xla backend (same as --backend xla:PATH)")
	root.AddCommand(newGenerateCmd(), newTokenizeCmd(), newInfoCmd(), newTrainCmd(), newEscapeCmd(), newTheoryCmd(), newExportCmd())
	root.AddCommand(newChatTemplateCmd())
	return root
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	msg := err.Error()
	var se *setting.Error
	isSetting := errors.As(err, &se)
	if isSetting { // the library names the setting; the user gave it as a flag (or a config file key)
		msg = strings.Replace(msg, se.Error(), "--"+flagName(se.Name)+" "+se.Msg, 1)
	}
	var me *finetune.MemoryError
	if errors.As(err, &me) { // the settings that would fit, as flags
		msg = strings.Replace(msg, me.Error(), me.Message(func(s string) string { return "--" + flagName(s) }), 1)
	}
	fmt.Fprintln(stderr, "saddle:", msg)
	var ec exitCodeError
	if errors.As(err, &ec) {
		return ec.code
	}
	var u usageError
	if errors.As(err, &u) || isSetting || isCobraUsage(err) {
		fmt.Fprintln(stderr, "Run 'saddle --help' for usage.")
		return exitUsage
	}
	return exitError
}

// isCobraUsage recognizes cobra's own argument errors (unknown command, wrong arg count), which are not typed.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, prefix := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "required flag", "invalid argument"} {
		if len(msg) >= len(prefix) && msg[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}
