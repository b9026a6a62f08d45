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

	"github.com/saddle-ml/saddle/finetune"
	"github.com/saddle-ml/saddle/internal/fileio"
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
	f.String("prompts-file", "", "generate for every non-empty line of this file at once (batched on the CPU decoder); "+
		"instead of --prompt")
	f.String("decoder", "auto", "auto (the CPU decoder on the Go backend, else the graph), cpu or graph")
	f.Bool("chat", false, "wrap --prompt (or each --prompts-file line) as one user message in the model's chat template, with the generation prompt (instruct models)")
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
	prompts, err := generatePrompts(cmd, tok, path)
	if err != nil {
		return err
	}
	for _, id := range extraStops {
		if id < 0 || id >= cfg.VocabSize {
			return usagef("--stop-token %d is outside the vocabulary (0..%d)", id, cfg.VocabSize-1)
		}
	}
	kind := flagString(cmd, "decoder")
	if !slices.Contains([]string{"auto", "cpu", "graph"}, kind) {
		return usagef("--decoder %q: use auto, cpu or graph", kind)
	}
	stops := slices.Concat(tok.EOS(), cfg.EOSTokenIDs, extraStops)
	if tok.BOS() >= 0 {
		stops = append(stops, tok.BOS())
	}
	longest := 0
	for _, ids := range prompts {
		longest = max(longest, len(ids))
	}
	capacity := min(longest+maxTokens, cfg.MaxPositions)
	if longest > capacity {
		return fmt.Errorf("prompt has %d tokens, more than the model's context of %d", longest, cfg.MaxPositions)
	}
	if err := checkGenerateMemory(cmd, pretrained, capacity*len(prompts)); err != nil {
		return err
	}
	m, err := newModel(cmd, b, pretrained, "")
	if err != nil {
		return err
	}
	set, err := loadAdapterSet(flagString(cmd, "adapter"), m)
	if err != nil {
		return err
	}
	if kind == "cpu" {
		if err := m.CPUDecodeSupported(); err != nil {
			return usagef("--decoder cpu: %v", err)
		}
	}
	if len(prompts) > 1 {
		return generateMany(cmd, m, tok, set, kind, prompts, capacity, maxTokens, s, stops, backendName)
	}
	ids := prompts[0]
	dec, err := newTokenDecoder(m, set, kind, capacity)
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
	r := newGenerateResult(tok, ids, out, elapsed, backendName)
	if asJSON {
		return printJSON(cmd.OutOrStdout(), r)
	}
	stream.finish()
	if len(out) < maxTokens && len(ids)+len(out) >= capacity {
		fmt.Fprintf(cmd.ErrOrStderr(), "saddle: stopped at the model's context of %d tokens\n", m.Config.MaxPositions)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "[%d prompt + %d generated tokens, %.1f tokens/s, backend %s, %s decoder]\n", len(ids), len(out),
		r.TokensPerSecond, backendName, decoderName(dec))
	return nil
}

func newGenerateResult(tok *tokenizer.Tokenizer, ids, out []int, elapsed time.Duration, backendName string) generateResult {
	all := slices.Concat(ids, out)
	return generateResult{
		Text:            tok.Decode(all, true),
		Completion:      strings.TrimPrefix(tok.Decode(all, true), tok.Decode(ids, true)),
		PromptTokens:    len(ids),
		GeneratedTokens: len(out),
		Tokens:          out,
		TokensPerSecond: float64(len(out)) / elapsed.Seconds(),
		Backend:         backendName,
	}
}

func decoderName(d model.TokenDecoder) string {
	if _, ok := d.(*model.CPUDecoder); ok {
		return "cpu"
	}
	return "graph"
}

