package finetune

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPrepareDataHonoursNoEOS: with the real stories tokenizer (which has EOS id 2), examples end in EOS unless the
// run asks for NoEOS.
func TestPrepareDataHonoursNoEOS(t *testing.T) {
	f := newFixture(t)
	file := filepath.Join(t.TempDir(), "d.jsonl")
	writeFile(t, file, `{"text": "Pip said beep boop."}`+"\n")
	for _, noEOS := range []bool{false, true} {
		cfg := testConfig(t, "adam", 1e-3, 1)
		cfg.Data, cfg.NoEOS, cfg.BatchSize, cfg.SeqLen = file, noEOS, 1, 4
		var last int32
		d, err := PrepareData(testPlan(t, f, cfg), f.tok, func(name string, tok DataTokenizer, opts TokenizeOptions) ([]Example, TokenizeStats, error) {
			ex, st, err := LoadExamples(name, tok, opts)
			if err == nil {
				last = ex[0].Tokens[len(ex[0].Tokens)-1]
			}
			return ex, st, err
		})
		if err != nil {
			t.Fatal(err)
		}
		if d.Train == nil {
			t.Fatal("no batches")
		}
		if endsInEOS := last == int32(f.tok.EOS()[0]); endsInEOS == noEOS {
			t.Fatalf("NoEOS=%v: the example ends in token %d (EOS %d)", noEOS, last, f.tok.EOS()[0])
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
