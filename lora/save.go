package lora

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/compute/dtypes/float16"
)

// Native adapter files in a run's output folder: every factor at full depth (so training can resume and export
// can fold), as adapter.safetensors plus adapter.json describing the spec and the base model.
const (
	nativeWeights = "adapter.safetensors"
	nativeConfig  = "adapter.json"
)

type nativeManifest struct {
	Format    string     `json:"format"`
	BaseModel string     `json:"base_model"`
	Spec      Spec       `json:"spec"`
	Adapters  []*Adapter `json:"adapters"`
}

// Save writes the adapter set into dir (atomically per file).
func Save(dir string, set *Set, baseModel string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	named := map[string]NamedTensor{}
	for _, a := range set.Adapters {
		for i, f := range a.Factors {
			name := a.Module + "." + FactorName(i, set.Spec.Depth)
			named[name] = NamedTensor{Shape: a.FactorShape(i, set.Spec.Depth, set.Spec.Rank), Data: f}
		}
	}
	if err := WriteSafetensors(filepath.Join(dir, nativeWeights), named, map[string]string{"format": "saddle"}); err != nil {
		return err
	}
	m := nativeManifest{Format: "saddle-adapter/1", BaseModel: baseModel, Spec: set.Spec, Adapters: set.Adapters}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, nativeConfig), append(data, '\n'))
}

// Load reads an adapter set saved by Save.
func Load(dir string) (*Set, string, error) {
	cfgPath := filepath.Join(dir, nativeConfig)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, "", err
	}
	var m nativeManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, "", fmt.Errorf("%s: %w", cfgPath, err)
	}
	if m.Format != "saddle-adapter/1" {
		return nil, "", fmt.Errorf("%s: unknown adapter format %q", cfgPath, m.Format)
	}
	if err := m.Spec.Validate(); err != nil {
		return nil, "", fmt.Errorf("%s: %w", cfgPath, err)
	}
	weightsPath := filepath.Join(dir, nativeWeights)
	tensors, _, err := ReadSafetensors(weightsPath)
	if err != nil {
		return nil, "", err
	}
	set := &Set{Spec: m.Spec, Adapters: m.Adapters}
	for _, a := range set.Adapters {
		a.Factors = make([][]float32, m.Spec.Depth)
		for i := range a.Factors {
			name := a.Module + "." + FactorName(i, m.Spec.Depth)
			t, ok := tensors[name]
			if !ok {
				return nil, "", fmt.Errorf("%s: missing tensor %q", weightsPath, name)
			}
			if want := a.FactorShape(i, m.Spec.Depth, m.Spec.Rank); !slices.Equal(t.Shape, want) {
				return nil, "", fmt.Errorf("%s: tensor %q has shape %v, want %v", weightsPath, name, t.Shape, want)
			}
			a.Factors[i] = t.Data
		}
	}
	return set, m.BaseModel, nil
}

// NamedTensor is a tensor for the safetensors helpers. Data are float32 in memory; DType is the storage dtype in
// the file: "F32" (also when empty), "F16" or "BF16".
type NamedTensor struct {
	Shape []int
	Data  []float32
	DType string
}

// Safetensors dtypes these helpers read and write, with their element sizes.
var safetensorsDTypeSize = map[string]int{"F32": 4, "F16": 2, "BF16": 2}

// WriteSafetensors writes tensors in the safetensors format (8-byte header length, JSON header, data), sorted by
// name, each in its DType (F32 when empty), streamed through a temporary file renamed into place.
func WriteSafetensors(path string, named map[string]NamedTensor, metadata map[string]string) error {
	names := make([]string, 0, len(named))
	for n := range named {
		names = append(names, n)
	}
	sort.Strings(names)
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	offset := 0
	for _, n := range names {
		t := named[n]
		dtype := storedDType(t.DType)
		size, ok := safetensorsDTypeSize[dtype]
		if !ok {
			return fmt.Errorf("%s: tensor %q: cannot write dtype %q (F32, F16, BF16)", path, n, t.DType)
		}
		count := 1
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("%s: tensor %q: bad shape %v", path, n, t.Shape)
			}
			count *= d
		}
		if count != len(t.Data) {
			return fmt.Errorf("%s: tensor %q: %d values for shape %v", path, n, len(t.Data), t.Shape)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{} // a scalar: "shape": [] rather than null
		}
		header[n] = map[string]any{"dtype": dtype, "shape": shape, "data_offsets": []int{offset, offset + size*count}}
		offset += size * count
	}
	h, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for len(h)%8 != 0 { // the spec allows trailing spaces; alignment keeps the data 8-byte aligned
		h = append(h, ' ')
	}
	return writeStreamAtomic(path, func(w *bufio.Writer) error {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(len(h)))
		w.Write(b[:])
		w.Write(h)
		for _, n := range names {
			t := named[n]
			switch storedDType(t.DType) {
			case "F32":
				for _, v := range t.Data {
					binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
					w.Write(b[:4])
				}
			case "F16":
				for _, v := range t.Data {
					binary.LittleEndian.PutUint16(b[:], float16.FromFloat32(v).Bits())
					w.Write(b[:2])
				}
			case "BF16":
				for _, v := range t.Data {
					binary.LittleEndian.PutUint16(b[:], bfloat16.FromFloat32(v).Bits())
					w.Write(b[:2])
				}
			}
		}
		return nil
	})
}

