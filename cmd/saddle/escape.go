package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/saddle-ml/saddle/finetune"
	"github.com/saddle-ml/saddle/optimizers"
)

func newEscapeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "escape",
		Short: "Compare how optimizers escape the saddle: a sweep over optimizers, learning rates, init scales and depths",
		Long: `escape trains one adapter per combination of --optimizers × --lrs × --init-scales × --depths × --inits,
all from the same base model, adapter seed and batch order, and writes runs.csv, runs.json, each run's
metrics.jsonl, plots (PNG and SVG) and report.html (all of it in one page) into --out. Rerunning with the same --out skips finished runs.`,
		Args: cobra.NoArgs,
		RunE: runEscape,
	}
	addTrainFlags(cmd)
	f := cmd.Flags()
	f.String("optimizers", "sgd,adam,sign", "optimizers to compare; steepest:Q for steepest descent with exponent Q")
	f.String("lrs", "1e-4,1e-3", "learning rates; OPTIMIZER=LR entries give one optimizer its own (e.g. sgd=0.05,sign=1e-3)")
	f.String("seeds", "", "repeat each combination with these seeds (adapter init and batch order), e.g. 1,2,3; fits use the median per λ")
	f.String("init-scales", "0.01,0.1", "init scales λ")
	f.String("depths", "2", "adapter depths L")
	f.String("inits", "saddle", "adapter inits")
	f.Int("parallel", 1, "runs at a time (each run already uses every core on the go backend)")
	return cmd
}

func parseFloats(cmd *cobra.Command, name string) ([]float64, error) {
	var out []float64
	for _, s := range splitList(flagString(cmd, name)) {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return nil, usagef("--%s: %q is not a number", name, s)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, usagef("--%s: %q is not a finite number", name, s)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, usagef("--%s is empty", name)
	}
	return out, nil
}

// parseLRs reads --lrs: plain entries apply to every optimizer, OPTIMIZER=LR entries to that one only (which then
// ignores the plain ones). Every optimizer needs at least one.
func parseLRs(cmd *cobra.Command, opts []optimizers.Spec) ([]float64, map[string][]float64, error) {
	var plain []string
	keyed := map[string][]string{}
	for _, e := range splitList(flagString(cmd, "lrs")) {
		name, v, ok := strings.Cut(e, "=")
		if !ok {
			plain = append(plain, e)
			continue
		}
		specs, err := optimizers.ParseSpecs(name)
		if err != nil || len(specs) != 1 {
			return nil, nil, usagef("--lrs: %q does not name an optimizer", name)
		}
		label := specs[0].Label()
		if !slices.ContainsFunc(opts, func(o optimizers.Spec) bool { return o.Label() == label }) {
			return nil, nil, usagef("--lrs: %s=%s names an optimizer that --optimizers does not list", name, v)
		}
		keyed[label] = append(keyed[label], v)
	}
	floats := func(list []string) ([]float64, error) {
		var out []float64
		for _, s := range list {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				return nil, usagef("--lrs: %q is not a number", s)
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, usagef("--lrs: %q is not a finite number", s)
			}
			out = append(out, f)
		}
		return out, nil
	}
	lrs, err := floats(plain)
	if err != nil {
		return nil, nil, err
	}
	var per map[string][]float64
	for label, list := range keyed {
		if per == nil {
			per = map[string][]float64{}
		}
		if per[label], err = floats(list); err != nil {
			return nil, nil, err
		}
	}
	for _, o := range opts {
		if _, ok := per[o.Label()]; !ok && len(lrs) == 0 {
			return nil, nil, usagef("--lrs gives no learning rate for %s: add a plain entry or %s=LR", o.Label(), o.Label())
		}
	}
	return lrs, per, nil
}

// parseSeeds reads --seeds (empty: the one --seed, runs named without it).
func parseSeeds(cmd *cobra.Command) ([]uint64, error) {
	list := splitList(flagString(cmd, "seeds"))
	if len(list) == 0 {
		return nil, nil
	}
	out := make([]uint64, len(list))
	for i, s := range list {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, usagef("--seeds: %q is not a non-negative whole number", s)
		}
		out[i] = v
	}
	return out, nil
}

