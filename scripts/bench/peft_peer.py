#!/usr/bin/env python3
"""GPU peer for scripts/gpu-check.sh: LoRA training throughput of Hugging Face transformers + PEFT.

The model is built from an HF folder's config.json (weights loaded from its model.safetensors when present), LoRA
r=8 alpha=16 on q,k,v,o, Adam lr 1e-3 on the adapters, f32, random tokens. Prints one JSON object; exits 3 when
torch with CUDA, transformers or peft is missing (the caller then reports saddle alone).
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    try:
        import torch
        import transformers
        import peft
    except ImportError as e:
        print(json.dumps({"side": "peft", "skipped": f"missing package: {e.name}"}))
        sys.exit(3)
    if not torch.cuda.is_available():
        print(json.dumps({"side": "peft", "skipped": "torch has no CUDA device"}))
        sys.exit(3)
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 math, as on saddle's side
    cfg = transformers.AutoConfig.from_pretrained(args.model)
    model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
    try:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(f"{args.model}/model.safetensors"), strict=False)
    except (ImportError, OSError):
        pass  # random weights: same speed
    model = model.cuda()
    lcfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                           task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lcfg)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator(device="cuda").manual_seed(1)
    times = []
    for i in range(args.warmup + args.steps):
        ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), device="cuda", generator=g)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=ids[:, :-1], labels=ids[:, 1:].contiguous())  # HF shifts labels itself: fine for speed
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({"side": "peft", "torch": torch.__version__, "transformers": transformers.__version__,
                      "peft": peft.__version__, "device": torch.cuda.get_device_name(0), "step_s": times,
                      "median_step_s": med, "tokens_per_s": args.batch * args.seq / med,
                      "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}))


if __name__ == "__main__":
    main()
