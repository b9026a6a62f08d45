package finetune

import (
	"fmt"
)

// Data is a run's tokenized training and evaluation data.
type Data struct {
	Train      *Batcher
	Eval       []Batch // nil without eval data
	TrainStats BatchStats
	EvalStats  BatchStats
	Tokens     TokenizeStats
}

// ExampleSource reads the examples of a data argument: a JSONL path, or a name the caller resolves (e.g. the
// embedded demo data).
type ExampleSource func(name string, tok DataTokenizer, opts TokenizeOptions) ([]Example, TokenizeStats, error)

// PrepareData tokenizes the plan's data (and its eval data, or an eval split of the data) and builds the batches.
func PrepareData(p *Plan, tok DataTokenizer, read ExampleSource) (*Data, error) {
	cfg := p.Config
	topts := TokenizeOptions{NoEOS: cfg.NoEOS}
	train, stats, err := read(cfg.Data, tok, topts)
	if err != nil {
		return nil, err
	}
	var eval []Example
	switch {
	case cfg.EvalData != "":
		if eval, _, err = read(cfg.EvalData, tok, topts); err != nil {
			return nil, err
		}
	case cfg.EvalSplit > 0:
		if train, eval, err = SplitEval(train, cfg.EvalSplit, cfg.Seed); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Data, err)
		}
	}
	pad := int32(0)
	if eos := tok.EOS(); len(eos) > 0 {
		pad = int32(eos[0])
	}
	opts := BatchOptions{SeqLen: cfg.SeqLen, BatchSize: cfg.BatchSize, Pack: cfg.Pack, Truncate: cfg.Truncate,
		PadID: pad, Seed: cfg.Seed}
	d := &Data{Tokens: stats}
	if d.Train, err = NewBatcher(train, opts); err != nil {
		return nil, err // batcher errors already name file:line
	}
	d.TrainStats = d.Train.Stats()
	if len(eval) > 0 {
		if d.Eval, d.EvalStats, err = EvalBatches(eval, opts); err != nil {
			return nil, err
		}
	}
	return d, nil
}
