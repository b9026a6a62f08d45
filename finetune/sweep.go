package finetune

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/internal/setting"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/optimizers"
)

// Grid is the swept factors; every other setting comes from Base.
type Grid struct {
	Base       Config
	Optimizers []optimizers.Spec
	LRs        []float64
	InitScales []float64
	Depths     []int
	Inits      []string
	// Seeds, when given, repeat every combination once per seed (adapter init and batch order; the eval set stays
	// the same) and name runs with it; nil runs Base.Seed alone.
	Seeds []uint64
	// OptimizerLRs gives an optimizer (by its label) its own learning rates instead of LRs: sign descent and plain
	// gradient descent escape at learning rates orders of magnitude apart.
	OptimizerLRs map[string][]float64
}

// lrsOf is the learning rates swept for opt.
func (g Grid) lrsOf(opt optimizers.Spec) []float64 {
	if lrs, ok := g.OptimizerLRs[opt.Label()]; ok {
		return lrs
	}
	return g.LRs
}

// seeds is the seeds swept (Base.Seed alone without Seeds).
func (g Grid) seeds() []uint64 {
	if g.Seeds == nil {
		return []uint64{g.Base.Seed}
	}
	return g.Seeds
}

// SweepRun is one row of runs.csv / runs.json.
type SweepRun struct {
	Name            string   `json:"name"`
	Optimizer       string   `json:"optimizer"`
	Q               float64  `json:"q"`
	LR              float64  `json:"lr"`
	InitScale       float64  `json:"init_scale"`
	Depth           int      `json:"depth"`
	Init            string   `json:"init"`
	Seed            uint64   `json:"seed"`
	Steps           int      `json:"steps"`  // steps run
	Budget          int      `json:"budget"` // steps allowed; a criterion that never fired is a lower bound at Steps
	EscapeStep      *int     `json:"escape_step"`
	EscapeNormStep  *int     `json:"escape_norm_step"`
	EscapeAt        *float64 `json:"escape_at"`      // interpolated crossings
	EscapeNormAt    *float64 `json:"escape_norm_at"` //
	EscapeCriterion string   `json:"escape_criterion"`
	NormCriterion   string   `json:"escape_norm_criterion"`
	InitialEvalLoss *float64 `json:"initial_eval_loss"`
	FinalEvalLoss   *float64 `json:"final_eval_loss"`
	FinalTrainLoss  float64  `json:"final_train_loss"`
	WallSeconds     float64  `json:"wall_seconds"`
	Times           *Times   `json:"times,omitempty"`   // of the invocation that finished it
	Skipped         bool     `json:"skipped,omitempty"` // finished in an earlier invocation
}

// SlopeFit is a log–log fit of escape step against λ for one (optimizer, lr, depth, init) series.
type SlopeFit struct {
	Optimizer string  `json:"optimizer"`
	LR        float64 `json:"lr"`
	Depth     int     `json:"depth"`
	Init      string  `json:"init"`
	Points    int     `json:"points"`
	Slope     float64 `json:"slope"`
	Predicted *string `json:"predicted,omitempty"` // the theory's regime for the optimizer's q at this depth
}

// SweepResult is what a sweep reports.
type SweepResult struct {
	Runs   []SweepRun  `json:"runs"`
	Slopes []SlopeFit  `json:"slopes"` // the power fits of the loss escape (fits.json has every fit)
	Fits   []EscapeFit `json:"-"`      // written to fits.csv and fits.json
	Out    string      `json:"out"`
}

// check refuses empty and repeated entries (two equal runs would write into one folder) and λ that the escape fit
// cannot use (it fits log escape step against log λ, so every λ must be positive and finite). The errors name the
// grid's settings: optimizers, lrs, init_scales, depths, inits.
func (g Grid) check() error {
	lists := []struct {
		name string
		keys []string
	}{
		{"optimizers", mapped(g.Optimizers, func(o optimizers.Spec) string { return o.Label() })},
		{"lrs", mapped(g.LRs, func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) })},
		{"seeds", mapped(g.seeds(), func(v uint64) string { return strconv.FormatUint(v, 10) })},
		{"init_scales", mapped(g.InitScales, func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) })},
		{"depths", mapped(g.Depths, strconv.Itoa)},
		{"inits", g.Inits},
	}
	for _, o := range g.Optimizers {
		if lrs, ok := g.OptimizerLRs[o.Label()]; ok {
			lists = append(lists, struct {
				name string
				keys []string
			}{"lrs", mapped(lrs, func(v float64) string { return o.Label() + "=" + strconv.FormatFloat(v, 'g', -1, 64) })})
		}
	}
	for _, l := range lists {
		if len(l.keys) == 0 && l.name == "lrs" && len(g.OptimizerLRs) > 0 {
			continue // every optimizer has its own
		}
		if len(l.keys) == 0 {
			return setting.Errorf(l.name, "is empty: give at least one value")
		}
		seen := map[string]bool{}
		for _, k := range l.keys {
			if seen[k] {
				return setting.Errorf(l.name, "lists %s twice: each combination would run twice into one folder; list each value once", k)
			}
			seen[k] = true
		}
	}
	for _, v := range g.InitScales {
		if !(v > 0) || math.IsInf(v, 0) {
			return setting.Errorf("init_scales", "%g: each λ must be positive and finite (the sweep fits escape steps against log λ)", v)
		}
	}
	return nil
}