func storedDType(d string) string {
	if d == "" {
		return "F32"
	}
	return d
}

// safetensorsEntry is one tensor in a safetensors header.
type safetensorsEntry struct {
	DType   string `json:"dtype"`
	Shape   []int  `json:"shape"`
	Offsets []int  `json:"data_offsets"`
}

// readSafetensorsHeader parses the header of a safetensors file held in data: the entries (without
// __metadata__), the metadata, and the data section.
func readSafetensorsHeader(path string, data []byte) (map[string]safetensorsEntry, map[string]string, []byte, error) {
	if len(data) < 8 {
		return nil, nil, nil, fmt.Errorf("%s: too short for a safetensors header (%d bytes)", path, len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > uint64(len(data)-8) {
		return nil, nil, nil, fmt.Errorf("%s: header length %d runs past the end of the file (%d bytes)", path, n, len(data))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &raw); err != nil {
		return nil, nil, nil, fmt.Errorf("%s: header: %w", path, err)
	}
	entries := make(map[string]safetensorsEntry, len(raw))
	var meta map[string]string
	for name, r := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(r, &meta); err != nil {
				return nil, nil, nil, fmt.Errorf("%s: __metadata__: %w", path, err)
			}
			continue
		}
		var e safetensorsEntry
		if err := json.Unmarshal(r, &e); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: tensor %q: %w", path, name, err)
		}
		entries[name] = e
	}
	return entries, meta, data[8+n:], nil
}

// ReadSafetensors reads a safetensors file with F32, F16 or BF16 tensors into float32 (exact for all three),
// checking every size and offset against the file. Each tensor's DType says how it was stored.
func ReadSafetensors(path string) (map[string]NamedTensor, map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	entries, meta, body, err := readSafetensorsHeader(path, data)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]NamedTensor, len(entries))
	for name, info := range entries {
		size, ok := safetensorsDTypeSize[info.DType]
		if !ok {
			return nil, nil, fmt.Errorf("%s: tensor %q: dtype %s is not supported (F32, F16, BF16)", path, name, info.DType)
		}
		count := 1
		for _, d := range info.Shape {
			if d < 0 || (d > 0 && count > math.MaxInt32/d) {
				return nil, nil, fmt.Errorf("%s: tensor %q: bad shape %v", path, name, info.Shape)
			}
			count *= d
		}
		if len(info.Offsets) != 2 || info.Offsets[0] < 0 || info.Offsets[1] < info.Offsets[0] ||
			info.Offsets[1] > len(body) || info.Offsets[1]-info.Offsets[0] != size*count {
			return nil, nil, fmt.Errorf("%s: tensor %q: data offsets %v do not fit shape %v %s in %d data bytes", path, name, info.Offsets, info.Shape, info.DType, len(body))
		}
		b := body[info.Offsets[0]:info.Offsets[1]]
		vals := make([]float32, count)
		switch info.DType {
		case "F32":
			for i := range vals {
				vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
		case "F16":
			for i := range vals {
				vals[i] = float16.FromBits(binary.LittleEndian.Uint16(b[2*i:])).Float32()
			}
		case "BF16":
			for i := range vals {
				vals[i] = bfloat16.FromBits(binary.LittleEndian.Uint16(b[2*i:])).Float32()
			}
		}
		out[name] = NamedTensor{Shape: info.Shape, Data: vals, DType: info.DType}
	}
	return out, meta, nil
}

// safetensorsDTypes reads only the header of a safetensors file and returns each tensor's dtype.
func safetensorsDTypes(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lenBuf [8]byte
	if _, err := io.ReadFull(f, lenBuf[:]); err != nil {
		return nil, fmt.Errorf("%s: reading the safetensors header length: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > 100<<20 {
		return nil, fmt.Errorf("%s: safetensors header length %d is implausible", path, n)
	}
	buf := make([]byte, 8+n)
	copy(buf, lenBuf[:])
	if _, err := io.ReadFull(f, buf[8:]); err != nil {
		return nil, fmt.Errorf("%s: reading the safetensors header: %w", path, err)
	}
	entries, _, _, err := readSafetensorsHeader(path, buf)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(entries))
	for name, e := range entries {
		out[name] = e.DType
	}
	return out, nil
}

// writeFileAtomic writes to a temporary file, syncs it and renames it over path, so readers never see half a file.
func writeFileAtomic(path string, data []byte) error {
	return writeStreamAtomic(path, func(w *bufio.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeStreamAtomic lets fill write through a buffer into a temporary file beside path, then syncs it and renames
// it over path. bufio.Writer keeps its first error, so fill may ignore the results of individual writes.
func writeStreamAtomic(path string, fill func(w *bufio.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err := fill(w); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil { // CreateTemp makes 0600; exported files are meant to be shared
		tmp.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}
