package lora

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
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

// NamedTensor is a float32 tensor for the safetensors helpers.
type NamedTensor struct {
	Shape []int
	Data  []float32
}

// WriteSafetensors writes F32 tensors in the safetensors format (8-byte header length, JSON header, data),
// sorted by name, through a temporary file renamed into place.
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
		size := 4 * len(t.Data)
		header[n] = map[string]any{"dtype": "F32", "shape": t.Shape, "data_offsets": []int{offset, offset + size}}
		offset += size
	}
	h, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for len(h)%8 != 0 { // the spec allows trailing spaces; alignment keeps the data 8-byte aligned
		h = append(h, ' ')
	}
	buf := make([]byte, 0, 8+len(h)+offset)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(len(h)))
	buf = append(buf, h...)
	for _, n := range names {
		for _, v := range named[n].Data {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
	}
	return writeFileAtomic(path, buf)
}

// ReadSafetensors reads a safetensors file with F32 tensors, checking every size and offset against the file.
func ReadSafetensors(path string) (map[string]NamedTensor, map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if len(data) < 8 {
		return nil, nil, fmt.Errorf("%s: too short for a safetensors header (%d bytes)", path, len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > uint64(len(data)-8) {
		return nil, nil, fmt.Errorf("%s: header length %d runs past the end of the file (%d bytes)", path, n, len(data))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &raw); err != nil {
		return nil, nil, fmt.Errorf("%s: header: %w", path, err)
	}
	body := data[8+n:]
	out := map[string]NamedTensor{}
	var meta map[string]string
	for name, r := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(r, &meta); err != nil {
				return nil, nil, fmt.Errorf("%s: __metadata__: %w", path, err)
			}
			continue
		}
		var info struct {
			DType   string `json:"dtype"`
			Shape   []int  `json:"shape"`
			Offsets []int  `json:"data_offsets"`
		}
		if err := json.Unmarshal(r, &info); err != nil {
			return nil, nil, fmt.Errorf("%s: tensor %q: %w", path, name, err)
		}
		if info.DType != "F32" {
			return nil, nil, fmt.Errorf("%s: tensor %q: dtype %s (adapters are read as F32)", path, name, info.DType)
		}
		count := 1
		for _, d := range info.Shape {
			if d < 0 || (d > 0 && count > math.MaxInt32/d) {
				return nil, nil, fmt.Errorf("%s: tensor %q: bad shape %v", path, name, info.Shape)
			}
			count *= d
		}
		if len(info.Offsets) != 2 || info.Offsets[0] < 0 || info.Offsets[1] < info.Offsets[0] ||
			info.Offsets[1] > len(body) || info.Offsets[1]-info.Offsets[0] != 4*count {
			return nil, nil, fmt.Errorf("%s: tensor %q: data offsets %v do not fit shape %v in %d data bytes", path, name, info.Offsets, info.Shape, len(body))
		}
		b := body[info.Offsets[0]:info.Offsets[1]]
		vals := make([]float32, count)
		for i := range vals {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		out[name] = NamedTensor{Shape: info.Shape, Data: vals}
	}
	return out, meta, nil
}

// writeFileAtomic writes to a temporary file, syncs it and renames it over path, so readers never see half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
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
