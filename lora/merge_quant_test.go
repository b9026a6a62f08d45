package lora

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/gguf"
	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/model"
)

// quantizedStories writes stories260K with every matrix whose rows are whole blocks in quant.
func quantizedStories(t *testing.T, quant string) string {
	t.Helper()
	src, _ := testenv.Stories260K(t)
	f, tensors, err := gguf.Read(src)
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range tensors {
		if len(tt.Shape) == 2 && tt.Shape[1]%dtype.BlockSize(quant) == 0 { // ffn_down's rows of 172 stay F32
			tensors[i].DType = quant
		}
	}
	path := filepath.Join(t.TempDir(), "stories-"+quant+".gguf")
	if err := gguf.Write(path, f.KVs, tensors); err != nil {
		t.Fatal(err)
	}
	return path
}

// rawTensors maps each tensor of a GGUF file to its type and bytes.
func rawTensors(t *testing.T, path string) map[string]struct {
	typ  gguf.TensorType
	data []byte
} {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	out := map[string]struct {
		typ  gguf.TensorType
		data []byte
	}{}
	for _, info := range f.Tensors {
		b, err := io.ReadAll(io.NewSectionReader(fh, f.DataOffset+int64(info.Offset), info.Size))
		if err != nil {
			t.Fatal(err)
		}
		out[info.Name] = struct {
			typ  gguf.TensorType
			data []byte
		}{info.Type, b}
	}
	return out
}

// TestMergedGGUFOfQuantizedBase merges into a Q4_0 base: untouched tensors are the base's bytes, adapted ones
// are F16 by default (so ΔW survives), or the --dtype quantization asked for; the merged model computes
// base+adapter.
func TestMergedGGUFOfQuantizedBase(t *testing.T) {
	basePath := quantizedStories(t, "Q4_0")
	p := loadBase(t, basePath)
	if p.DType != "Q4_0" {
		t.Fatalf("base loads as %s, want Q4_0", p.DType)
	}
	set := trainedSet(t, p.Config, 2, nil)
	adapted := map[string]bool{}
	for _, a := range set.Adapters {
		adapted[a.Module+".weight"] = true
	}
	want := logits(t, p, nil, set)
	checkAdapterMatters(t, logits(t, p, nil, nil), want)
	base := rawTensors(t, basePath)
	diffs := map[string]float64{}

	for _, c := range []struct {
		dtype, stored string
		tol           float64
	}{{"", "F16", 0.03}, {"Q8_0", "Q8_0", 0.5}, {"F32", "F32", 1e-5}} { // F16: 2⁻¹¹ of logits up to ~20

		var notes bytes.Buffer
		path := filepath.Join(t.TempDir(), "merged.gguf")
		g := writeAndLoad(t, WriteMergedGGUF, path, p, set, MergeOptions{DType: c.dtype, Notes: &notes})
		line := notes.String()
		if strings.Count(line, "\n") != 1 || !strings.Contains(line, c.stored) || !strings.Contains(line, "copied byte for byte") {
			t.Errorf("--dtype %q: note %q", c.dtype, line)
		}
		if c.dtype == "" && !strings.Contains(line, "quantized in the base") {
			t.Errorf("the note does not say the quantized tensors were written in a float type: %q", line)
		}
		copied := 0
		for name, got := range rawTensors(t, path) {
			hf, _ := model.HFNameFromGGUF(name)
			switch {
			case adapted[hf] && got.typ.String() != c.stored:
				t.Errorf("--dtype %q: adapted %s stored as %s, want %s", c.dtype, name, got.typ, c.stored)
			case !adapted[hf] && (got.typ != base[name].typ || !bytes.Equal(got.data, base[name].data)):
				t.Errorf("--dtype %q: untouched %s is not the base's bytes", c.dtype, name)
			case !adapted[hf]:
				copied++
			}
		}
		if copied == 0 || copied+len(set.Adapters) != len(base) {
			t.Errorf("%d tensors copied, %d adapted, %d in the base", copied, len(set.Adapters), len(base))
		}
		d := maxDiff(logits(t, g, nil, nil), want)
		diffs[c.dtype] = d
		t.Logf("--dtype %q: merged logits differ from base+adapter by %g", c.dtype, d)
		if d > c.tol {
			t.Errorf("--dtype %q: merged logits differ from base+adapter by %g (tolerance %g)", c.dtype, d, c.tol)
		}
	}

	// Re-quantizing the adapted tensors loses what F16 keeps.
	if diffs[""] > diffs["Q8_0"]/5 {
		t.Errorf("F16 adapted tensors are off by %g, not much better than Q8_0's %g", diffs[""], diffs["Q8_0"])
	}

	// K-quants need rows of 256; stories260K's are 64: those tensors keep a float type, and the note says so.
	var notes bytes.Buffer
	path := filepath.Join(t.TempDir(), "k.gguf")
	if err := WriteMergedGGUF(path, p, set, MergeOptions{DType: "Q4_K", Notes: &notes}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(notes.String(), "not whole Q4_K blocks of 256") {
		t.Errorf("Q4_K note: %q", notes.String())
	}
	for name, got := range rawTensors(t, path) {
		if hf, _ := model.HFNameFromGGUF(name); adapted[hf] && got.typ.String() != "F16" {
			t.Errorf("%s: %s, want F16", name, got.typ)
		}
	}
	if err := WriteMergedHF(t.TempDir(), p, set, MergeOptions{DType: "Q6_K"}); err == nil || !strings.Contains(err.Error(), "merged GGUF") {
		t.Errorf("a quantized merged HF folder: %v", err)
	}
}
