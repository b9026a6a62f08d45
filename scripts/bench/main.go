// Command bench measures saddle's training and generation speed on the workloads, using the packages
// directly (model.New, lora.Attach, finetune.NewStepper + TrainStep; model.NewDecoder + model.Generate). Its PyTorch
// peer is peer.py beside it; scripts/bench.sh runs both in one go and prints the comparison.
//
//	bench -mode train -model DIR [-batch 16 -seq 256 -steps 5 -warmup 1]
//	bench -mode generate -model DIR [-prompt 8 -new-tokens 128 -steps 3 -decoder auto|cpu|graph -gen-batch 1]
//	bench -mode stream [-stream-mib 1024 -steps 5]
//	bench -mode matmul [-steps 5]          (the backend's 1024² f32 matmul rate)
//	bench -write-synth DIR [-hidden 512 -layers 8 -heads 8 -kv-heads 4 -ffn 1408 -vocab 32000]
//	bench -write-shape qwen3-0.6b|llama-3.2-1b|llama-3.1-8b DIR
//
// DIR is an HF folder (config.json + model.safetensors or shards). -write-synth creates one with random weights so
// that both sides load the very same model; -write-shape creates one with the exact config.json, tensor shapes,
// shard layout and tokenizer of a published model (random bf16 weights; see shapes.go). Tokens come from a 64-bit
// LCG shared with peer.py, so the first step's loss (the adapters start at B = 0, i.e. at the base model) must
// agree between the two sides. Training takes the LoRA settings (-rank, -alpha, -targets; default r=8, α=16 on
// q,k,v,o) and -dtype / -grad-checkpoint. Prints one JSON object, with the peak RSS (VmHWM) and the time from
// process start to the end of the first optimizer step (loading and graph compilation included).
//
// Build with GOEXPERIMENT=simd: without it the Go backend's SIMD kernels are missing (10-30× slower).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/gomlx/compute"
	"github.com/saddle-ml/saddle/backend"
	"github.com/saddle-ml/saddle/finetune"
	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/internal/safetensors"
	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
	"github.com/saddle-ml/saddle/optimizers"
)

type options struct {
	mode, modelDir, backend, cpuProfile string
	batch, seq, steps, warmup           int
	prompt, newTokens                   int
	seed                                uint64
	rank                                int
	alpha                               float64
	targets, dtype                      string
	gradCheckpoint                      bool
	trainer                             string
	decoder                             string
	genBatch, streamMiB                 int
}

