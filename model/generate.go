package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
)

// Sampling chooses the next token from logits. Temperature 0 is greedy (argmax, ties to the lowest id).
type Sampling struct {
	Temperature float64
	TopK        int     // 0 = no limit
	TopP        float64 // 0 or 1 = no nucleus cut
	Seed        uint64
}

// Validate rejects settings that have no meaning.
func (s Sampling) Validate() error {
	switch {
	case s.Temperature < 0 || math.IsNaN(s.Temperature) || math.IsInf(s.Temperature, 0):
		return fmt.Errorf("temperature %g must be a finite number >= 0", s.Temperature)
	case s.TopK < 0:
		return fmt.Errorf("top-k %d must be >= 0", s.TopK)
	case s.TopP < 0 || s.TopP > 1 || math.IsNaN(s.TopP):
		return fmt.Errorf("top-p %g must be in [0, 1]", s.TopP)
	}
	return nil
}

// Sampler draws tokens reproducibly from a seed.
type Sampler struct {
	Sampling
	rng *rand.Rand
}

// NewSampler seeds a sampler.
func NewSampler(s Sampling) *Sampler {
	return &Sampler{Sampling: s, rng: rand.New(rand.NewPCG(s.Seed, 0x5add1e))}
}

// Next picks a token id from logits.
func (s *Sampler) Next(logits []float32) int {
	if s.Temperature == 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return best
	}
	ids := make([]int, len(logits))
	for i := range ids {
		ids[i] = i
	}
	sort.SliceStable(ids, func(a, b int) bool { return logits[ids[a]] > logits[ids[b]] })
	if s.TopK > 0 && s.TopK < len(ids) {
		ids = ids[:s.TopK]
	}
	probs := make([]float64, len(ids))
	maxLogit := float64(logits[ids[0]])
	total := 0.0
	for i, id := range ids {
		probs[i] = math.Exp((float64(logits[id]) - maxLogit) / s.Temperature)
		total += probs[i]
	}
	if s.TopP > 0 && s.TopP < 1 {
		cum := 0.0
		for i := range probs {
			cum += probs[i] / total
			if cum >= s.TopP {
				ids, probs = ids[:i+1], probs[:i+1]
				break
			}
		}
		total = 0
		for _, p := range probs {
			total += p
		}
	}
	r := s.rng.Float64() * total
	for i, p := range probs {
		r -= p
		if r < 0 {
			return ids[i]
		}
	}
	return ids[len(ids)-1]
}

// TokenDecoder is one sequence's KV-cached decoding: the graph Decoder (any backend) or a CPUDecoder of one slot.
type TokenDecoder interface {
	// Prefill feeds tokens after those already consumed and returns the logits after the last one.
	Prefill(tokens []int) ([]float32, error)
	// Step feeds one token and returns the logits for the next.
	Step(token int) ([]float32, error)
	Pos() int
	Capacity() int
	Close()
}

// NewTokenDecoder returns the fastest decoder for m: the CPU decoder where it applies (the Go backend), else the
// graph Decoder. kind "auto" chooses; "cpu" and "graph" insist. adapters go to the CPU decoder, hook and extra to
// the graph (see NewDecoder); pass both forms of the same adapter, or neither.
func (m *Model) NewTokenDecoder(kind string, capacity int, adapters map[string]*LowRank, hook func([]*Node) LinearHook, extra []*tensors.Tensor) (TokenDecoder, error) {
	switch kind {
	case "auto", "cpu":
		err := m.CPUDecodeSupported()
		if err == nil {
			return m.NewCPUDecoder(capacity, 1, adapters)
		}
		if kind == "cpu" {
			return nil, err
		}
		fallthrough
	case "graph":
		return m.NewDecoder(capacity, hook, extra)
	}
	return nil, fmt.Errorf("decoder %q: use auto, cpu or graph", kind)
}

// Generate feeds prompt (at least one token) and samples up to maxTokens new tokens, stopping after any id in stop
// (the stop token is not emitted). onToken sees each new token as it is produced; returning an error stops.
func Generate(d TokenDecoder, prompt []int, maxTokens int, s *Sampler, stop []int, onToken func(id int) error) ([]int, error) {
	if len(prompt) == 0 {
		return nil, fmt.Errorf("generation needs a non-empty prompt (start from BOS for an empty one)")
	}
	if len(prompt) > d.Capacity() {
		return nil, fmt.Errorf("prompt has %d tokens, more than the context of %d", len(prompt), d.Capacity())
	}
	logits, err := d.Prefill(prompt)
	if err != nil {
		return nil, err
	}
	var out []int
	for len(out) < maxTokens {
		next := s.Next(logits)
		if slices.Contains(stop, next) {
			break
		}
		out = append(out, next)
		if onToken != nil {
			if err := onToken(next); err != nil {
				return out, err
			}
		}
		if len(out) == maxTokens || d.Pos() >= d.Capacity() {
			break
		}
		if logits, err = d.Step(next); err != nil {
			return out, err
		}
	}
	return out, nil
}

// GenerateBatch generates for several prompts at once on a CPU decoder with at least len(prompts) slots: the
// prompts are fed together, then every unfinished sequence gets its next token in the same pass, so each pass reads
// the weights once for all of them. samplers[i] draws sequence i's tokens; onToken (may be nil) sees each new token.
func GenerateBatch(d *CPUDecoder, prompts [][]int, maxTokens int, samplers []*Sampler, stop []int, onToken func(seq, id int) error) ([][]int, error) {
	if len(prompts) > d.Batch() || len(samplers) != len(prompts) {
		return nil, fmt.Errorf("%d prompts, %d samplers and %d decoder slots", len(prompts), len(samplers), d.Batch())
	}
	slots := make([]int, len(prompts))
	for i, p := range prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("prompt %d is empty (start from BOS for an empty one)", i+1)
		}
		if len(p) > d.Capacity() {
			return nil, fmt.Errorf("prompt %d has %d tokens, more than the context of %d", i+1, len(p), d.Capacity())
		}
		d.ResetSlot(i)
		slots[i] = i
	}
	logits, err := d.Feed(slots, prompts)
	if err != nil {
		return nil, err
	}
	out := make([][]int, len(prompts))
	if maxTokens <= 0 {
		return out, nil
	}
	for len(slots) > 0 {
		var next []int
		var feed [][]int
		for j, i := range slots {
			id := samplers[i].Next(logits[j])
			if slices.Contains(stop, id) {
				continue
			}
			out[i] = append(out[i], id)
			if onToken != nil {
				if err := onToken(i, id); err != nil {
					return out, err
				}
			}
			if len(out[i]) < maxTokens && d.PosOf(i) < d.Capacity() {
				next, feed = append(next, i), append(feed, []int{id})
			}
		}
		if slots = next; len(slots) == 0 {
			break
		}
		if logits, err = d.Feed(slots, feed); err != nil {
			return out, err
		}
	}
	return out, nil
}
