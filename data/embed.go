// Package data embeds saddle's demo fine-tuning set (see README.md here) so the binary needs no data files.
package data

import "embed"

// FS holds the demo JSONL files.
//
//go:embed pip-stories/*.jsonl
var FS embed.FS

// Paths of the demo sets inside FS.
const (
	DemoTrain = "pip-stories/train.jsonl"
	DemoEval  = "pip-stories/eval.jsonl"
	DemoQA    = "pip-stories/qa.jsonl"
)