func main() {
	var o options
	var synth synthConfig
	var writeSynth, shape, tokenizerCache string
	flag.StringVar(&o.mode, "mode", "train", "train or generate")
	flag.StringVar(&o.modelDir, "model", "", "HF model folder (config.json + model.safetensors)")
	flag.StringVar(&o.backend, "backend", "go", "compute backend (go, xla:cuda, ...)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the timed steps to this file")
	flag.IntVar(&o.batch, "batch", 16, "training batch size")
	flag.IntVar(&o.seq, "seq", 256, "training sequence length")
	flag.IntVar(&o.steps, "steps", 5, "timed training steps, or timed generations")
	flag.IntVar(&o.warmup, "warmup", 1, "untimed steps first (graph compilation)")
	flag.IntVar(&o.prompt, "prompt", 8, "generation: prompt tokens")
	flag.IntVar(&o.newTokens, "new-tokens", 128, "generation: tokens to generate")
	flag.Uint64Var(&o.seed, "seed", 1, "token LCG seed")
	flag.IntVar(&o.rank, "rank", 8, "training: LoRA rank")
	flag.Float64Var(&o.alpha, "alpha", 16, "training: LoRA alpha (scale alpha/rank)")
	flag.StringVar(&o.targets, "targets", "q_proj,k_proj,v_proj,o_proj", "training: comma-separated LoRA targets (all-linear: q,k,v,o,gate,up,down)")
	flag.StringVar(&o.dtype, "dtype", "auto", "compute dtype of the frozen base: auto, f32, bf16 or f16")
	flag.StringVar(&o.decoder, "decoder", "auto", "generation: auto (CPU decoder on the Go backend), cpu or graph")
	flag.IntVar(&o.genBatch, "gen-batch", 1, "generation: sequences decoded together (the CPU decoder's batch; the prompt repeated)")
	flag.IntVar(&o.streamMiB, "stream-mib", 1024, "stream: MiB of memory to read and copy")
	flag.BoolVar(&o.gradCheckpoint, "grad-checkpoint", false, "training: recompute each block's activations in the backward pass")
	flag.StringVar(&o.trainer, "trainer", "auto", "training: auto (the CPU trainer on the Go backend), cpu or graph")
	flag.StringVar(&writeSynth, "write-synth", "", "write a random-weight Llama HF folder here and exit")
	flag.StringVar(&shape, "write-shape", "", "write a random-weight HF folder shaped like a real model ("+
		strings.Join(shapeNames(), ", ")+") into the folder given as argument, and exit")
	flag.StringVar(&tokenizerCache, "tokenizer-cache", os.Getenv("SADDLE_TOKENIZER_CACHE"),
		"-write-shape: where the real tokenizers are cached (default ~/.cache/saddle/tokenizers)")
	flag.IntVar(&synth.Hidden, "hidden", 512, "synthetic model: hidden size")
	flag.IntVar(&synth.Layers, "layers", 8, "synthetic model: layers")
	flag.IntVar(&synth.Heads, "heads", 8, "synthetic model: attention heads")
	flag.IntVar(&synth.KVHeads, "kv-heads", 4, "synthetic model: key/value heads")
	flag.IntVar(&synth.FFN, "ffn", 1408, "synthetic model: MLP intermediate size")
	flag.IntVar(&synth.Vocab, "vocab", 32000, "synthetic model: vocabulary size")
	flag.Parse()

	var err error
	var res map[string]any
	switch {
	case shape != "":
		if flag.NArg() != 1 {
			err = fmt.Errorf("-write-shape %s: give the folder to write as the one argument", shape)
			break
		}
		t0 := time.Now()
		if err = writeShape(shape, flag.Arg(0), tokenizerCache); err == nil {
			fmt.Fprintf(os.Stderr, "bench: wrote %s-shaped folder %s in %.1f s\n", shape, flag.Arg(0), time.Since(t0).Seconds())
		}
	case flag.NArg() > 0:
		err = fmt.Errorf("unexpected arguments %q (flags go before -write-shape NAME DIR)", flag.Args())
	case writeSynth != "":
		err = writeSynthetic(writeSynth, synth)
	case o.mode == "stream":
		res, err = benchStream(o)
	case o.mode == "matmul":
		res, err = benchMatmul(o)
	case o.modelDir == "":
		err = fmt.Errorf("-model is required (or -write-synth, -write-shape)")
	case o.mode == "train":
		res, err = benchTrain(o)
	case o.mode == "generate":
		res, err = benchGenerate(o)
	default:
		err = fmt.Errorf("-mode %q: use train, generate, stream or matmul", o.mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if res == nil {
		return
	}
	res["side"] = "saddle"
	res["go"] = runtime.Version()
	res["gomaxprocs"] = runtime.GOMAXPROCS(0)
	res["simd"] = backend.SIMDBuilt
	res["peak_rss_mib"] = peakRSSMiB()
	res["peak_rss_gb"] = vmHWMGB()
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func loadModel(o options) (*model.Model, string, string, error) {
	b, cfg, err := backend.New(o.backend)
	if err != nil {
		return nil, "", "", err
	}
	p, err := model.Load(o.modelDir)
	if err != nil {
		return nil, "", "", err
	}
	m, dt, err := newModel(b, p, o.dtype)
	return m, cfg, dt, err
}

// newModel builds the model with the frozen base in the compute dtype -dtype asks for, and says which one it used.
func newModel(b compute.Backend, p *model.Pretrained, dt string) (*model.Model, string, error) {
	m, err := model.NewWithCompute(b, p, dt)
	if err != nil {
		return nil, "", err
	}
	return m, m.ComputeName, nil
}

// lcg is Knuth's MMIX generator; peer.py draws the same ids as (state >> 33) % n.
type lcg struct{ s uint64 }

func (l *lcg) next(n int) int32 {
	l.s = l.s*6364136223846793005 + 1442695040888963407
	return int32((l.s >> 33) % uint64(n))
}

// tokenBatch draws batch rows of seq+1 ids and splits them into inputs and next-token targets (all weighted 1).
func tokenBatch(r *lcg, batch, seq, vocab int) finetune.Batch {
	b := finetune.Batch{B: batch, T: seq}
	for range batch {
		row := make([]int32, seq+1)
		for i := range row {
			row[i] = r.next(vocab)
		}
		b.Inputs = append(b.Inputs, row[:seq]...)
		b.Targets = append(b.Targets, row[1:]...)
	}
	b.Weights = make([]float32, batch*seq)
	for i := range b.Weights {
		b.Weights[i] = 1
	}
	return b
}

func benchTrain(o options) (map[string]any, error) {
	t0 := time.Now()
	m, backendCfg, dt, err := loadModel(o)
	if err != nil {
		return nil, err
	}
	loadS := time.Since(t0).Seconds()
	spec := lora.DefaultSpec() // PEFT's init; r=8, α=16 on q,k,v,o unless the flags say otherwise
	spec.Rank, spec.Alpha = o.rank, o.alpha
	spec.Targets = strings.Split(o.targets, ",")
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	set, err := lora.Attach(m.Config, spec)
	if err != nil {
		return nil, err
	}
	opt, err := optimizers.New("adam", optimizers.Config{})
	if err != nil {
		return nil, err
	}
	s, err := finetune.NewStepper(m, set, opt, 0, 0, finetune.GradCheckpoint(o.gradCheckpoint), finetune.Trainer(o.trainer))
	if err != nil {
		return nil, err
	}
	r := &lcg{s: o.seed}
	var times, cpu, losses []float64
	var firstStep, toFirstStep, rateBefore float64
	stop := func() {}
	for i := range o.warmup + o.steps {
		b := tokenBatch(r, o.batch, o.seq, m.Config.VocabSize)
		if i == o.warmup {
			rateBefore = gemmRate(5)
			stop, err = startProfile(o.cpuProfile)
			if err != nil {
				return nil, err
			}
		}
		t0, c0 := time.Now(), cpuSeconds()
		res, err := s.TrainStep([]finetune.Batch{b}, 1e-3)
		if err != nil {
			return nil, err
		}
		dt, dc := time.Since(t0).Seconds(), cpuSeconds()-c0
		if i == 0 {
			firstStep, toFirstStep = dt, math.Round(sinceProcessStart()*100)/100
		}
		losses = append(losses, res.Loss)
		if i >= o.warmup {
			times, cpu = append(times, dt), append(cpu, dc)
		}
	}
	stop()
	rateAfter := gemmRate(5) // internal/gemm's 1024² rate (best of 5) just after the steps, rateBefore just before
	tokens := o.batch * o.seq
	fl := trainFLOPs(m.Config, spec, o.batch, o.seq)
	return map[string]any{
		"mode": "train", "backend": backendCfg, "batch": o.batch, "seq": o.seq, "tokens_per_step": tokens,
		"step_s": times, "step_cpu_s": cpu, "first_loss": losses[0], "last_loss": losses[len(losses)-1],
		"median_step_s": median(times), "tokens_per_s": float64(tokens) / median(times),
		"flops": fl, "gflops_per_s": fl["total"] / median(times) / 1e9,
		"params": m.Config.NumParameters(), "adapter_params": set.NumParams(),
		"rank": spec.Rank, "alpha": spec.Alpha, "targets": spec.Targets, "adapters": len(set.Adapters),
		"dtype": dt, "dtype_requested": o.dtype, "grad_checkpoint": o.gradCheckpoint,
		"trainer": s.TrainerKind(), "load_s": loadS, "first_step_s": firstStep, "time_to_first_step_s": toFirstStep,
		"gemm_gflops_around": []float64{rateBefore, rateAfter},
	}, nil
}

func benchGenerate(o options) (map[string]any, error) {
	m, backendCfg, _, err := loadModel(o)
	if err != nil {
		return nil, err
	}
	r := &lcg{s: o.seed}
	prompt := make([]int, o.prompt)
	for i := range prompt {
		prompt[i] = int(r.next(m.Config.VocabSize))
	}
	if o.genBatch < 1 {
		return nil, fmt.Errorf("-gen-batch %d must be >= 1", o.genBatch)
	}
	capacity := o.prompt + o.newTokens
	var gen func() ([]int, int, error) // tokens of the first sequence, tokens generated in all
	decoderName := "graph"
	if o.genBatch > 1 || o.decoder == "cpu" || (o.decoder == "auto" && m.CPUDecodeSupported() == nil) {
		d, err := m.NewCPUDecoder(capacity, o.genBatch, nil)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		decoderName = "cpu"
		prompts := make([][]int, o.genBatch)
		samplers := make([]*model.Sampler, o.genBatch)
		for i := range prompts {
			prompts[i], samplers[i] = prompt, model.NewSampler(model.Sampling{})
		}
		gen = func() ([]int, int, error) {
			outs, err := model.GenerateBatch(d, prompts, o.newTokens, samplers, nil, nil)
			n := 0
			for _, out := range outs {
				n += len(out)
			}
			return outs[0], n, err
		}
	} else {
		d, err := m.NewTokenDecoder(o.decoder, capacity, nil, nil, nil)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		gen = func() ([]int, int, error) {
			d.(*model.Decoder).Reset()
			out, err := model.Generate(d, prompt, o.newTokens, model.NewSampler(model.Sampling{}), nil, nil)
			return out, len(out), err
		}
	}
	var times, cpu []float64
	var out []int
	total := 0
	stop := func() {}
	for i := range o.warmup + o.steps {
		if i == o.warmup {
			if stop, err = startProfile(o.cpuProfile); err != nil {
				return nil, err
			}
		}
		t0, c0 := time.Now(), cpuSeconds()
		if out, total, err = gen(); err != nil {
			return nil, err
		}
		if i >= o.warmup {
			times, cpu = append(times, time.Since(t0).Seconds()), append(cpu, cpuSeconds()-c0)
		}
	}
	stop()
	return map[string]any{
		"mode": "generate", "backend": backendCfg, "decoder": decoderName, "gen_batch": o.genBatch, "prompt": o.prompt,
		"new_tokens": o.newTokens, "generated": total, "gen_s": times, "gen_cpu_s": cpu,
		"median_gen_s": median(times), "tokens_per_s": float64(total) / median(times), "tokens": out[:min(16, len(out))],
		"weight_bytes_per_pass": decodeBytes(m), "weights_dtype": weightDType(m),
	}, nil
}

// decodeBytes is what one decoding pass must read of the weights: every matrix but the embedding (of which it
// reads one row per token), norms included; the output head once even when it is tied to the embedding.
func decodeBytes(m *model.Model) int64 {
	var total int64
	for i, name := range m.Names {
		t := m.Params[i]
		if name == "model.embed_tokens.weight" && !(m.Config.TieEmbeddings || !slices.Contains(m.Names, "lm_head.weight")) {
			continue
		}
		total += int64(t.Shape().Size()) * int64(t.DType().Size())
	}
	return total
}

func weightDType(m *model.Model) string {
	for i, name := range m.Names {
		if strings.HasSuffix(name, "mlp.up_proj.weight") {
			return m.Params[i].DType().String()
		}
	}
	return "?"
}

// trainFLOPs counts the matmul FLOPs of one LoRA training step (a multiply-add is 2 FLOPs; T = batch·seq tokens):
//   - dense: the frozen linear layers and the LM head, forward 2·N·T plus the backward's input gradient 2·N·T. Their
//     weight gradients are never needed (frozen), so the dense part is 4·N·T, not the 6·N·T of full training.
//   - lora: per adapted module, r·(in+out) weights: forward, input gradient and factor gradients, 6·r·(in+out)·T.
//   - attention: Q·Kᵀ and P·V over the full seq×seq square (masked half included, as both sides compute it):
//     4·B·heads·seq²·headDim forward, twice that backward.
//
// Embedding gathers, norms, softmax and the optimizer are elementwise and not counted.
func trainFLOPs(c model.Config, spec lora.Spec, batch, seq int) map[string]float64 {
	T := float64(batch * seq)
	h, q, kv, ffn := c.HiddenSize, c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim, c.IntermediateSize
	perLayer := h*q + 2*h*kv + q*h + 3*h*ffn
	dense := float64(c.NumLayers*perLayer+c.VocabSize*h) * 4 * T
	modules := []struct {
		path    string
		in, out int
	}{
		{"self_attn.q_proj", h, q}, {"self_attn.k_proj", h, kv}, {"self_attn.v_proj", h, kv}, {"self_attn.o_proj", q, h},
		{"mlp.gate_proj", h, ffn}, {"mlp.up_proj", h, ffn}, {"mlp.down_proj", ffn, h},
	}
	adapted := 0
	for l := range c.NumLayers {
		for _, m := range modules {
			if spec.Matches(fmt.Sprintf("model.layers.%d.%s", l, m.path)) {
				adapted += spec.Rank * (m.in + m.out)
			}
		}
	}
	loraF := float64(adapted) * 6 * T
	// Attention: the causal triangle (seq·(seq+1)/2 query-key pairs per head), the work the loss needs; an
	// implementation that multiplies the full square does twice this.
	attn := 12 * float64(batch*c.NumHeads*seq*(seq+1)/2*c.HeadDim*c.NumLayers)
	return map[string]float64{"dense": dense, "lora": loraF, "attention": attn, "total": dense + loraF + attn}
}

func startProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cpuSeconds is the user + system CPU time of the process so far: on a machine shared with other jobs it moves
// less than wall time does.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// peakRSSMiB is the process's peak resident set (ru_maxrss, KiB on Linux).
func peakRSSMiB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return float64(ru.Maxrss) / 1024
}

type synthConfig struct{ Hidden, Layers, Heads, KVHeads, FFN, Vocab int }

// writeSynthetic writes an untied Llama with N(0, 0.02²) weights (norms at 1) as an HF folder.
func writeSynthetic(dir string, s synthConfig) error {
	if s.Hidden%s.Heads != 0 {
		return fmt.Errorf("hidden %d is not a multiple of heads %d", s.Hidden, s.Heads)
	}
	cfg := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": s.Hidden, "intermediate_size": s.FFN, "num_hidden_layers": s.Layers,
		"num_attention_heads": s.Heads, "num_key_value_heads": s.KVHeads, "head_dim": s.Hidden / s.Heads,
		"vocab_size": s.Vocab, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
		"hidden_act": "silu", "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2,
		"torch_dtype": "float32",
	}
	pc := model.Config{HiddenSize: s.Hidden, IntermediateSize: s.FFN, NumLayers: s.Layers, NumHeads: s.Heads,
		NumKVHeads: s.KVHeads, HeadDim: s.Hidden / s.Heads, VocabSize: s.Vocab}
	rng := rand.New(rand.NewPCG(42, 7))
	named := map[string]safetensors.Tensor{}
	for name, shape := range pc.ExpectedShapes() {
		n := 1
		for _, d := range shape {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			if len(shape) == 1 {
				data[i] = 1
			} else {
				data[i] = float32(rng.NormFloat64() * 0.02)
			}
		}
		named[name] = safetensors.Tensor{Shape: shape, Data: data}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := fileio.WriteFile(filepath.Join(dir, "config.json"), js); err != nil {
		return err
	}
	return safetensors.Write(filepath.Join(dir, "model.safetensors"), named, map[string]string{"format": "pt"})
}
