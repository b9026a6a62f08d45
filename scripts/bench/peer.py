#!/usr/bin/env python3
"""PyTorch peer of scripts/bench (saddle's Go benchmark): the same workloads in plain eager PyTorch.

Same math as saddle's model/ and finetune/: a Llama decoder (RMSNorm, RoPE rotate-half, grouped-query attention,
SwiGLU, tied head when the config says so), LoRA r=8 alpha=16 on q,k,v,o (A Kaiming-uniform, B = 0), mean
cross-entropy, Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8) on the adapter factors only; f32, a fixed thread count.
Weights come from an HF folder (config.json + model.safetensors), read with json + struct + torch.frombuffer.
Tokens come from the same 64-bit LCG as the Go side, so the first step's loss must agree between the two.

Prints one JSON object on stdout. Needs only torch (Debian: python3-torch).
"""
import argparse
import json
import math
import os
import resource
import struct
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = bytearray(data[base + start : base + end])
        t = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]) if end > start else torch.empty(0)
        out[name] = t.reshape(info["shape"]).float()
    return out


def load_model(folder):
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    cfg = {
        "hidden": c["hidden_size"],
        "layers": c["num_hidden_layers"],
        "heads": c["num_attention_heads"],
        "kv_heads": c.get("num_key_value_heads", c["num_attention_heads"]),
        "head_dim": c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
        "vocab": c["vocab_size"],
        "eps": c.get("rms_norm_eps", 1e-6),
        "theta": c.get("rope_theta", 10000.0),
        "tie": c.get("tie_word_embeddings", False),
    }
    w = load_safetensors(os.path.join(folder, "model.safetensors"))
    for t in w.values():
        t.requires_grad_(False)
    return cfg, w


class LCG:
    """Knuth's MMIX LCG; the Go side draws the same token ids (state >> 33) % vocab."""

    def __init__(self, seed):
        self.s = seed & (2**64 - 1)

    def next(self, n):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        return (self.s >> 33) % n


def token_batch(rng, batch, seq, vocab):
    ids = [[rng.next(vocab) for _ in range(seq + 1)] for _ in range(batch)]
    t = torch.tensor(ids, dtype=torch.long)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


