package model

import (
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/saddle-ml/saddle/internal/dtype"
	"github.com/saddle-ml/saddle/internal/fileio"
)

// RopeScaling describes a RoPE frequency adjustment. Types:
//   - "linear": every inverse frequency is divided by Factor (HF "linear", GGUF rope.scaling.type=linear).
//   - "llama3": Llama 3.1's smooth per-frequency scaling with Factor, LowFreqFactor, HighFreqFactor and
//     OriginalMaxPositions (HF rope_type "llama3").
//   - "freq_factors": inverse frequency i is divided by FreqFactors[i] (GGUF rope_freqs.weight, which is how
//     llama.cpp stores llama3 scaling).
//
// Config.RopeInverseFrequencies applies it.
type RopeScaling struct {
	Type                 string    `json:"type"`
	Factor               float64   `json:"factor,omitempty"`
	LowFreqFactor        float64   `json:"low_freq_factor,omitempty"`
	HighFreqFactor       float64   `json:"high_freq_factor,omitempty"`
	OriginalMaxPositions int       `json:"original_max_position_embeddings,omitempty"`
	FreqFactors          []float64 `json:"freq_factors,omitempty"`
}

// Load reads a checkpoint: a GGUF file, or a Hugging Face folder with config.json and model.safetensors (or a
// sharded model.safetensors.index.json). Weights come back as float32 host tensors keyed by HF names, Linear
// weights as [out, in], whatever the file layout was.
func Load(path string) (*Pretrained, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return loadHF(path)
	}
	var magic [4]byte
	f, _, err := fileio.Open(path)
	if err != nil {
		return nil, err
	}
	_, err = io.ReadFull(f, magic[:])
	f.Close()
	if err == nil && string(magic[:]) == "GGUF" {
		return loadGGUF(path)
	}
	if filepath.Ext(path) == ".safetensors" {
		return nil, fmt.Errorf("%s: pass the folder that holds it and config.json, not the weights file", path)
	}
	return nil, fmt.Errorf("%s: neither a GGUF file nor a folder with config.json and model.safetensors", path)
}

// RopeInverseFrequencies returns the HeadDim/2 RoPE inverse frequencies θ^(-2i/d), adjusted by c.RopeScaling.
// Pair i rotates dimensions (i, i+HeadDim/2) in HF's rotate-half layout.
func (c *Config) RopeInverseFrequencies() ([]float64, error) {
	if c.HeadDim <= 0 || c.HeadDim%2 != 0 || c.RopeTheta <= 0 {
		return nil, fmt.Errorf("config: rope needs an even head_dim (%d) and a positive rope_theta (%g)",
			c.HeadDim, c.RopeTheta)
	}
	half := c.HeadDim / 2
	inv := make([]float64, half)
	for i := range inv {
		inv[i] = math.Pow(c.RopeTheta, -float64(2*i)/float64(c.HeadDim))
	}
	s := c.RopeScaling
	if s == nil {
		return inv, nil
	}
	switch s.Type {
	case "linear":
		if s.Factor <= 0 {
			return nil, fmt.Errorf("config: linear rope scaling factor %g must be positive", s.Factor)
		}
		for i := range inv {
			inv[i] /= s.Factor
		}
	case "llama3":
		// Same formula as transformers' _compute_llama3_parameters: long wavelengths are slowed down by Factor,
		// short ones kept, and the band between interpolated smoothly.
		if s.Factor <= 0 || s.LowFreqFactor <= 0 || s.HighFreqFactor <= s.LowFreqFactor || s.OriginalMaxPositions <= 0 {
			return nil, fmt.Errorf("config: invalid llama3 rope scaling %+v", *s)
		}
		old := float64(s.OriginalMaxPositions)
		lowWavelen, highWavelen := old/s.LowFreqFactor, old/s.HighFreqFactor
		for i, f := range inv {
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen < highWavelen:
			case wavelen > lowWavelen:
				inv[i] = f / s.Factor
			default:
				smooth := (old/wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				inv[i] = (1-smooth)*f/s.Factor + smooth*f
			}
		}
	case "freq_factors":
		if len(s.FreqFactors) != half {
			return nil, fmt.Errorf("config: %d rope frequency factors for head_dim %d (want %d)",
				len(s.FreqFactors), c.HeadDim, half)
		}
		for i, ff := range s.FreqFactors {
			if !(ff > 0) {
				return nil, fmt.Errorf("config: rope frequency factor %d is %g, must be positive", i, ff)
			}
			inv[i] /= ff
		}
	default:
		return nil, fmt.Errorf("config: rope scaling type %q is not supported", s.Type)
	}
	return inv, nil
}