func runEscape(cmd *cobra.Command, _ []string) error {
	command := commandLine(cmd) // before a config file sets flags
	if err := applyConfig(cmd); err != nil {
		return err
	}
	if flagString(cmd, "out") == "" {
		return usagef("escape needs --out DIR")
	}
	// A sweep writes only into an empty folder or its own earlier sweep's.
	if err := finetune.CheckSweepOut(flagString(cmd, "out")); err != nil {
		return usageError{fmt.Errorf("--out: %w; choose an empty or new folder", err)}
	}
	// The sweep's folder is locked for the life of the command (and each run's folder while it trains).
	lock, err := lockOut(cmd, flagString(cmd, "out"), "--out")
	if err != nil {
		return err
	}
	defer lock.Unlock()
	s, err := loadSession(cmd)
	if err != nil {
		return err
	}
	base, err := trainConfig(cmd, s.source)
	if err != nil {
		return err
	}
	base.Backend = s.name
	if base.DType, err = s.computeType(cmd, ""); err != nil {
		return err
	}
	grid := finetune.Grid{Base: base, Inits: splitList(flagString(cmd, "inits"))}
	if grid.Optimizers, err = optimizers.ParseSpecs(flagString(cmd, "optimizers")); err != nil {
		return usageError{err}
	}
	if grid.LRs, grid.OptimizerLRs, err = parseLRs(cmd, grid.Optimizers); err != nil {
		return err
	}
	if grid.Seeds, err = parseSeeds(cmd); err != nil {
		return err
	}
	if grid.InitScales, err = parseFloats(cmd, "init-scales"); err != nil {
		return err
	}
	depths, err := parseFloats(cmd, "depths")
	if err != nil {
		return err
	}
	for _, d := range depths {
		if d != math.Trunc(d) {
			return usagef("--depths: %g is not a whole number of factors", d)
		}
		grid.Depths = append(grid.Depths, int(d))
	}
	if len(grid.Inits) == 0 {
		return usagef("--inits is empty")
	}
	if err := checkTokenizer(s); err != nil {
		return err
	}
	plans, err := grid.Plans(base.Out, s.config)
	if err != nil {
		return usageError{err}
	}
	parallel, _ := cmd.Flags().GetInt("parallel")
	if parallel < 1 {
		return usagef("--parallel %d must be >= 1", parallel)
	}
	asJSON := flagBool(cmd, "json")
	// One run's estimate: runs in parallel share the weights but each needs its own activations.
	if _, err := checkMemory(cmd, largestPlan(plans, s), s, asJSON); err != nil {
		return err
	}
	if err := s.build(base.DType); err != nil {
		return err
	}
	data, err := finetune.PrepareData(plans[0], s.tok, readExamples)
	if err != nil {
		return err
	}
	job := finetune.Job{Model: s.model, Train: data.Train, Eval: data.Eval}
	if err := finetune.CheckSweep(job, plans); err != nil {
		return err
	}
	if err := finetune.RecordSweepCommand(base.Out, command); err != nil {
		return err
	}
	intr := watchInterrupts(cmd)
	defer intr.stop()
	logw := cmd.ErrOrStderr()
	res, err := finetune.Sweep(intr.ctx, job, plans, base.Out,
		parallel, func(msg string) { fmt.Fprintln(logw, msg) })
	if res != nil && !asJSON {
		printSweep(cmd.OutOrStdout(), res)
	}
	if err != nil && intr.ctx.Err() != nil { // stopped by a signal: not finished, not 0
		return intr.interrupted(err, "the same saddle escape command with --out "+shellQuote(base.Out)+
			" (finished runs are kept; unfinished ones start over)")
	}
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), res)
	}
	return nil
}

// commandLine is the command as given: its path and the flags set on the command line, by name, quoted for a shell.
func commandLine(cmd *cobra.Command) string {
	parts := []string{cmd.CommandPath()}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Value.Type() == "bool" && f.Value.String() == "true" {
			parts = append(parts, "--"+f.Name)
			return
		}
		parts = append(parts, "--"+f.Name+"="+shellQuote(f.Value.String()))
	})
	return strings.Join(parts, " ")
}

// largestPlan is the plan of the sweep with the largest memory estimate (depth and optimizer vary the adapters').
func largestPlan(plans []*finetune.Plan, s *session) *finetune.Plan {
	best, most := plans[0], int64(-1)
	for _, p := range plans {
		if e, err := finetune.EstimateTraining(p, s.config, s.storage); err == nil && e.Total > most {
			best, most = p, e.Total
		}
	}
	return best
}

func printSweep(w io.Writer, res *finetune.SweepResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "optimizer\tlr\tλ\tdepth\tinit\tseed\tescape step (at)\tescape norm step (at)\teval loss start → end\twall s\tcompile/train/eval s")
	for _, r := range res.Runs {
		split := "-"
		if t := r.Times; t != nil {
			split = fmt.Sprintf("%.1f/%.1f/%.1f", t.Compile, t.Train, t.Eval)
		}
		fmt.Fprintf(tw, "%s\t%g\t%g\t%d\t%s\t%d\t%s\t%s\t%s → %s\t%.1f\t%s\n", r.Optimizer, r.LR, r.InitScale, r.Depth, r.Init, r.Seed,
			atText(r.EscapeStep, r.EscapeAt), atText(r.EscapeNormStep, r.EscapeNormAt), lossText(r.InitialEvalLoss), lossText(r.FinalEvalLoss), r.WallSeconds, split)
	}
	tw.Flush()
	printFits(w, res.Fits)
	fmt.Fprintf(w, "written to %s (report.html, runs.csv, runs.json, fits.csv, fits.json, loss/delta_w/escape_vs_lambda .png/.svg)\n", res.Out)
}

// atText is an escape step with its interpolated crossing: "12 (11.4)", or "never".
func atText(step *int, at *float64) string {
	if step == nil || at == nil {
		return stepText(step)
	}
	return fmt.Sprintf("%d (%.1f)", *step, *at)
}

// printFits prints each fit of escape steps against λ beside the theory's prediction.
func printFits(w io.Writer, fits []finetune.EscapeFit) {
	if len(fits) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fit\tcriterion\tkind\tλ fitted (lower bounds)\tslope [95% CI]\ttheory\tagrees")
	for _, f := range fits {
		ci := "[n/a]"
		if f.CILow != nil {
			ci = fmt.Sprintf("[%.2f, %.2f]", *f.CILow, *f.CIHigh)
		}
		what := "steps ∝ λ^slope"
		if f.Kind == "log" {
			what = "steps = a + slope·ln(1/λ)"
		}
		agrees := "-"
		if f.Agrees != nil {
			agrees = map[bool]string{true: "yes", false: "no"}[*f.Agrees]
		}
		fmt.Fprintf(tw, "%s lr=%g L=%d %s\t%s\t%s\t%d (%d)\t%.2f %s\t%s\t%s\n", f.Optimizer, f.LR, f.Depth, f.Init, f.Criterion,
			what, f.Points, f.LowerBounds, f.Slope, ci, f.Prediction, agrees)
	}
	tw.Flush()
}
