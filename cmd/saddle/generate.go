package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/saddle-ml/saddle/finetune"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/tokenizer"
)

type generateResult struct {
	Text            string  `json:"text"`
	Completion      string  `json:"completion"`
	PromptTokens    int     `json:"prompt_tokens"`
	GeneratedTokens int     `json:"generated_tokens"`
	Tokens          []int   `json:"tokens"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	Backend         string  `json:"backend"`
}

func newGenerateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Generate text from a prompt with KV-cached decoding (an empty prompt starts from BOS)",
		Args:  cobra.NoArgs,
		RunE:  runGenerate,
	}
	addModelFlag(cmd)
	addJSONFlag(cmd)
	f := cmd.Flags()
	f.String("prompt", "", "prompt text; empty starts from BOS")
	f.Int("max-tokens", 128, "most new tokens to generate")
	f.String("dtype", "auto", "compute type of the model's matmuls: auto, f32, bf16 or f16 (weights stay in their file's dtype)")
	f.Float64("temperature", 0.8, "sampling temperature; 0 is greedy")
	f.Float64("top-p", 0.95, "nucleus sampling: keep the smallest set of tokens with this much probability (1 = off)")
	f.Int("top-k", 0, "keep only the k most likely tokens (0 = off)")
	f.Uint64("seed", 0, "random seed for sampling")
	f.IntSlice("stop-token", nil, "extra token ids that end generation (EOS and BOS always do)")
	f.String("adapter", "", "a trained adapter: the --out folder of 'saddle train'")
	addMemoryCheckFlag(cmd)
	return cmd
}

func runGenerate(cmd *cobra.Command, _ []string) error {
	f := cmd.Flags()
	maxTokens, _ := f.GetInt("max-tokens")
	var s model.Sampling
	s.Temperature, _ = f.GetFloat64("temperature")
	s.TopP, _ = f.GetFloat64("top-p")
	s.TopK, _ = f.GetInt("top-k")
	s.Seed, _ = f.GetUint64("seed")
	extraStops, _ := f.GetIntSlice("stop-token")
	if maxTokens < 0 {
		return usagef("--max-tokens %d must be >= 0", maxTokens)
	}
	if err := s.Validate(); err != nil {
		return usageError{err}
	}
	src, err := resolveModel(cmd)
	if err != nil {
		return err
	}
	path := src.Path
	tok, err := loadTokenizer(path)
	if err != nil {
		return err
	}
	pretrained, err := model.Load(path)
	if err != nil {
		return err
	}
	b, backendName, err := newBackend(cmd)
	if err != nil {
		return err
	}
	cfg := pretrained.Config
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := checkVocab(path, tok.VocabSize(), cfg); err != nil {
		return err
	}
	prompt := flagString(cmd, "prompt")
	ids := tok.Encode(prompt, true)
	if len(ids) == 0 || (prompt == "" && ids[0] != tok.BOS()) {
		if tok.BOS() < 0 {
			return fmt.Errorf("%s: the prompt is empty and the tokenizer has no BOS token to start from", path)
		}
		ids = append([]int{tok.BOS()}, ids...)
	}
	for _, id := range extraStops {
		if id < 0 || id >= cfg.VocabSize {
			return usagef("--stop-token %d is outside the vocabulary (0..%d)", id, cfg.VocabSize-1)
		}
	}
	stops := slices.Concat(tok.EOS(), cfg.EOSTokenIDs, extraStops)
	if tok.BOS() >= 0 {
		stops = append(stops, tok.BOS())
	}
	capacity := min(len(ids)+maxTokens, cfg.MaxPositions)
	if len(ids) > capacity {
		return fmt.Errorf("prompt has %d tokens, more than the model's context of %d", len(ids), cfg.MaxPositions)
	}
	if err := checkGenerateMemory(cmd, pretrained, capacity); err != nil {
		return err
	}
	m, err := newModel(cmd, b, pretrained, "")
	if err != nil {
		return err
	}
	hook, extra, err := loadAdapter(flagString(cmd, "adapter"), m)
	if err != nil {
		return err
	}
	dec, err := m.NewDecoder(capacity, hook, extra)
	if err != nil {
		return err
	}
	defer dec.Close()

	asJSON := flagBool(cmd, "json")
	var stream *textStream
	if !asJSON {
		stream = newTextStream(tok, ids, cmd.OutOrStdout())
	}
	start := time.Now()
	out, err := model.Generate(dec, ids, maxTokens, model.NewSampler(s), stops, func(id int) error {
		if stream != nil {
			return stream.push(id)
		}
		return nil
	})
	elapsed := time.Since(start)
	if err != nil {
		return err
	}
	all := slices.Concat(ids, out)
	r := generateResult{
		Text:            tok.Decode(all, true),
		Completion:      strings.TrimPrefix(tok.Decode(all, true), tok.Decode(ids, true)),
		PromptTokens:    len(ids),
		GeneratedTokens: len(out),
		Tokens:          out,
		TokensPerSecond: float64(len(out)) / elapsed.Seconds(),
		Backend:         backendName,
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), r)
	}
	stream.finish()
	if len(out) < maxTokens && len(all) >= capacity {
		fmt.Fprintf(cmd.ErrOrStderr(), "saddle: stopped at the model's context of %d tokens\n", m.Config.MaxPositions)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "[%d prompt + %d generated tokens, %.1f tokens/s, backend %s]\n", len(ids), len(out), r.TokensPerSecond, backendName)
	return nil
}

// checkGenerateMemory refuses, unless --no-memory-check, to load a model whose weights and KV cache for capacity
// positions clearly exceed the memory available.
func checkGenerateMemory(cmd *cobra.Command, p *model.Pretrained, capacity int) error {
	est, err := finetune.EstimateGeneration(p.Config, weightStorage(p), "auto", capacity)
	if err != nil {
		return err
	}
	avail, known := availableMemory()
	if !known || flagBool(cmd, "no-memory-check") || !est.Exceeds(avail) {
		return nil
	}
	return fmt.Errorf("%s: generating %d positions needs about %s of memory (%s), more than the %s available (%s); use a "+
		"smaller model or a machine with more memory, or pass --no-memory-check to try anyway", p.Path, capacity,
		finetune.FormatBytes(est.Total), est.Parts(), finetune.FormatBytes(avail.Bytes), avail.Source)
}

// loadAdapter reads an adapter for m: saddle's (a run's --out folder, or its latest checkpoint) or a PEFT LoRA
// adapter folder; an empty dir means none.
func loadAdapter(dir string, m *model.Model) (func([]*graph.Node) model.LinearHook, []*tensors.Tensor, error) {
	if dir == "" {
		return nil, nil, nil
	}
	set, err := lora.LoadAny(dir, m.Config)
	if err != nil {
		return nil, nil, err
	}
	return func(params []*graph.Node) model.LinearHook { return set.Hook(params, nil) }, set.Tensors(), nil
}

// textStream prints decoded text as tokens arrive. It decodes the whole sequence each time, so spaces that
// depend on neighbours come out right, and holds back a trailing partial UTF-8 character (byte-fallback tokens).
type textStream struct {
	tok     *tokenizer.Tokenizer
	ids     []int
	printed string
	w       io.Writer
}

func newTextStream(tok *tokenizer.Tokenizer, prompt []int, w io.Writer) *textStream {
	s := &textStream{tok: tok, ids: slices.Clone(prompt), w: w}
	s.flush(false)
	return s
}

func (s *textStream) push(id int) error {
	s.ids = append(s.ids, id)
	return s.flush(false)
}

func (s *textStream) flush(final bool) error {
	text := s.tok.Decode(s.ids, true)
	if !final {
		text = strings.TrimRight(text, string(utf8.RuneError))
	}
	if !strings.HasPrefix(text, s.printed) {
		return nil // an earlier character is still being completed; print once it settles
	}
	_, err := io.WriteString(s.w, text[len(s.printed):])
	s.printed = text
	return err
}

func (s *textStream) finish() {
	s.flush(true)
	fmt.Fprintln(s.w)
}