// Sanity limits: they keep size arithmetic far from overflow; real checks are against the file size.
const (
	maxConfigDim = 1 << 24 // any single configured size (hidden, vocab, layers, ...)
	maxHeadDim   = 1 << 16 // real models use 64 to 256
)

// tensorSource locates one tensor's bytes in a file, already translated to HF naming and shape.
type tensorSource struct {
	file   string // path of the file that holds it, for errors and reading
	name   string // the name inside that file (GGUF or safetensors), for errors
	dtype  string
	shape  []int // HF order, outermost first
	offset int64 // absolute byte offset in file
}

// checkSources compares the tensors found in a file against what cfg needs. `where` names the file or folder;
// ggufNames adds llama.cpp names to errors about missing tensors.
func checkSources(where string, cfg *Config, srcs map[string]*tensorSource, ggufNames bool) error {
	// The tensors present are bounded by the file size; the configured layer count is not. Find a missing layer
	// before ExpectedShapes sizes a map from it (a crafted config with 2^24 layers would take gigabytes).
	if perLayer := 9; cfg.NumLayers > len(srcs)/perLayer {
		for l := range min(cfg.NumLayers, len(srcs)/perLayer+1) {
			name := fmt.Sprintf("model.layers.%d.self_attn.q_proj.weight", l)
			if _, ok := srcs[name]; ok {
				continue
			}
			if g, ok := GGUFNameFromHF(name); ok && ggufNames {
				return fmt.Errorf("%s: tensor %q (%s) is missing: the config has %d layers, the file %d tensors",
					where, g, name, cfg.NumLayers, len(srcs))
			}
			return fmt.Errorf("%s: tensor %q is missing: the config has %d layers, the weights %d tensors",
				where, name, cfg.NumLayers, len(srcs))
		}
		return fmt.Errorf("%s: the config has %d layers, but the weights hold only %d tensors", where, cfg.NumLayers, len(srcs))
	}
	want := cfg.ExpectedShapes()
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		src, ok := srcs[name]
		if !ok {
			if g, ok := GGUFNameFromHF(name); ok && ggufNames {
				return fmt.Errorf("%s: tensor %q (%s) is missing", where, g, name)
			}
			return fmt.Errorf("%s: tensor %q is missing", where, name)
		}
		if !slices.Equal(src.shape, want[name]) {
			return fmt.Errorf("%s: tensor %q: shape %v (HF layout), config needs %v", src.file, src.name, src.shape, want[name])
		}
	}
	var extra []string
	for name := range srcs {
		if _, ok := want[name]; !ok {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		src := srcs[extra[0]]
		return fmt.Errorf("%s: tensor %q is not part of a %s model with this config (%d unexpected tensors)",
			src.file, src.name, cfg.Architecture, len(extra))
	}
	return nil
}

