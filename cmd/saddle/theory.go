package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/saddle-ml/saddle/theory"
)

func newTheoryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "theory",
		Short: "Check the paper's escape exponents, balance law and weight-decay geometry on the diagonal model",
		Long: `theory trains x = w₁ ⊙ … ⊙ w_L on a sparse regression from the escape init (w₁ = 0, wᵢ = λ) with the same
optimizers as fine-tuning, measures escape steps against λ for GD, sign and steepest descent at several depths, fits
the exponents next to the predictions, checks the balance law with and without decoupled weight decay, and compares
coupled with decoupled weight decay. It writes theory.json, theory.md and plots into --out.`,
		Args: cobra.NoArgs,
		RunE: runTheory,
	}
	addJSONFlag(cmd)
	f := cmd.Flags()
	f.String("out", "", "output folder (theory.json, theory.md, plots)")
	f.Bool("quick", false, "the reduced grid the tests use (under a minute) instead of the full run (a few minutes)")
	f.Uint64("seed", 1, "seed of the regression problem")
	f.Int("k", 0, "dimension of x (0: the preset's, 300)")
	f.Int("n", 0, "number of observations (0: the preset's, 100)")
	f.Int("nonzeros", 0, "non-zeros of x* (0: the preset's, 5)")
	return cmd
}

func runTheory(cmd *cobra.Command, _ []string) error {
	out := flagString(cmd, "out")
	if out == "" {
		return usagef("theory needs --out DIR")
	}
	opts := theory.DefaultOptions()
	if flagBool(cmd, "quick") {
		opts = theory.Reduced()
	}
	f := cmd.Flags()
	opts.Seed, _ = f.GetUint64("seed")
	for name, field := range map[string]*int{"k": &opts.K, "n": &opts.N, "nonzeros": &opts.NonZeros} {
		if v, _ := f.GetInt(name); v != 0 {
			if v < 0 {
				return usagef("--%s %d must be positive", name, v)
			}
			*field = v
		}
	}
	opts.Backend = flagString(cmd, "backend")
	opts.Plots = true
	if err := opts.Validate(); err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report, err := theory.Run(ctx, opts, out, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	if flagBool(cmd, "json") {
		data, err := os.ReadFile(filepath.Join(out, "theory.json"))
		if err != nil {
			return err
		}
		_, err = cmd.OutOrStdout().Write(data)
		return err
	}
	fmt.Fprint(cmd.OutOrStdout(), report.Markdown())
	return nil
}
