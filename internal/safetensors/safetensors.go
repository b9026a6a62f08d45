// Package safetensors reads and writes the safetensors format: an 8-byte little-endian header length, a JSON
// header naming each tensor's dtype, shape and data_offsets (plus an optional "__metadata__" object of strings),
// then the data section.
//
// The header comes from the file, so every length, offset and shape in it is checked against the file before
// anything is allocated from it; a tensor is read one bounded chunk at a time into float32. Nothing here panics
// on bad input, and errors name the file and the tensor.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/fileio"
)

// Tensor is one tensor in memory. DType is its storage dtype in the file: "F32" (also when empty on writing),
// "F16" or "BF16". An empty Shape is a scalar.
type Tensor struct {
	Shape []int
	Data  []float32
	DType string
	// Load, when Data is nil, makes the data as Write writes the tensor, so that a writer holds one tensor's
	// floats at a time.
	Load func() ([]float32, error)
}

// Entry is one tensor of a file's header, checked against the file: Size bytes from the absolute offset Offset
// hold the elements of Shape stored as DType.
type Entry struct {
	Name   string
	DType  string
	Shape  []int
	Offset int64
	Size   int64
}

// Header is a parsed safetensors header.
type Header struct {
	Path     string
	Entries  []Entry // in file order, without __metadata__
	metadata json.RawMessage
}

// maxHeaderSize bounds the JSON header a reader accepts (real ones are well under 1 MB).
const maxHeaderSize = 100 << 20

