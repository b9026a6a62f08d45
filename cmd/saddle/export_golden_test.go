package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/testenv"
)

// exportGoldenCases are the exports whose files testdata/export-golden/golden.sha256 lists. The hashes were made
// by the saddle binary built at commit 5a0f81f (before the file-format layer was rewritten), from the adapter in
// testdata/export-golden/run (stories260K, rank 4, depth 3, rsLoRA, six module kinds on layers 0, 2 and 4, three
// Adam steps), run from a folder holding stories260K.gguf and stories260K-hf/ under those names.
// The three peft*/adapter_config.json hashes were renewed when the PEFT export began writing an rsLoRA adapter as
// lora_alpha = α·√r with use_rslora false (8 → 16, true → false; same scale, and the one llama.cpp's converter
// reads): every other byte of those files, and every other file, is unchanged.
var exportGoldenCases = [][]string{
	{"--model", "stories260K.gguf", "--format", "peft", "--out", "peft"},
	{"--model", "stories260K.gguf", "--format", "peft", "--dtype", "BF16", "--out", "peft-bf16"},
	{"--model", "stories260K-hf", "--format", "peft", "--out", "peft-hf"},
	{"--model", "stories260K.gguf", "--format", "gguf", "--out", "adapter.gguf"},
	{"--model", "stories260K.gguf", "--format", "gguf", "--dtype", "F16", "--out", "adapter-f16.gguf"},
	{"--model", "stories260K.gguf", "--format", "merged", "--out", "merged"},
	{"--model", "stories260K-hf", "--format", "merged", "--out", "merged-hf"},
	{"--model", "stories260K-hf", "--format", "merged", "--dtype", "BF16", "--out", "merged-hf-bf16"},
	{"--model", "stories260K.gguf", "--format", "merged-gguf", "--out", "merged.gguf"},
	{"--model", "stories260K.gguf", "--format", "merged-gguf", "--dtype", "F16", "--out", "merged-f16.gguf"},
}

// TestExportsAreByteIdenticalToGolden exports one adapter in every format and dtype and compares every file
// byte for byte (by sha256) with what the code before the file-format redesign wrote.
func TestExportsAreByteIdenticalToGolden(t *testing.T) {
	gguf, hf := testenv.Stories260K(t)
	work := t.TempDir()
	testenv.CopyTree(t, gguf, filepath.Join(work, "stories260K.gguf"))
	testenv.CopyTree(t, hf, filepath.Join(work, "stories260K-hf"))
	testenv.CopyTree(t, filepath.Join("testdata", "export-golden", "run"), filepath.Join(work, "run"))
	want := readGolden(t, filepath.Join("testdata", "export-golden", "golden.sha256"))
	t.Chdir(work)
	for _, args := range exportGoldenCases {
		code, _, errs := saddle(t, append([]string{"export", "--checkpoint", "run"}, args...)...)
		if code != 0 {
			t.Fatalf("saddle export %v: exit %d\n%s", args, code, errs)
		}
	}
	got := map[string]string{}
	for _, args := range exportGoldenCases {
		out := args[len(args)-1]
		err := filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			got[filepath.ToSlash(path)] = hex.EncodeToString(sum[:])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		switch g, ok := got[name]; {
		case !ok:
			t.Errorf("%s: not written", name)
		case g != want[name]:
			t.Errorf("%s: sha256 %s, the golden file says %s", name, g, want[name])
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: written, but not in the golden list", name)
		}
	}
}

func readGolden(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("%s: bad line %q", path, sc.Text())
		}
		out[name] = sum
	}
	if len(out) == 0 {
		t.Fatalf("%s: empty", path)
	}
	return out
}
