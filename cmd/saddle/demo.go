package main

import (
	"bytes"
	"fmt"

	"github.com/saddle-ml/saddle/data"
	"github.com/saddle-ml/saddle/finetune"
	"github.com/saddle-ml/saddle/internal/fileio"
)

// The demo data ship inside the binary, so `saddle train` and `saddle escape` work with no files but the model.
const (
	demoData     = "demo"
	demoEvalData = "demo-eval"
)

var demoFiles = map[string]string{demoData: data.DemoTrain, demoEvalData: data.DemoEval, "demo-qa": data.DemoQA}

// readExamples reads a JSONL file, or one of the embedded demo sets by name.
func readExamples(name string, tok finetune.DataTokenizer, opts finetune.TokenizeOptions) ([]finetune.Example, finetune.TokenizeStats, error) {
	if file, ok := demoFiles[name]; ok {
		content, err := data.FS.ReadFile(file)
		if err != nil {
			return nil, finetune.TokenizeStats{}, err
		}
		recs, err := finetune.ParseJSONL(bytes.NewReader(content), "demo:"+file)
		if err != nil {
			return nil, finetune.TokenizeStats{}, err
		}
		return finetune.TokenizeRecords(recs, tok, opts)
	}
	return finetune.LoadExamples(name, tok, opts)
}

// checkDataFile refuses, before any work, a data file (of flag) that is missing or not a regular file: a FIFO
// would block the run after the model is loaded. The demo sets and "" (none) pass, and "-" is left for
// finetune.NewPlan to refuse by its setting's name.
func checkDataFile(flag, path string) error {
	if _, demo := demoFiles[path]; demo || path == "" || path == "-" {
		return nil
	}
	f, _, err := fileio.Open(path)
	if err != nil {
		return fmt.Errorf("--%s: %w", flag, err)
	}
	return f.Close()
}
