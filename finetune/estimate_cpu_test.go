package finetune

import (
	"runtime"
	"testing"

	"github.com/saddle-ml/saddle/lora"
)

// TestEstimateCPUTrainerLlama1B: trainer auto on the Go backend estimates the CPU trainer's buffers, worked out by
// hand for Llama-3.2-1B, batch 1 × 512, LoRA r=8 on q, k, v, o, Adam; the graph's settings (dropout, gradient
// checkpointing, another backend, trainer graph) get the graph's estimate.
func TestEstimateCPUTrainerLlama1B(t *testing.T) {
	auto := func(c *Config) { c.Trainer = TrainerAuto }
	e, err := EstimateTraining(plan1B(t, 1, 512, auto), llama1B, bf16Weights)
	if err != nil {
		t.Fatal(err)
	}
	const weights = 2 * 1_235_814_400
	// The graph-side copies (7 f32) and the CPU form's factors and gradients (2 more).
	const adapters = 1_703_936 * 9 * 4
	// Per layer: x and the mid residual 2·512·2048, two inverse RMS 2·512, q and the attention output 2·512·2048,
	// k and v 2·512·512, gate and up 2·512·8192, and the probabilities 32·512² (16 layers' are 512 MiB ≤ 1 GiB).
	const perLayer = (2*512*2048 + 2*512 + 2*512*2048 + 2*512*512 + 2*512*8192 + 32*512*512) * 4
	const activations = 16 * perLayer
	workers := int64(runtime.GOMAXPROCS(0))
	// Shared: 4·N·H, N, 4·N·qDim, 2·N·kvDim, 2·N·F, RoPE tables 512·64, row losses 2·N, the workers' attention
	// blocks 2·64·512 each; the adapters' x·A, N·8 for each of 64 modules.
	transient := (4*512*2048 + 512 + 4*512*2048 + 2*512*512 + 2*512*8192 + 512*64 + 2*512 + workers*2*64*512 + 64*512*8) * 4
	// One loss chunk: all 512 rows of logits (256 MiB / 4 / 128256 = 523 rows fit) and two of hidden size.
	const loss = (512*128256 + 2*512*2048) * 4
	overhead := memoryOverhead + (weights+adapters+activations+transient+loss)/10
	want := MemoryEstimate{Weights: weights, Adapters: adapters, Activations: activations, PerLayer: perLayer,
		Transient: transient, Loss: loss, Overhead: overhead,
		Total: weights + adapters + activations + transient + loss + overhead}
	if e != want {
		t.Fatalf("estimate\n got %+v\nwant %+v", e, want)
	}
	graph, err := EstimateTraining(plan1B(t, 1, 512, nil), llama1B, bf16Weights)
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*Config){
		"trainer graph":  func(c *Config) {},
		"dropout":        func(c *Config) { auto(c); c.Adapter.Dropout = 0.1 },
		"checkpointing":  func(c *Config) { auto(c); c.GradCheckpoint = true },
		"an XLA backend": func(c *Config) { auto(c); c.Backend = "xla:cuda" },
	} {
		g, err := EstimateTraining(plan1B(t, 1, 512, change), llama1B, bf16Weights)
		if err != nil {
			t.Fatal(err)
		}
		if g.Activations == e.Activations || g.Transient == e.Transient {
			t.Errorf("%s: the CPU trainer's estimate %+v", name, g)
		}
		if name == "trainer graph" && g != graph {
			t.Errorf("trainer graph: %+v, want the graph's %+v", g, graph)
		}
	}
	// Longer sequences: the probabilities stop being kept (recomputed in the backward pass).
	long, err := EstimateTraining(plan1B(t, 1, 2048, auto), llama1B, bf16Weights)
	if err != nil {
		t.Fatal(err)
	}
	if long.PerLayer != (2*2048*2048+2*2048+2*2048*2048+2*2048*512+2*2048*8192)*4 {
		t.Errorf("1×2048: per layer %d, want no probabilities", long.PerLayer)
	}
}

// TestEstimateCPUTrainerMatchesItsBuffers: the estimate's activations, shared buffers and loss chunk for the CPU
// trainer are what model.CPUTrainer allocates (its Bytes), on stories260K with adapters on every linear module.
func TestEstimateCPUTrainerMatchesItsBuffers(t *testing.T) {
	f := newFixture(t)
	cfg := testConfig(t, "adam", 1e-3, 1)
	cfg.Adapter.Targets = []string{"all-linear"}
	cfg.BatchSize, cfg.SeqLen = 3, 40
	p := testPlan(t, f, cfg)
	e, err := EstimateTraining(p, f.model.Config, WeightStorage{Default: "F32"})
	if err != nil {
		t.Fatal(err)
	}
	set, err := lora.Attach(f.model.Config, cfg.Adapter)
	if err != nil {
		t.Fatal(err)
	}
	adapters, err := set.CPUAdapters(3 * 40)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := f.model.NewCPUTrainer(adapters.Modules(), 3, 40)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	inner := int64(len(set.Adapters)) * 3 * 40 * int64(cfg.Adapter.Rank) * int64(cfg.Adapter.Depth-1)
	estimated := e.Activations + e.Transient - inner*4 + e.Loss
	if got := tr.Bytes(); estimated != got {
		t.Errorf("estimated %d bytes of CPU trainer buffers, it allocated %d", estimated, got)
	}
}