// generatePrompts returns the token ids of --prompt, or of every non-empty line of --prompts-file, each wrapped in
// the chat template with --chat; an empty --prompt starts from BOS.
func generatePrompts(cmd *cobra.Command, tok *tokenizer.Tokenizer, modelPath string) ([][]int, error) {
	file := flagString(cmd, "prompts-file")
	texts := []string{flagString(cmd, "prompt")}
	if file != "" {
		if cmd.Flags().Changed("prompt") {
			return nil, usagef("--prompt and --prompts-file: give one of them")
		}
		data, err := fileio.ReadFile(file)
		if err != nil {
			return nil, err
		}
		texts = nil
		for line := range strings.Lines(string(data)) {
			if line = strings.TrimRight(line, "\r\n"); strings.TrimSpace(line) != "" {
				texts = append(texts, line)
			}
		}
		if len(texts) == 0 {
			return nil, fmt.Errorf("%s: no prompts (one per line; empty lines are skipped)", file)
		}
	}
	var prompts [][]int
	for _, text := range texts {
		var ids []int
		if flagBool(cmd, "chat") {
			var err error
			if ids, err = chatPrompt(modelPath, tok, text); err != nil {
				return nil, err
			}
		} else {
			ids = tok.Encode(text, true)
		}
		if len(ids) == 0 || (text == "" && ids[0] != tok.BOS()) {
			if tok.BOS() < 0 {
				return nil, fmt.Errorf("%s: the prompt is empty and the tokenizer has no BOS token to start from", modelPath)
			}
			ids = append([]int{tok.BOS()}, ids...)
		}
		prompts = append(prompts, ids)
	}
	return prompts, nil
}

// newTokenDecoder builds one sequence's decoder with the adapter (nil: none) in the form that decoder takes.
func newTokenDecoder(m *model.Model, set *lora.Set, kind string, capacity int) (model.TokenDecoder, error) {
	if set == nil {
		return m.NewTokenDecoder(kind, capacity, nil, nil, nil)
	}
	hook := func(params []*graph.Node) model.LinearHook { return set.Hook(params, nil) }
	return m.NewTokenDecoder(kind, capacity, set.LowRank(), hook, set.Tensors())
}

// generateMany generates for several prompts: together on the CPU decoder, one after another on the graph.
func generateMany(cmd *cobra.Command, m *model.Model, tok *tokenizer.Tokenizer, set *lora.Set, kind string, prompts [][]int,
	capacity, maxTokens int, s model.Sampling, stops []int, backendName string) error {
	samplers := make([]*model.Sampler, len(prompts))
	for i := range samplers {
		si := s
		si.Seed += uint64(i) // each prompt its own stream, the first the same as a single --prompt's
		samplers[i] = model.NewSampler(si)
	}
	outs := make([][]int, len(prompts))
	start := time.Now()
	name := "graph"
	if kind != "graph" && m.CPUDecodeSupported() == nil {
		name = "cpu"
		var adapters map[string]*model.LowRank
		if set != nil {
			adapters = set.LowRank()
		}
		dec, err := m.NewCPUDecoder(capacity, len(prompts), adapters)
		if err != nil {
			return err
		}
		defer dec.Close()
		if outs, err = model.GenerateBatch(dec, prompts, maxTokens, samplers, stops, nil); err != nil {
			return err
		}
	} else {
		for i, ids := range prompts {
			dec, err := newTokenDecoder(m, set, kind, capacity)
			if err != nil {
				return err
			}
			outs[i], err = model.Generate(dec, ids, maxTokens, samplers[i], stops, nil)
			dec.Close()
			if err != nil {
				return err
			}
		}
	}
	elapsed := time.Since(start)
	results := make([]generateResult, len(prompts))
	total := 0
	for i := range prompts {
		results[i] = newGenerateResult(tok, prompts[i], outs[i], elapsed, backendName)
		total += len(outs[i])
	}
	if flagBool(cmd, "json") {
		return printJSON(cmd.OutOrStdout(), results)
	}
	for i, r := range results {
		fmt.Fprintf(cmd.OutOrStdout(), "[%d]\t%s\n", i+1, strings.ReplaceAll(r.Text, "\n", "\\n"))
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "[%d prompts, %d generated tokens, %.1f tokens/s in all, backend %s, %s decoder]\n",
		len(prompts), total, float64(total)/elapsed.Seconds(), backendName, name)
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

// loadAdapterSet reads an adapter for m: saddle's (a run's --out folder, or its latest checkpoint) or a PEFT LoRA
// adapter folder; an empty dir means none (nil).
func loadAdapterSet(dir string, m *model.Model) (*lora.Set, error) {
	if dir == "" {
		return nil, nil
	}
	return lora.LoadAny(dir, m.Config)
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
