package model

import (
	"fmt"
	"slices"

	"github.com/gomlx/compute/shapes"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
)

// Decoder runs KV-cached decoding of one sequence: Prefill feeds the prompt, Step feeds one token at a time.
// Both use one graph function; prompt lengths are padded to powers of two so few graphs get compiled.
type Decoder struct {
	m        *Model
	hook     LinearHook
	extra    []*tensors.Tensor // inputs the hook's graph needs (adapter weights), after the base weights
	capacity int
	exec     *Exec
	cache    []*tensors.Tensor // keys for every layer, then values
	pos      int               // number of positions already in the cache
}

// NewDecoder prepares a cache holding capacity positions. hook and extra let an adapter join the graph: hook gets
// the extra tensors as graph nodes through hookInputs.
func (m *Model) NewDecoder(capacity int, hook func(extra []*Node) LinearHook, extra []*tensors.Tensor) (*Decoder, error) {
	if capacity <= 0 {
		return nil, fmt.Errorf("decoder capacity %d must be positive", capacity)
	}
	d := &Decoder{m: m, capacity: capacity, extra: extra}
	n, ne, layers := len(m.Names), len(extra), m.Config.NumLayers
	var err error
	d.exec, err = NewExec(m.Backend, func(inputs []*Node) []*Node {
		w := m.Weights(inputs[:n])
		var h LinearHook
		if hook != nil {
			h = hook(inputs[n : n+ne])
		}
		rest := inputs[n+ne:]
		cache := &KVCache{Keys: slices.Clone(rest[:layers]), Values: slices.Clone(rest[layers : 2*layers])}
		tokens, start, last := rest[2*layers], rest[2*layers+1], rest[2*layers+2]
		hidden := m.Config.Hidden(w, tokens, start, cache, h)
		// Gather, not DynamicSlice: the Go backend lacks DynamicSlice.
		hidden = Gather(Reshape(hidden, -1, m.Config.HiddenSize), Reshape(last, 1, 1))
		logits := Reshape(m.Config.Logits(w, hidden), m.Config.VocabSize)
		return append([]*Node{logits}, append(cache.Keys, cache.Values...)...)
	})
	if err != nil {
		return nil, err
	}
	d.Reset()
	return d, nil
}

// Reset empties the cache.
func (d *Decoder) Reset() {
	c := d.m.Config
	d.cache = d.cache[:0]
	for range 2 * c.NumLayers {
		d.cache = append(d.cache, tensors.FromShape(shapes.Make(d.m.DType, 1, c.NumKVHeads, d.capacity, c.HeadDim)))
	}
	d.pos = 0
}

// Pos is the number of positions consumed so far.
func (d *Decoder) Pos() int { return d.pos }

// Capacity is the most positions the cache holds.
func (d *Decoder) Capacity() int { return d.capacity }

// Prefill feeds tokens (appending to what the cache holds) and returns the logits after the last one.
func (d *Decoder) Prefill(tokens []int) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("prefill needs at least one token")
	}
	if d.pos+len(tokens) > d.capacity {
		return nil, fmt.Errorf("context full: %d positions used + %d new > capacity %d", d.pos, len(tokens), d.capacity)
	}
	padded := len(tokens)
	if padded > 1 {
		padded = min(nextPow2(padded), d.capacity-d.pos)
	}
	ids := make([]int32, padded)
	for i, t := range tokens {
		ids[i] = int32(t)
	}
	// Padding after the last real token writes junk into cache slots that later steps overwrite before reading.
	args := append(d.m.Args(append(slices.Clone(d.extra), d.cache...)...), tensors.FromFlatDataAndDimensions(ids, 1, padded), int32(d.pos), int32(len(tokens)-1))
	out, err := d.exec.Exec(args...)
	if err != nil {
		return nil, err
	}
	for _, t := range d.cache {
		t.MustFinalizeAll()
	}
	d.cache = out[1:]
	d.pos += len(tokens)
	logits, err := toFloat32(out[0])
	out[0].MustFinalizeAll()
	return logits, err
}

// Step feeds one token and returns the logits for the next.
func (d *Decoder) Step(token int) ([]float32, error) { return d.Prefill([]int{token}) }

// Close releases the compiled graphs and the cache.
func (d *Decoder) Close() {
	d.exec.Finalize()
	for _, t := range d.cache {
		t.MustFinalizeAll()
	}
	d.cache = nil
}

func nextPow2(n int) int {
	p := 1
	for p < n {
		p *= 2
	}
	return p
}