func mapped[T any](xs []T, f func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// configs expands the grid into named run configurations, each writing into out/runs/<name>.
func (g Grid) configs(out string) []Config {
	var cfgs []Config
	// Seeds outermost: a sweep stopped early has whole grids for its first seeds.
	for _, seed := range g.seeds() {
		for _, opt := range g.Optimizers {
			for _, lr := range g.lrsOf(opt) {
				for _, scale := range g.InitScales {
					for _, depth := range g.Depths {
						for _, init := range g.Inits {
							c := g.Base
							c.Optimizer, c.LR = opt.Name, lr
							c.Opt = opt.Apply(g.Base.Opt)
							c.Adapter.Init, c.Adapter.Scale, c.Adapter.Depth = init, scale, depth
							c.Seed, c.Adapter.Seed = seed, seed
							name := fmt.Sprintf("%s_lr%g_lambda%g_L%d_%s", strings.ReplaceAll(opt.Label(), ":", "-q"), lr, scale, depth, init)
							if g.Seeds != nil {
								name += fmt.Sprintf("_seed%d", seed)
							}
							c.Out = filepath.Join(out, "runs", name)
							cfgs = append(cfgs, c)
						}
					}
				}
			}
		}
	}
	return cfgs
}

// Plans checks every configuration of the grid against the model m, before anything runs.
func (g Grid) Plans(out string, m model.Config) ([]*Plan, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	cfgs := g.configs(out)
	plans := make([]*Plan, len(cfgs))
	for i, c := range cfgs {
		p, err := NewPlan(c, m)
		if err != nil {
			return nil, fmt.Errorf("run %s: %w", filepath.Base(c.Out), err)
		}
		plans[i] = p
	}
	return plans, nil
}

// CheckSweep refuses what Sweep would refuse before it writes anything (settings that depend on the data), so a
// caller can check before it writes into the sweep's folder itself.
func CheckSweep(job Job, plans []*Plan) error {
	for _, p := range plans {
		if err := checkProbe(p.Config, job.Eval); err != nil {
			return err
		}
	}
	return nil
}

// Sweep runs every plan (skipping those whose summary.json exists) with job's model and data, parallel at most
// `parallel` at a time, and writes runs.csv, runs.json and plots into out. Interrupting keeps finished runs.
func Sweep(ctx context.Context, job Job, plans []*Plan, out string, parallel int, log func(string)) (*SweepResult, error) {
	if err := CheckSweep(job, plans); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	runs := make([]SweepRun, len(plans))
	var firstErr error
	var mu sync.Mutex
	sem := make(chan struct{}, max(1, parallel))
	var wg sync.WaitGroup
	for i, p := range plans {
		c := p.Config
		name := filepath.Base(c.Out)
		if s, err := readSummary(c.Out); err == nil {
			runs[i] = rowOf(name, c, s)
			runs[i].Skipped = true
			log(fmt.Sprintf("[%d/%d] %s: already done, kept", i+1, len(plans), name))
			continue
		}
		sem <- struct{}{}
		if ctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func(i int, p *Plan) {
			defer wg.Done()
			defer func() { <-sem }()
			j := job
			j.Plan = p
			if b, ok := job.Train.(*Batcher); ok && b.opts.Seed != p.Config.Seed {
				j.Train = b.WithSeed(p.Config.Seed)
			}
			log(fmt.Sprintf("[%d/%d] %s", i+1, len(plans), name))
			s, err := runOwned(ctx, j)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("run %s: %w", name, err)
				}
				return
			}
			runs[i] = rowOf(name, p.Config, s)
		}(i, p)
	}
	wg.Wait()
	done := runs[:0:0]
	for _, r := range runs {
		if r.Name != "" {
			done = append(done, r)
		}
	}
	res := &SweepResult{Runs: done, Out: out}
	res.Fits = FitEscapes(done)
	res.Slopes = slopesOf(res.Fits)
	if err := writeSweep(out, res); err != nil {
		return res, err
	}
	if firstErr == nil && ctx.Err() != nil {
		firstErr = fmt.Errorf("sweep interrupted after %d of %d runs (rerun with the same --out to continue): %w", len(done), len(plans), ctx.Err())
	}
	return res, firstErr
}

