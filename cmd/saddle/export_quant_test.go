package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/gguf"
	"github.com/saddle-ml/saddle/internal/testenv"
)

// q8Stories writes stories260K with every matrix whose rows are whole blocks of 32 in Q8_0.
func q8Stories(t *testing.T) string {
	t.Helper()
	src, _ := testenv.Stories260K(t)
	f, tensors, err := gguf.Read(src)
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range tensors {
		if len(tt.Shape) == 2 && tt.Shape[1]%dtype.BlockSize(dtype.Q8_0) == 0 {
			tensors[i].DType = dtype.Q8_0
		}
	}
	path := filepath.Join(t.TempDir(), "stories-q8.gguf")
	if err := gguf.Write(path, f.KVs, tensors); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestExportMergedGGUFOfQuantizedBase: info names the tensor types; merged-gguf says on stderr how the adapted
// tensors were stored (F16 by default for a quantized base, or the --dtype quantization, which ffn_down's rows of
// 172 cannot take); quantized --dtype values are refused for the other formats.
func TestExportMergedGGUFOfQuantizedBase(t *testing.T) {
	base := q8Stories(t)
	code, out, errs := saddle(t, "info", "--model", base)
	if code != 0 || !strings.Contains(out, "dtype:         Q8_0") || !strings.Contains(out, "Q8_0 ") || !strings.Contains(out, "F32 ") {
		t.Fatalf("info: exit %d\n%s%s", code, out, errs)
	}
	run := fakeRun(t, base)
	for _, c := range []struct{ dtype, stored string }{{"", "F16"}, {"q8_0", "Q8_0"}} {
		out := filepath.Join(t.TempDir(), "merged.gguf")
		args := []string{"export", "--checkpoint", run, "--format", "merged-gguf", "--out", out}
		if c.dtype != "" {
			args = append(args, "--dtype", c.dtype)
		}
		code, _, errs := saddle(t, args...)
		if code != 0 || !strings.Contains(errs, "adapted tensors written as") || !strings.Contains(errs, c.stored) ||
			!strings.Contains(errs, "copied byte for byte") || (c.dtype != "") != strings.Contains(errs, "not whole Q8_0 blocks") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errs)
		}
		code, info, errs := saddle(t, "info", "--model", out)
		if code != 0 || !strings.Contains(info, c.stored+" ") {
			t.Errorf("info on the merged model (%s): exit %d\n%s%s", c.stored, code, info, errs)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "merged", "--dtype", "q6_k"}, "merged-gguf only"},
		{[]string{"--format", "merged-gguf", "--dtype", "q5_k"}, "want F32, F16 or BF16"},
	} {
		args := append([]string{"export", "--checkpoint", run, "--out", filepath.Join(t.TempDir(), "x.gguf")}, c.args...)
		code, _, errs := saddle(t, args...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want an error mentioning %q", args, code, errs, c.want)
		}
	}
}