// storageDTypes reports each source's storage dtype and the dtype that holds the most elements.
func storageDTypes(srcs map[string]*tensorSource) (map[string]string, string) {
	dtypes := make(map[string]string, len(srcs))
	perDType := map[string]int64{}
	for name, src := range srcs {
		n, _ := dtype.Elements(src.shape) // checked when the source was made
		dtypes[name] = src.dtype
		perDType[src.dtype] += n
	}
	dominant := ""
	// Ties go to the first of F32, BF16, F16, then the quantizations by name.
	order := []string{dtype.F32, dtype.BF16, dtype.F16}
	for _, dt := range slices.Sorted(maps.Keys(perDType)) {
		if dtype.Quantized(dt) {
			order = append(order, dt)
		}
	}
	for _, dt := range order {
		if perDType[dt] > perDType[dominant] {
			dominant = dt
		}
	}
	return dtypes, dominant
}

// readTensor reads and converts one tensor to float32, a bounded chunk at a time, and refuses NaN and infinite
// values.
func readTensor(f *os.File, src *tensorSource) (*Tensor, error) {
	n, err := dtype.Elements(src.shape)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", src.file, src.name, err)
	}
	out, err := dtype.ReadAt(f, src.offset, src.dtype, n)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", src.file, src.name, err)
	}
	if err := checkFinite(src, out, 0); err != nil {
		return nil, err
	}
	return &Tensor{Shape: slices.Clone(src.shape), Data: out}, nil
}

// checkFinite refuses NaN and infinite values: one poisons every activation downstream; it means a corrupt file.
// values start at index base of the tensor (a chunk of it; the count is then the chunk's).
func checkFinite(src *tensorSource, values []float32, base int) error {
	bad, first := 0, -1
	for i, v := range values {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			if bad == 0 {
				first = i
			}
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%s: tensor %q: %d values are NaN or infinite (the first at index %d)", src.file, src.name, bad, base+first)
	}
	return nil
}

// checkConfig validates sizes read from a file before anything is sized from them. `where` names the file.
func checkConfig(where string, c *Config) error {
	for _, v := range []struct {
		name string
		val  int
	}{
		{"hidden size", c.HiddenSize}, {"intermediate size", c.IntermediateSize}, {"layer count", c.NumLayers},
		{"head count", c.NumHeads}, {"key/value head count", c.NumKVHeads}, {"head dim", c.HeadDim},
		{"vocab size", c.VocabSize}, {"max positions", c.MaxPositions},
	} {
		if v.val <= 0 || v.val > maxConfigDim {
			return fmt.Errorf("%s: %s %d is out of range", where, v.name, v.val)
		}
	}
	// RopeInverseFrequencies below allocates HeadDim/2 values: keep a crafted head_dim from sizing it.
	if c.HeadDim > maxHeadDim {
		return fmt.Errorf("%s: head dim %d is out of range (at most %d)", where, c.HeadDim, maxHeadDim)
	}
	if !(c.RMSNormEps > 0) || !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		return fmt.Errorf("%s: rms_norm_eps %g and rope_theta %g must be positive", where, c.RMSNormEps, c.RopeTheta)
	}
	if c.SlidingWindow < 0 {
		return fmt.Errorf("%s: sliding window %d is negative", where, c.SlidingWindow)
	}
	if c.BOSTokenID < -1 || c.BOSTokenID >= c.VocabSize {
		return fmt.Errorf("%s: bos token id %d is outside the vocabulary (%d)", where, c.BOSTokenID, c.VocabSize)
	}
	for _, id := range c.EOSTokenIDs {
		if id < 0 || id >= c.VocabSize {
			return fmt.Errorf("%s: eos token id %d is outside the vocabulary (%d)", where, id, c.VocabSize)
		}
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if _, err := c.RopeInverseFrequencies(); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

// shortFloat turns a float32 read from a file into the float64 with the same shortest decimal form
// (1e-5f → 1e-5, not 9.99999974737875e-06), so configs from GGUF and config.json compare equal.
func shortFloat(f float32) float64 {
	v, err := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	if err != nil {
		return float64(f)
	}
	return v
}

// appendUnique appends ids not yet in list.
func appendUnique(list []int, ids ...int) []int {
	for _, id := range ids {
		if !slices.Contains(list, id) {
			list = append(list, id)
		}
	}
	return list
}
