// Package data embeds saddle's demo fine-tuning set and its default model (see README.md here) so the binary needs
// no data files.
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

// Stories260K is the GGUF file of the default model, Andrej Karpathy's TinyStories 260K (MIT; see
// models/stories260K/README.md).
//
//go:embed models/stories260K/stories260K.gguf
var Stories260K []byte
