package finetune

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/lora"
	"github.com/saddle-ml/saddle/model"
)

// llama1B has the shapes of Llama-3.2-1B.
var llama1B = model.Config{Architecture: "llama", HiddenSize: 2048, IntermediateSize: 8192, NumLayers: 16, NumHeads: 32,
	NumKVHeads: 8, HeadDim: 64, VocabSize: 128256, MaxPositions: 131072, RMSNormEps: 1e-5, RopeTheta: 500000,
	TieEmbeddings: true, BOSTokenID: -1}

func plan1B(t *testing.T, batch, seq int, change func(*Config)) *Plan {
	t.Helper()
	c := Config{Optimizer: "adam", LR: 1e-3, Schedule: "constant", GradAccum: 1, Adapter: lora.DefaultSpec(), Steps: 3,
		BatchSize: batch, SeqLen: seq, EscapeDelta: 0.05, Out: "unused", DType: "auto", Trainer: TrainerGraph}
	if change != nil {
		change(&c)
	}
	p, err := NewPlan(c, llama1B)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var bf16Weights = WeightStorage{Default: "BF16"}

// TestEstimateLlama1B checks each part against numbers worked out by hand for Llama-3.2-1B, batch 1 × 512, LoRA
// r=8 on q, k, v, o, Adam, on the graph trainer.
func TestEstimateLlama1B(t *testing.T) {
	e, err := EstimateTraining(plan1B(t, 1, 512, nil), llama1B, bf16Weights)
	if err != nil {
		t.Fatal(err)
	}
	// 1,235,814,400 parameters (embeddings 128256·2048 tied, 16 layers of 60,821,504, the final norm) in bf16.
	const weights = 2 * 1_235_814_400
	// Adapters: per layer q and o 8·(2048+2048), k and v 8·(2048+512): 106,496 × 16 = 1,703,936 parameters;
	// factors, gradient, two Adam slots, and the previous step's factors and slots: 7 f32 copies.
	const adapters = 1_703_936 * 7 * 4
	// One layer at N = 512 tokens, in f32 elements: 4·N·2048 norms and residuals; 2·N·(2048+2·512) q, k, v and their
	// rotated copies; 2·N·2048 attention output; 5·N·8192 MLP; the probabilities of 8 causal chunks of 64 queries,
	// 32 heads · 64·64·(1+…+8); the adapters' x·A, N·8 for each of 4 modules.
	const perLayer = (4*512*2048 + 2*512*(2048+1024) + 2*512*2048 + 5*512*8192 + 32*64*64*36 + 4*512*8) * 4
	const activations = 16*perLayer + 3*512*2048*4
	// Backward working set: two probability-sized gradients and two N×8192; the largest f32 cast, an MLP matrix
	// 8192×2048 (the tied head is cast 2²⁴ elements at a time).
	const transient = (2*32*64*64*36+2*512*8192)*4 + 8192*2048*4
	const loss = 128 * 128256 * 4 * 3
	// Overhead: the fixed part and the garbage GOGC=10 lets pile up, a tenth of the rest.
	const overhead = memoryOverhead + (weights+adapters+activations+transient+loss)/10
	want := MemoryEstimate{Weights: weights, Adapters: adapters, Activations: activations, PerLayer: perLayer,
		Transient: transient, Loss: loss, Overhead: overhead,
		Total: weights + adapters + activations + transient + loss + overhead}
	if e != want {
		t.Fatalf("estimate\n got %+v\nwant %+v", e, want)
	}
	if e.Total != 5_896_619_212 {
		t.Fatalf("total %d, worked out as 5,896,619,212", e.Total)
	}

	// Gradient checkpointing keeps each block's input; one block is recomputed inside the backward.
	gc, err := EstimateTraining(plan1B(t, 1, 512, func(c *Config) { c.GradCheckpoint = true }), llama1B, bf16Weights)
	if err != nil {
		t.Fatal(err)
	}
	if gc.Activations != 19*512*2048*4 || gc.Transient != transient+perLayer || gc.Weights != weights {
		t.Fatalf("with grad checkpointing: %+v", gc)
	}

	// f32 weights on disk stay f32 unless --dtype bf16 narrows them; bf16 computing has no cast.
	f32 := WeightStorage{Default: "F32"}
	wide, err := EstimateTraining(plan1B(t, 1, 512, nil), llama1B, f32)
	if err != nil {
		t.Fatal(err)
	}
	narrow, err := EstimateTraining(plan1B(t, 1, 512, func(c *Config) { c.DType = "bf16" }), llama1B, f32)
	if err != nil {
		t.Fatal(err)
	}
	if wide.Weights != 2*weights || wide.Transient != transient-8192*2048*4 || narrow.Weights != weights ||
		narrow.Transient != wide.Transient {
		t.Fatalf("f32 file: %+v; with dtype bf16: %+v", wide, narrow)
	}
	// The per-weight dtypes win over the default: a model with only its embeddings in f32.
	mixed, err := EstimateTraining(plan1B(t, 1, 512, nil), llama1B,
		WeightStorage{Default: "BF16", DTypes: map[string]string{"model.embed_tokens.weight": "F32"}})
	if err != nil {
		t.Fatal(err)
	}
	if mixed.Weights != weights+2*128256*2048 {
		t.Fatalf("embeddings in f32: weights %d", mixed.Weights)
	}
	// Batch 2 doubles activations.
	two, err := EstimateTraining(plan1B(t, 2, 512, nil), llama1B, bf16Weights)
	if err != nil {
		t.Fatal(err)
	}
	if two.Activations != 2*activations || two.PerLayer != 2*perLayer {
		t.Fatalf("batch 2: activations %d, want %d", two.Activations, 2*activations)
	}
}

func TestAttentionProbsFollowTheCausalChunks(t *testing.T) {
	cfg := model.Config{NumHeads: 2}
	for _, tc := range []struct{ T, want int64 }{
		{64, 2 * 64 * 64},                    // one chunk: the full square
		{128, 2 * (64*64 + 64*128)},          // two chunks of 64
		{200, 2 * (67*67 + 67*134 + 66*200)}, // three chunks of ⌈200/3⌉ = 67
		{4096, 2 * 512 * 512 * 36},           // eight chunks
	} {
		if got := attentionProbs(cfg, 1, tc.T); got != tc.want {
			t.Errorf("T=%d: %d probabilities, want %d", tc.T, got, tc.want)
		}
	}
}

func TestCheckMemoryRefusesWithWhatFits(t *testing.T) {
	p := plan1B(t, 8, 512, nil)
	e, err := EstimateTraining(p, llama1B, bf16Weights)
	if err != nil {
		t.Fatal(err)
	}
	// Within 10% of the available memory the run is tried.
	if err := CheckMemory(p, llama1B, bf16Weights, e, Available{Bytes: e.Total * 100 / 109, Source: "test"}, nil); err != nil {
		t.Fatalf("refused at 9%% over: %v", err)
	}
	if err := CheckMemory(p, llama1B, bf16Weights, e, Available{}, nil); err != nil {
		t.Fatalf("refused with unknown memory: %v", err)
	}
	avail := Available{Bytes: 8_000_000_000, Source: "cgroup memory.max"}
	err = CheckMemory(p, llama1B, bf16Weights, e, avail, nil)
	me, ok := err.(*MemoryError)
	if !ok {
		t.Fatalf("%.1f GB estimated, 8 GB available: got %v, want a *MemoryError", float64(e.Total)/1e9, err)
	}
	fixes := map[string]Fix{}
	for _, f := range me.Fixes {
		if len(f.Changes) != 1 || f.Total > avail.Bytes {
			t.Fatalf("fix %+v: one change that fits wanted", f)
		}
		fixes[f.Changes[0].Setting] = f
	}
	if _, ok := fixes["dtype"]; ok {
		t.Errorf("bf16 weights: --dtype bf16 suggested: %+v", me.Fixes)
	}
	b, s := fixes["batch_size"], fixes["seq_len"]
	if len(b.Changes) == 0 || len(s.Changes) == 0 {
		t.Fatalf("no batch size or sequence length fix: %+v", me.Fixes)
	}
	// The suggested batch size is the largest that fits, and the sequence length the largest multiple of 64.
	for _, c := range []struct {
		fix  Fix
		next func(v int) func(*Config)
		step int
	}{
		{b, func(v int) func(*Config) { return func(c *Config) { c.BatchSize = v } }, 1},
		{s, func(v int) func(*Config) { return func(c *Config) { c.SeqLen = v } }, 64},
	} {
		v := atoi(t, c.fix.Changes[0].Value)
		at, err := EstimateTraining(plan1B(t, 8, 512, c.next(v)), llama1B, bf16Weights)
		if err != nil {
			t.Fatal(err)
		}
		above, err := EstimateTraining(plan1B(t, 8, 512, c.next(v+c.step)), llama1B, bf16Weights)
		if err != nil {
			t.Fatal(err)
		}
		if at.Total != c.fix.Total || at.Total > avail.Bytes || above.Total <= avail.Bytes {
			t.Errorf("%s %d: %d bytes (fix says %d), %d at +%d; available %d", c.fix.Changes[0].Setting, v, at.Total,
				c.fix.Total, above.Total, c.step, avail.Bytes)
		}
	}
	msg := me.Message(func(s string) string { return "--" + strings.ReplaceAll(s, "_", "-") })
	for _, want := range []string{"8.00 GB available (cgroup memory.max)", "weights 2.47 GB", "--batch-size " + b.Changes[0].Value,
		"--seq-len " + s.Changes[0].Value} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(me.Error(), "--") || !strings.Contains(me.Error(), "batch_size") {
		t.Errorf("Error names flags, not settings: %s", me.Error())
	}

	// f32 weights: --dtype bf16 halves them and is suggested; when nothing fits, the smallest settings are named.
	f32 := WeightStorage{Default: "F32"}
	p1 := plan1B(t, 1, 512, nil)
	e, err = EstimateTraining(p1, llama1B, f32)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckMemory(p1, llama1B, f32, e, Available{Bytes: 6_200_000_000, Source: "MemAvailable"}, nil)
	me, ok = err.(*MemoryError)
	if !ok || !slices.ContainsFunc(me.Fixes, func(f Fix) bool { return f.Changes[0] == Change{"dtype", "bf16"} }) {
		t.Fatalf("f32 weights at 6.2 GB: %v", err)
	}
	err = CheckMemory(p1, llama1B, f32, e, Available{Bytes: 1_000_000_000, Source: "MemAvailable"}, nil)
	me, ok = err.(*MemoryError)
	if !ok || len(me.Fixes) != 0 || len(me.Smallest.Changes) != 3 || !strings.Contains(me.Error(),
		"even with batch_size 1 grad_checkpoint dtype bf16 it would need about") {
		t.Fatalf("at 1 GB: %v", err)
	}
	// A combination that fits when no single change does is offered as one fix.
	err = CheckMemory(p1, llama1B, f32, e, Available{Bytes: me.Smallest.Total + 1, Source: "MemAvailable"}, nil)
	if me, ok = err.(*MemoryError); !ok || len(me.Fixes) != 1 || len(me.Fixes[0].Changes) != 3 {
		t.Fatalf("just above the smallest settings: %v", err)
	}
	// A resumed run may change only some settings: only those are suggested.
	resumable := func(s string) bool { return slices.Contains(ResumableSettings, s) }
	err = CheckMemory(p, llama1B, bf16Weights, estimateOrFail(t, p), avail, resumable)
	if me, ok = err.(*MemoryError); !ok || len(me.Fixes) != 1 || me.Fixes[0].Changes[0].Setting != "grad_checkpoint" {
		t.Fatalf("resuming at 8 GB: %v", err)
	}
	err = CheckMemory(p1, llama1B, f32, e, Available{Bytes: 1_000_000_000, Source: "MemAvailable"}, func(string) bool { return false })
	if me, ok = err.(*MemoryError); !ok || !strings.Contains(me.Error(), "no setting this run may change makes it smaller") {
		t.Fatalf("nothing may change: %v", err)
	}
}

func estimateOrFail(t *testing.T, p *Plan) MemoryEstimate {
	t.Helper()
	e, err := EstimateTraining(p, llama1B, bf16Weights)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			t.Fatalf("%q is not a number", s)
		}
		n = 10*n + int(r-'0')
	}
	return n
}