class Llama:
    def __init__(self, cfg, w, lora_rank=0, lora_alpha=16.0, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
        self.c, self.w = cfg, w
        self.scale = lora_alpha / lora_rank if lora_rank else 0.0
        self.lora = {}
        g = torch.Generator().manual_seed(0)
        if lora_rank:
            for l in range(cfg["layers"]):
                for t in targets:
                    name = f"model.layers.{l}.self_attn.{t}"
                    out_f, in_f = w[name + ".weight"].shape
                    bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform_(a=sqrt(5)) as PEFT
                    a = ((torch.rand(lora_rank, in_f, generator=g) * 2 - 1) * bound).requires_grad_(True)
                    b = torch.zeros(out_f, lora_rank, requires_grad=True)
                    self.lora[name] = (a, b)
        d, half = cfg["head_dim"], cfg["head_dim"] // 2
        self.inv_freq = 1.0 / (cfg["theta"] ** (torch.arange(0, half, dtype=torch.float64) * 2 / d))

    def params(self):
        return [p for ab in self.lora.values() for p in ab]

    def linear(self, name, x):
        y = x @ self.w[name + ".weight"].t()
        ab = self.lora.get(name)
        if ab is not None:
            y = y + (x @ ab[0].t()) @ ab[1].t() * self.scale
        return y

    def rms(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.c["eps"]) * weight

    def rope(self, x, pos):  # x [b, heads, s, d]
        ang = (pos.double()[:, None] * self.inv_freq[None, :]).float()
        ang = torch.cat([ang, ang], -1)
        cos, sin = ang.cos(), ang.sin()
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rot * sin

    def attention(self, p, x, pos, cache):
        c = self.c
        b, s, _ = x.shape
        h, kvh, d = c["heads"], c["kv_heads"], c["head_dim"]
        q = self.linear(p + "q_proj", x).view(b, s, h, d).transpose(1, 2)
        k = self.linear(p + "k_proj", x).view(b, s, kvh, d).transpose(1, 2)
        v = self.linear(p + "v_proj", x).view(b, s, kvh, d).transpose(1, 2)
        q, k = self.rope(q, pos), self.rope(k, pos)
        kpos = pos
        if cache is not None:  # decode: write this chunk's keys/values, attend over the filled part
            kc, vc, start = cache
            kc[:, :, start : start + s] = k
            vc[:, :, start : start + s] = v
            k, v = kc[:, :, : start + s], vc[:, :, : start + s]
            kpos = torch.arange(start + s)
        g = h // kvh
        qg = q.reshape(b, kvh, g, s, d)
        scores = (qg @ k.unsqueeze(2).transpose(-1, -2)) / math.sqrt(d)  # [b, kvh, g, s, keys]
        mask = kpos[None, :] <= pos[:, None]
        scores = scores.masked_fill(~mask, float("-inf"))
        out = torch.softmax(scores, -1) @ v.unsqueeze(2)
        out = out.reshape(b, h, s, d).transpose(1, 2).reshape(b, s, h * d)
        return self.linear(p + "o_proj", out)

    def forward(self, tokens, start=0, caches=None):
        w = self.w
        s = tokens.shape[1]
        pos = torch.arange(start, start + s)
        x = w["model.embed_tokens.weight"][tokens]
        for l in range(self.c["layers"]):
            p = f"model.layers.{l}."
            cache = None if caches is None else (caches[l][0], caches[l][1], start)
            x = x + self.attention(p + "self_attn.", self.rms(x, w[p + "input_layernorm.weight"]), pos, cache)
            hn = self.rms(x, w[p + "post_attention_layernorm.weight"])
            gate = self.linear(p + "mlp.gate_proj", hn)
            x = x + self.linear(p + "mlp.down_proj", F.silu(gate) * self.linear(p + "mlp.up_proj", hn))
        x = self.rms(x, w["model.norm.weight"])
        head = w["model.embed_tokens.weight"] if self.c["tie"] or "lm_head.weight" not in w else w["lm_head.weight"]
        return x @ head.t()


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train(args, cfg, w):
    m = Llama(cfg, w, lora_rank=8, lora_alpha=16.0)
    opt = torch.optim.Adam(m.params(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    rng = LCG(args.seed)
    times, cpu, losses = [], [], []
    for i in range(args.warmup + args.steps):
        tokens, targets = token_batch(rng, args.batch, args.seq, cfg["vocab"])
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        logits = m.forward(tokens)
        loss = F.cross_entropy(logits.reshape(-1, cfg["vocab"]), targets.reshape(-1))
        loss.backward()
        opt.step()
        lv = loss.item()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        losses.append(lv)
        if i >= args.warmup:
            times.append(dt)
            cpu.append(dc)
    return times, cpu, losses


@torch.no_grad()
def generate(args, cfg, w):
    m = Llama(cfg, w)
    cap = args.prompt + args.new_tokens
    rng = LCG(args.seed)
    prompt = [rng.next(cfg["vocab"]) for _ in range(args.prompt)]
    times, cpu, out = [], [], []
    for i in range(args.warmup + args.steps):
        caches = [(torch.zeros(1, cfg["kv_heads"], cap, cfg["head_dim"]), torch.zeros(1, cfg["kv_heads"], cap, cfg["head_dim"]))
                  for _ in range(cfg["layers"])]
        t0, c0 = time.perf_counter(), time.process_time()
        logits = m.forward(torch.tensor([prompt]), 0, caches)[0, -1]
        pos, out = len(prompt), []
        while len(out) < args.new_tokens:
            nxt = int(torch.argmax(logits))
            out.append(nxt)
            if len(out) == args.new_tokens:
                break
            logits = m.forward(torch.tensor([[nxt]]), pos, caches)[0, -1]
            pos += 1
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if i >= args.warmup:
            times.append(dt)
            cpu.append(dc)
    return times, cpu, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF folder: config.json + model.safetensors")
    ap.add_argument("--mode", choices=["train", "generate"], required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (train) or generations (generate)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg, w = load_model(args.model)
    res = {"side": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(), "mode": args.mode,
           "blas": blas_info(), "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "")}
    if args.mode == "train":
        times, cpu, losses = train(args, cfg, w)
        res.update(batch=args.batch, seq=args.seq, step_s=times, step_cpu_s=cpu, first_loss=losses[0], last_loss=losses[-1],
                   tokens_per_step=args.batch * args.seq)
    else:
        times, cpu, out = generate(args, cfg, w)
        res.update(prompt=args.prompt, new_tokens=args.new_tokens, gen_s=times, gen_cpu_s=cpu, tokens=out[:16])
    res["peak_rss_mib"] = peak_rss_mib()
    json.dump(res, sys.stdout)
    print()


def blas_info():
    """Which BLAS library this process mapped, and OpenBLAS's kernel (core) name when it is OpenBLAS."""
    libs = sorted({line.split()[-1] for line in open("/proc/self/maps") if "blas" in line.lower() and ".so" in line})
    info = {"libraries": libs}
    for lib in libs:
        if "openblas" in lib:
            try:
                import ctypes

                h = ctypes.CDLL(lib)
                h.openblas_get_corename.restype = ctypes.c_char_p
                h.openblas_get_config.restype = ctypes.c_char_p
                info["openblas_core"] = h.openblas_get_corename().decode()
                info["openblas_config"] = h.openblas_get_config().decode()
                info["openblas_threads"] = h.openblas_get_num_threads()
            except (OSError, AttributeError):
                pass
    return info


if __name__ == "__main__":
    main()
