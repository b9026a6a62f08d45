#!/usr/bin/env python3
"""GPU peer for scripts/gpu-check.sh: LoRA training throughput and device memory of Hugging Face transformers + PEFT.

The model is an HF folder (config.json + model.safetensors or shards; e.g. one written by
`bench -write-shape qwen3-0.6b DIR`), loaded with AutoModelForCausalLM.from_pretrained in --dtype (default bf16,
what saddle's --dtype bf16 keeps on the device) and moved to the GPU. LoRA as saddle's bench sets it: r=16,
alpha=32, no dropout, PEFT's init (A Kaiming-uniform, B = 0) on --targets (all-linear = q,k,v,o,gate,up,down),
adapter weights in f32 (PEFT's autocast_adapter_dtype), Adam lr 1e-3 on the adapters only. Tokens come from the
same 64-bit LCG as scripts/bench (seed 1, rows of seq+1 ids: inputs = row[:-1], targets = row[1:]), and the loss is
the mean cross-entropy over every target, so the first step's loss must agree with saddle's within bf16 precision.
TF32 for f32 matmuls is on by default, as in XLA's CUDA backend (--no-tf32 to turn it off).

Prints one JSON object: tokens/s (median step), the step times, first and last loss, torch.cuda.max_memory_allocated
and max_memory_reserved, the memory the weights took, and the time from process start to the end of the first step.
Exits 3 when torch with CUDA, transformers or peft is missing (the caller then reports saddle alone).
"""
import argparse
import json
import sys
import time

T_START = time.perf_counter()
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LCG:
    """Knuth's MMIX generator, as scripts/bench/main.go's lcg: ids are (state >> 33) % n."""

    def __init__(self, seed):
        self.s = seed

    def next(self, n):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return (self.s >> 33) % n


def token_rows(rng, batch, seq, vocab):
    """batch rows of seq+1 ids, drawn in the order scripts/bench draws them."""
    return [[rng.next(vocab) for _ in range(seq + 1)] for _ in range(batch)]


def targets_of(spec):
    if spec == "all-linear":
        return list(ALL_LINEAR)
    return [t.strip() for t in spec.split(",") if t.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--targets", default="all-linear")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--no-tf32", action="store_true")
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
        import transformers
        import peft
    except ImportError as e:
        print(json.dumps({"side": "peft", "skipped": f"missing package: {e.name}"}))
        sys.exit(3)
    if not torch.cuda.is_available():
        print(json.dumps({"side": "peft", "skipped": "torch has no CUDA device"}))
        sys.exit(3)
    torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
    torch.backends.cudnn.allow_tf32 = not args.no_tf32
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]

    t0 = time.perf_counter()
    # transformers 5 (and 4.56+) name the argument dtype; older ones torch_dtype (and would ignore dtype).
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kw = {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, **kw)
    if next(model.parameters()).dtype != dtype:
        model = model.to(dtype)
    model = model.cuda()
    torch.cuda.synchronize()
    weights_mib = torch.cuda.memory_allocated() / 2**20
    load_s = time.perf_counter() - t0
    if args.grad_checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    lcfg = peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, bias="none",
                           target_modules=targets_of(args.targets), task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lcfg)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    adapter_dtypes = sorted({str(p.dtype).replace("torch.", "") for p in trainable})
    opt = torch.optim.Adam(trainable, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    vocab = model.config.vocab_size
    rng = LCG(args.seed)

    times, losses = [], []
    first_step_s = to_first_step_s = None
    for i in range(args.warmup + args.steps):
        rows = torch.tensor(token_rows(rng, args.batch, args.seq, vocab), dtype=torch.long).cuda()
        x, y = rows[:, :-1], rows[:, 1:]
        torch.cuda.synchronize()
        t = time.perf_counter()
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        losses.append(loss.item())
        del logits, loss
        if i == 0:
            first_step_s, to_first_step_s = dt, time.perf_counter() - T_START
        if i >= args.warmup:
            times.append(dt)
    med = sorted(times)[len(times) // 2]
    print(json.dumps({
        "side": "peft", "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "device": torch.cuda.get_device_name(0), "dtype": args.dtype, "adapter_dtypes": adapter_dtypes,
        "tf32": not args.no_tf32, "grad_checkpoint": args.grad_checkpoint, "batch": args.batch, "seq": args.seq,
        "rank": args.rank, "alpha": args.alpha, "targets": targets_of(args.targets),
        "adapter_params": sum(p.numel() for p in trainable), "step_s": times, "median_step_s": med,
        "tokens_per_s": args.batch * args.seq / med, "first_loss": losses[0], "last_loss": losses[-1],
        "load_s": load_s, "first_step_s": first_step_s, "time_to_first_step_s": to_first_step_s,
        "weights_mib": weights_mib, "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
        "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20}))


if __name__ == "__main__":
    main()