// safetensorsEntry is one tensor's entry in the JSON header.
type safetensorsEntry struct {
	DType       string  `json:"dtype"`
	Shape       []int   `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// ReadHeader reads and checks the header of a safetensors file: the JSON is one object whose names appear once,
// followed by nothing but padding; every tensor's data_offsets lie inside the data section, its byte count is
// its shape times its dtype's size, and no two tensors' bytes overlap.
func ReadHeader(path string) (*Header, error) {
	f, size, err := fileio.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lenBuf [8]byte
	if _, err := io.ReadFull(f, lenBuf[:]); err != nil {
		return nil, fmt.Errorf("%s: reading safetensors header length: %w", path, err)
	}
	hlen := binary.LittleEndian.Uint64(lenBuf[:])
	if hlen > maxHeaderSize || int64(hlen) > size-8 {
		return nil, fmt.Errorf("%s: safetensors header length %d does not fit the file (%d bytes)", path, hlen, size)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return nil, fmt.Errorf("%s: reading safetensors header: %w", path, err)
	}
	raw, err := headerEntries(hdr)
	if err != nil {
		return nil, fmt.Errorf("%s: safetensors header: %w", path, err)
	}
	dataStart := int64(8 + hlen)
	dataSize := size - dataStart
	h := &Header{Path: path, Entries: make([]Entry, 0, len(raw))}
	ranges := make([]dtype.Range, 0, len(raw))
	for _, r := range raw {
		if r.name == "__metadata__" {
			h.metadata = r.raw
			continue
		}
		var e safetensorsEntry
		if err := json.Unmarshal(r.raw, &e); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: header entry: %w", path, r.name, err)
		}
		off := e.DataOffsets
		if len(off) != 2 || off[0] < 0 || off[1] < off[0] || off[1] > dataSize {
			return nil, fmt.Errorf("%s: tensor %q: data_offsets %v lie outside the data section (%d bytes)", path, r.name, off, dataSize)
		}
		ent := Entry{Name: r.name, DType: e.DType, Shape: e.Shape, Offset: dataStart + off[0], Size: off[1] - off[0]}
		n, err := elements(ent.Shape)
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", path, r.name, err)
		}
		want, err := dtype.Size(ent.DType, n)
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", path, r.name, err)
		}
		if want != ent.Size {
			return nil, fmt.Errorf("%s: tensor %q: %d bytes of data for shape %v %s, want %d", path, r.name, ent.Size, ent.Shape, ent.DType, want)
		}
		h.Entries = append(h.Entries, ent)
		ranges = append(ranges, dtype.Range{Name: r.name, Offset: ent.Offset, Size: ent.Size})
	}
	if err := dtype.CheckOverlap(path, ranges); err != nil {
		return nil, err
	}
	return h, nil
}

// elements is the element count of a shape; an empty shape is a scalar.
func elements(shape []int) (int64, error) {
	if len(shape) == 0 {
		return 1, nil
	}
	return dtype.Elements(shape)
}

// rawEntry is one top-level name of a safetensors header, in file order.
type rawEntry struct {
	name string
	raw  json.RawMessage
}

// headerEntries splits a safetensors JSON header into its top-level entries. Unlike decoding into a map, it
// refuses a tensor name that appears twice (a map would silently keep the last one).
func headerEntries(hdr []byte) ([]rawEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	var out []rawEntry
	seen := map[string]bool{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := kt.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("entry %q: %w", name, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("tensor %q appears twice", name)
		}
		seen[name] = true
		out = append(out, rawEntry{name, raw})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	// The writer pads the header with spaces; anything else after the object is corruption.
	if rest := bytes.TrimRight(hdr[dec.InputOffset():], " \t\r\n\x00"); len(rest) > 0 {
		return nil, fmt.Errorf("%d unexpected bytes after the JSON object", len(rest))
	}
	return out, nil
}

// Metadata decodes the header's __metadata__ object (nil when absent).
func (h *Header) Metadata() (map[string]string, error) {
	if h.metadata == nil {
		return nil, nil
	}
	var meta map[string]string
	if err := json.Unmarshal(h.metadata, &meta); err != nil {
		return nil, fmt.Errorf("%s: __metadata__: %w", h.Path, err)
	}
	return meta, nil
}

// ReadTensor reads one tensor of the header's file from r (that file, opened) into float32.
func (h *Header) ReadTensor(r io.ReaderAt, e *Entry) ([]float32, error) {
	n, err := elements(e.Shape)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", h.Path, e.Name, err)
	}
	data, err := dtype.ReadAt(r, e.Offset, e.DType, n)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", h.Path, e.Name, err)
	}
	return data, nil
}

// Read reads every tensor of a safetensors file into float32 (exact for F32, F16 and BF16), and its metadata.
// Each tensor's DType says how it was stored.
func Read(path string) (map[string]Tensor, map[string]string, error) {
	h, err := ReadHeader(path)
	if err != nil {
		return nil, nil, err
	}
	meta, err := h.Metadata()
	if err != nil {
		return nil, nil, err
	}
	f, _, err := fileio.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	out := make(map[string]Tensor, len(h.Entries))
	for i := range h.Entries {
		e := &h.Entries[i]
		data, err := h.ReadTensor(f, e)
		if err != nil {
			return nil, nil, err
		}
		out[e.Name] = Tensor{Shape: e.Shape, Data: data, DType: e.DType}
	}
	return out, meta, nil
}

// writable are the dtypes Write stores.
var writable = []string{dtype.F32, dtype.F16, dtype.BF16}

// CanWrite reports whether Write stores tensors of dtype ("F32", "F16" or "BF16").
func CanWrite(dt string) bool { return slices.Contains(writable, dt) }

// Write writes tensors in the safetensors format, sorted by name, each in its DType (F32 when empty), with
// metadata as __metadata__ when not empty. The header is padded with spaces to a multiple of 8 bytes so that the
// data are aligned. The file is streamed through fileio.Write: it appears complete or not at all.
func Write(path string, tensors map[string]Tensor, metadata map[string]string) error {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	slices.Sort(names)
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var offset int64
	for _, n := range names {
		t := tensors[n]
		dt := storedDType(t.DType)
		if !CanWrite(dt) {
			return fmt.Errorf("%s: tensor %q: cannot write dtype %q (F32, F16, BF16)", path, n, t.DType)
		}
		count, err := elements(t.Shape)
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", path, n, err)
		}
		if t.Load == nil && count != int64(len(t.Data)) {
			return fmt.Errorf("%s: tensor %q: %d values for shape %v", path, n, len(t.Data), t.Shape)
		}
		size, err := dtype.Size(dt, count)
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", path, n, err)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{} // a scalar: "shape": [] rather than null
		}
		header[n] = map[string]any{"dtype": dt, "shape": shape, "data_offsets": []int64{offset, offset + size}}
		offset += size
	}
	h, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for len(h)%8 != 0 { // the spec allows trailing spaces; alignment keeps the data 8-byte aligned
		h = append(h, ' ')
	}
	return fileio.Write(path, func(w io.Writer) error {
		w.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(h))))
		w.Write(h)
		for _, n := range names {
			t := tensors[n]
			data := t.Data
			if data == nil && t.Load != nil {
				var err error
				if data, err = t.Load(); err != nil {
					return err
				}
				if count, _ := elements(t.Shape); count != int64(len(data)) { // elements was checked above
					return fmt.Errorf("%s: tensor %q: %d values for shape %v", path, n, len(data), t.Shape)
				}
			}
			if err := dtype.Encode(w, storedDType(t.DType), data); err != nil {
				return fmt.Errorf("%s: tensor %q: %w", path, n, err)
			}
		}
		return nil
	})
}

func storedDType(d string) string {
	if d == "" {
		return dtype.F32
	}
	return d
}
