package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func loadCorpus(t testing.TB) []string {
	data, err := os.ReadFile(filepath.Join("testdata", "corpus.json"))
	if err != nil {
		t.Fatal(err)
	}
	var corpus []string
	if err := json.Unmarshal(data, &corpus); err != nil {
		t.Fatalf("testdata/corpus.json: %v", err)
	}
	return corpus
}