func TestEstimateGeneration(t *testing.T) {
	e, err := EstimateGeneration(llama1B, bf16Weights, "bf16", 1000)
	if err != nil {
		t.Fatal(err)
	}
	kv := int64(2 * 16 * 8 * 64 * 1000 * 4)
	if e.Weights != 2*1_235_814_400 || e.KVCache != kv || e.Activations != 0 || e.Total != e.Weights+e.KVCache+e.Transient+e.Loss+e.Overhead {
		t.Fatalf("generation estimate %+v (KV cache %d)", e, kv)
	}
}

// TestAvailableMemory reads a fake /proc and /sys/fs/cgroup: the smallest of MemAvailable and the cgroup limits
// of the process's cgroup and its ancestors; "max" and v1's unlimited value are no limit.
func TestAvailableMemory(t *testing.T) {
	write := func(root, path, data string) {
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	meminfo := "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n"
	for _, tc := range []struct {
		name   string
		files  map[string]string
		bytes  int64
		source string
	}{
		{"meminfo only", map[string]string{"proc/meminfo": meminfo}, 20000000 << 10, "MemAvailable"},
		{"v2 unlimited", map[string]string{"proc/meminfo": meminfo, "proc/self/cgroup": "0::/a/b\n",
			"sys/fs/cgroup/a/b/memory.max": "max\n"}, 20000000 << 10, "MemAvailable"},
		{"v2 ancestor limit", map[string]string{"proc/meminfo": meminfo, "proc/self/cgroup": "0::/a/b\n",
			"sys/fs/cgroup/a/b/memory.max": "max\n", "sys/fs/cgroup/a/memory.max": "8000000000\n"}, 8000000000, "cgroup memory.max"},
		{"v1 limit", map[string]string{"proc/meminfo": meminfo, "proc/self/cgroup": "5:cpu:/x\n4:memory:/docker/c1\n",
			"sys/fs/cgroup/memory/docker/c1/memory.limit_in_bytes": "6000000000\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes":           "9223372036854771712\n"}, 6000000000, "cgroup memory.limit_in_bytes"},
		{"root v2 limit", map[string]string{"proc/meminfo": meminfo, "sys/fs/cgroup/memory.max": "4096\n"}, 4096, "cgroup memory.max"},
		{"nothing", map[string]string{"proc/meminfo": "garbage"}, 0, ""},
	} {
		root := t.TempDir()
		for p, d := range tc.files {
			write(root, p, d)
		}
		got, ok := availableMemory(root)
		if got.Bytes != tc.bytes || got.Source != tc.source || ok != (tc.bytes > 0) {
			t.Errorf("%s: %+v %v, want %d from %s", tc.name, got, ok, tc.bytes, tc.source)
		}
	}
}