// runOwned runs one of a sweep's runs in its folder, locked while it trains; an unfinished run there (from an
// interrupted sweep) is cleared first, so that the new one does not mix with it.
func runOwned(ctx context.Context, job Job) (*Summary, error) {
	dir := job.Plan.Config.Out
	lock, err := fileio.LockDir(dir, "saddle escape run "+dir)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if err := ClearRun(dir); err != nil {
		return nil, err
	}
	return Run(ctx, job, nil)
}

func readSummary(dir string) (*Summary, error) {
	data, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		return nil, err
	}
	var s Summary
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func rowOf(name string, c Config, s *Summary) SweepRun {
	return SweepRun{Name: name, Optimizer: optimizers.Spec{Name: s.Optimizer, Q: s.Q}.Label(), Q: s.Q, LR: c.LR, InitScale: c.Adapter.Scale,
		Depth: c.Adapter.Depth, Init: c.Adapter.Init, Seed: c.Seed, Steps: s.Steps, Budget: s.Budget,
		EscapeStep: s.EscapeStep, EscapeNormStep: s.EscapeNormStep, EscapeAt: s.EscapeAt, EscapeNormAt: s.EscapeNormAt,
		EscapeCriterion: s.EscapeCriterion, NormCriterion: s.EscapeNormCriterion,
		InitialEvalLoss: s.InitialEvalLoss, FinalEvalLoss: s.FinalEvalLoss, FinalTrainLoss: s.FinalTrainLoss,
		WallSeconds: s.WallSeconds, Times: s.Times}
}

func writeSweep(out string, res *SweepResult) error {
	if err := writeJSONAtomic(filepath.Join(out, "runs.json"), res); err != nil {
		return err
	}
	var b strings.Builder
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"name", "optimizer", "q", "lr", "init_scale", "depth", "init", "seed", "steps", "budget",
		"escape_step", "escape_norm_step", "escape_at", "escape_norm_at", "escape_lower_bound", "escape_norm_lower_bound",
		"initial_eval_loss", "final_eval_loss", "final_train_loss", "wall_seconds", "escape_criterion", "escape_norm_criterion"})
	for _, r := range res.Runs {
		_ = w.Write([]string{r.Name, r.Optimizer, fmtF(r.Q), fmtF(r.LR), fmtF(r.InitScale), strconv.Itoa(r.Depth), r.Init,
			strconv.FormatUint(r.Seed, 10), strconv.Itoa(r.Steps), strconv.Itoa(r.Budget),
			fmtStep(r.EscapeStep), fmtStep(r.EscapeNormStep), fmtLoss(r.EscapeAt), fmtLoss(r.EscapeNormAt),
			lowerBound(r, CriterionLoss), lowerBound(r, CriterionNorm),
			fmtLoss(r.InitialEvalLoss), fmtLoss(r.FinalEvalLoss), fmtF(r.FinalTrainLoss), fmtF(r.WallSeconds),
			r.EscapeCriterion, r.NormCriterion})
	}
	w.Flush()
	if err := fileio.WriteFile(filepath.Join(out, "runs.csv"), []byte(b.String())); err != nil {
		return err
	}
	if err := writeFits(out, res.Fits); err != nil {
		return err
	}
	if err := sweepPlots(out, res); err != nil {
		return err
	}
	// Last: the report reads every other file of the folder.
	return writeReport(out, res)
}

// lowerBound says whether a run's escape under criterion is only a lower bound (it never fired within the steps
// it ran), "" when the criterion is off.
func lowerBound(r SweepRun, criterion string) string {
	_, lb, ok := r.escapeOf(criterion)
	if !ok {
		return ""
	}
	return strconv.FormatBool(lb)
}

func fmtF(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

func fmtStep(p *int) string {
	if p == nil {
		return ""
	}
	return strconv.Itoa(*p)
}

func fmtLoss(p *float64) string {
	if p == nil {
		return ""
	}
	return fmtF(*p)
}
