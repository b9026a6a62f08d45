package safetensors

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// exactTensor is a [rows, cols] tensor of values that F32, F16 and BF16 all hold exactly.
func exactTensor(rows, cols int, dtype string) Tensor {
	d := make([]float32, rows*cols)
	for i := range d {
		d[i] = float32(i%13-6) * 0.375
	}
	return Tensor{Shape: []int{rows, cols}, Data: d, DType: dtype}
}

func TestSafetensorsHalfPrecisionRoundTrip(t *testing.T) {
	named := map[string]Tensor{}
	for _, dt := range []string{"F32", "F16", "BF16"} {
		named["t."+dt] = exactTensor(3, 5, dt)
	}
	named["scalar"] = Tensor{Shape: []int{}, Data: []float32{7}}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := Write(path, named, nil); err != nil {
		t.Fatal(err)
	}
	got, _, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range named {
		g := got[name]
		if !slices.Equal(g.Data, w.Data) || !slices.Equal(g.Shape, w.Shape) || g.DType != storedDType(w.DType) {
			t.Errorf("%s: read %v %v %s, wrote %v %v %s", name, g.Shape, g.Data, g.DType, w.Shape, w.Data, w.DType)
		}
	}
	// The file is as long as F16/BF16 need (2 bytes per value), and truncation is caught.
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, data[:len(data)-2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Read(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("truncated file: error %v", err)
	}
	if err := Write(path, map[string]Tensor{"x": {Shape: []int{2}, Data: []float32{1}}}, nil); err == nil {
		t.Fatal("a shape/data mismatch must be refused")
	}
	if err := Write(path, map[string]Tensor{"x": {Shape: []int{1}, Data: []float32{1}, DType: "I8"}}, nil); err == nil {
		t.Fatal(fmt.Sprint("dtype I8 must be refused"))
	}
}

// TestWriteLayout pins the byte layout: the JSON header of a map sorted by name, space padding to a multiple of
// 8, then the data in name order.
func TestWriteLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	err := Write(path, map[string]Tensor{"b": {Shape: []int{1}, Data: []float32{1}, DType: "BF16"}, "a": {Data: []float32{2}}},
		map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	hdr := `{"__metadata__":{"format":"pt"},"a":{"data_offsets":[0,4],"dtype":"F32","shape":[]},` +
		`"b":{"data_offsets":[4,6],"dtype":"BF16","shape":[1]}}`
	for len(hdr)%8 != 0 {
		hdr += " "
	}
	want := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	want = append(append(want, hdr...), 0, 0, 0, 0x40, 0x80, 0x3F)
	if string(got) != string(want) {
		t.Errorf("file\n%q\nwant\n%q", got, want)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	h, err := ReadHeader(path)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := h.Metadata()
	if err != nil || meta["format"] != "pt" || len(h.Entries) != 2 || h.Entries[1].Name != "b" ||
		h.Entries[1].Offset != int64(8+len(hdr)+4) || h.Entries[1].Size != 2 {
		t.Errorf("header %+v, metadata %v, %v", h, meta, err)
	}
}

// TestReadHeaderErrors breaks a header in one way at a time; every error names the file and what is wrong.
func TestReadHeaderErrors(t *testing.T) {
	file := func(header string, data int) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
		return append(append(b, header...), make([]byte, data)...)
	}
	const a = `"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`
	cases := []struct {
		name string
		b    []byte
		want []string
	}{
		{"short", []byte{1, 2, 3}, []string{"header length"}},
		{"header length", binary.LittleEndian.AppendUint64(nil, 1<<40), []string{"header length", "does not fit"}},
		{"not JSON", file("garbage!", 0), []string{"safetensors header"}},
		{"array", file("[1, 2]", 0), []string{"not a JSON object"}},
		{"duplicate", file("{"+a+","+a+"}", 8), []string{`"a"`, "twice"}},
		{"trailing", file("{"+a+"} x", 8), []string{"unexpected bytes"}},
		{"entry", file(`{"a":{"shape":"x"}}`, 0), []string{`"a"`, "header entry"}},
		{"offsets outside", file("{"+a+"}", 4), []string{`"a"`, "outside"}},
		{"offsets reversed", file(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, 8), []string{`"a"`, "data_offsets"}},
		{"dtype", file(`{"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}`, 8), []string{`"a"`, "I32"}},
		{"negative", file(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, 8), []string{`"a"`, "invalid dimension"}},
		{"too many", file(`{"a":{"dtype":"F32","shape":[1099511627776,2],"data_offsets":[0,8]}}`, 8), []string{`"a"`, "too many elements"}},
		{"bytes", file(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8), []string{`"a"`, "bytes of data"}},
		{"overlap", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}}`, 8),
			[]string{`"a"`, `"b"`, "overlaps"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.safetensors")
			if err := os.WriteFile(path, tc.b, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadHeader(path)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append([]string{path}, tc.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	t.Run("metadata", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "m.safetensors")
		os.WriteFile(path, file(`{"__metadata__":{"n":1}}`, 0), 0o644)
		if _, _, err := Read(path); err == nil || !strings.Contains(err.Error(), "__metadata__") {
			t.Errorf("error %v", err)
		}
	})
}
