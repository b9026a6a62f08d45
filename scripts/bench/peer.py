#!/usr/bin/env python3
"""PyTorch peer of scripts/bench (saddle's Go benchmark): the same workloads in plain eager PyTorch.

Same math as saddle's model/ and finetune/: a Llama-family decoder (RMSNorm, RoPE rotate-half with llama3/linear
scaling, grouped-query attention, Qwen3's q/k norms, Qwen2's q/k/v biases, SwiGLU, tied head when the config says
so), LoRA (default r=8 alpha=16 on q,k,v,o; --rank/--alpha/--targets, "all-linear" adds gate,up,down; A
Kaiming-uniform, B = 0), mean cross-entropy, Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8) on the adapter factors only;
f32, a fixed thread count. Weights come from an HF folder (config.json + model.safetensors, or shards named by
model.safetensors.index.json), read one tensor at a time with json + struct + torch.frombuffer and widened to f32
(what transformers' torch_dtype=torch.float32 gives, without its transient second copy). Tokens come from the same
64-bit LCG as the Go side, so the first step's loss must agree between the two.

Prints one JSON object on stdout, with the peak RSS (VmHWM) and the time from process start (imports included) to
the end of the first optimizer step. Needs only torch (Debian: python3-torch).
"""
import argparse
import json
import math
import os
import resource
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_safetensors(path, out):
    """Adds the tensors of one safetensors file to out as f32, reading one tensor's bytes at a time."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__" or name.endswith(".rotary_emb.inv_freq"):
                continue
            start, end = info["data_offsets"]
            buf = bytearray(end - start)
            f.seek(base + start)
            f.readinto(buf)
            t = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]) if end > start else torch.empty(0)
            out[name] = t.reshape(info["shape"]).float()
            del buf, t
    return out


def load_weights(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    out = {}
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        for shard in shards:
            load_safetensors(os.path.join(folder, shard), out)
    else:
        load_safetensors(os.path.join(folder, "model.safetensors"), out)
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
        "scaling": c.get("rope_scaling"),
        "tie": c.get("tie_word_embeddings", False),
        "qk_norm": c.get("model_type") == "qwen3",
    }
    w = load_weights(folder)
    if cfg["tie"]:
        w.pop("lm_head.weight", None)
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


MODULES = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def rope_inv_freq(cfg):
    """θ^(-2i/d) in float64, adjusted by the rope scaling as saddle's Config.RopeInverseFrequencies does."""
    d = cfg["head_dim"]
    inv = 1.0 / (cfg["theta"] ** (torch.arange(0, d // 2, dtype=torch.float64) * 2 / d))
    s = cfg["scaling"] or {}
    kind = s.get("rope_type", s.get("type", "default"))
    if kind == "linear":
        inv = inv / s["factor"]
    elif kind == "llama3":
        old, factor = s["original_max_position_embeddings"], s["factor"]
        low, high = s["low_freq_factor"], s["high_freq_factor"]
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - low) / (high - low)
        mid = (1 - smooth) * inv / factor + smooth * inv
        inv = torch.where(wavelen < old / high, inv, torch.where(wavelen > old / low, inv / factor, mid))
    elif kind != "default":
        raise SystemExit(f"peer.py: rope scaling {kind!r} is not supported")
    return inv


class Llama:
    def __init__(self, cfg, w, lora_rank=0, lora_alpha=16.0, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
        self.c, self.w = cfg, w
        self.scale = lora_alpha / lora_rank if lora_rank else 0.0
        self.lora = {}
        g = torch.Generator().manual_seed(0)
        if "all-linear" in targets:
            targets = list(MODULES)
        unknown = set(targets) - set(MODULES)
        if unknown:
            raise SystemExit(f"peer.py: unknown LoRA targets {sorted(unknown)} (known: {', '.join(MODULES)}, all-linear)")
        if lora_rank:
            for l in range(cfg["layers"]):
                for t in [m for m in MODULES if m in targets]:
                    name = f"model.layers.{l}.{MODULES[t]}.{t}"
                    out_f, in_f = w[name + ".weight"].shape
                    bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform_(a=sqrt(5)) as PEFT
                    a = ((torch.rand(lora_rank, in_f, generator=g) * 2 - 1) * bound).requires_grad_(True)
                    b = torch.zeros(out_f, lora_rank, requires_grad=True)
                    self.lora[name] = (a, b)
        self.inv_freq = rope_inv_freq(cfg)

    def params(self):
        return [p for ab in self.lora.values() for p in ab]

    def linear(self, name, x):
        wt = self.w[name + ".weight"]
        y = x @ wt.t() if wt.dtype == x.dtype else (x.to(wt.dtype) @ wt.t()).float()
        bias = self.w.get(name + ".bias")
        if bias is not None:
            y = y + bias
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
        q = self.linear(p + "q_proj", x).view(b, s, h, d)
        k = self.linear(p + "k_proj", x).view(b, s, kvh, d)
        if c["qk_norm"]:
            q, k = self.rms(q, self.w[p + "q_norm.weight"]), self.rms(k, self.w[p + "k_norm.weight"])
        q, k = q.transpose(1, 2), k.transpose(1, 2)
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
        x = w["model.embed_tokens.weight"][tokens].float()
        for l in range(self.c["layers"]):
            p = f"model.layers.{l}."
            cache = None if caches is None else (caches[l][0], caches[l][1], start)
            x = x + self.attention(p + "self_attn.", self.rms(x, w[p + "input_layernorm.weight"]), pos, cache)
            hn = self.rms(x, w[p + "post_attention_layernorm.weight"])
            gate = self.linear(p + "mlp.gate_proj", hn)
            x = x + self.linear(p + "mlp.down_proj", F.silu(gate) * self.linear(p + "mlp.up_proj", hn))
        x = self.rms(x, w["model.norm.weight"])
        head = w["model.embed_tokens.weight"] if self.c["tie"] or "lm_head.weight" not in w else w["lm_head.weight"]
        return x @ head.t() if head.dtype == x.dtype else (x.to(head.dtype) @ head.t()).float()


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def vm_hwm_gb():
    """Peak resident set, VmHWM of /proc/self/status, in GB (10^9 bytes), as the Go side reports it."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return float("nan")


def since_process_start():
    """Wall time since this process started, from /proc/self/stat's starttime and /proc/uptime (as the Go side)."""
    try:
        stat = open("/proc/self/stat").read()
        start = int(stat[stat.rindex(")") + 1 :].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return uptime - start / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def mm_rate(reps=5):
    """torch's 1024² f32 matmul rate (OpenBLAS's GEMM), the best of reps runs, in GFLOP/s: measured around the timed
    training steps so that W2's rate can be read against the machine's in the same minute."""
    n = 1024
    a = (torch.arange(n * n, dtype=torch.float32) % 7 - 3).reshape(n, n)
    best = float("inf")
    for i in range(reps + 1):
        t0 = time.perf_counter()
        torch.mm(a, a)
        if i > 0:
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def train(args, cfg, w, res):
    m = Llama(cfg, w, lora_rank=args.rank, lora_alpha=args.alpha, targets=args.targets.split(","))
    res.update(rank=args.rank, alpha=args.alpha, targets=args.targets.split(","), adapters=len(m.lora),
               adapter_params=sum(p.numel() for p in m.params()))
    opt = torch.optim.Adam(m.params(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    rng = LCG(args.seed)
    times, cpu, losses = [], [], []
    before = None
    for i in range(args.warmup + args.steps):
        tokens, targets = token_batch(rng, args.batch, args.seq, cfg["vocab"])
        if i == args.warmup:
            before = mm_rate()
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        logits = m.forward(tokens)
        loss = F.cross_entropy(logits.reshape(-1, cfg["vocab"]), targets.reshape(-1))
        loss.backward()
        opt.step()
        lv = loss.item()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if i == 0:
            res.update(first_step_s=dt, time_to_first_step_s=round(since_process_start(), 2))
        losses.append(lv)
        if i >= args.warmup:
            times.append(dt)
            cpu.append(dc)
    res.update(blas_gflops_around=[before, mm_rate()])
    return times, cpu, losses


@torch.no_grad()
def generate(args, cfg, w):
    """Greedy KV-cached decoding of --gen-batch copies of the prompt, decoded together (one matmul per layer for the
    whole batch). --weights bf16 keeps the matrices in bf16 and multiplies in bf16 (torch's CPU kernels), f32 widens
    them as transformers' torch_dtype=float32 would."""
    if args.weights == "bf16":
        for name, t in w.items():
            if t.dim() == 2:
                w[name] = t.to(torch.bfloat16)
    m = Llama(cfg, w)
    cap = args.prompt + args.new_tokens
    rng = LCG(args.seed)
    prompt = [rng.next(cfg["vocab"]) for _ in range(args.prompt)]
    b = args.gen_batch
    times, cpu, out = [], [], []
    dt = torch.float32
    for i in range(args.warmup + args.steps):
        caches = [(torch.zeros(b, cfg["kv_heads"], cap, cfg["head_dim"], dtype=dt),
                   torch.zeros(b, cfg["kv_heads"], cap, cfg["head_dim"], dtype=dt)) for _ in range(cfg["layers"])]
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            logits = m.forward(torch.tensor([prompt] * b), 0, caches)[:, -1]
            pos, out = len(prompt), []
            while len(out) < args.new_tokens:
                nxt = torch.argmax(logits, -1)
                out.append(int(nxt[0]))
                if len(out) == args.new_tokens:
                    break
                logits = m.forward(nxt[:, None], pos, caches)[:, -1]
                pos += 1
        dt_, dc = time.perf_counter() - t0, time.process_time() - c0
        if i >= args.warmup:
            times.append(dt_)
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
    ap.add_argument("--gen-batch", type=int, default=1, help="generate: sequences decoded together")
    ap.add_argument("--weights", choices=["f32", "bf16"], default="f32", help="generate: matrices held and multiplied in")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank")
    ap.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (scale alpha/rank)")
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj", help="comma-separated LoRA targets, or all-linear")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    cfg, w = load_model(args.model)
    res = {"side": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(), "mode": args.mode,
           "blas": blas_info(), "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""), "dtype": "f32",
           "load_s": time.perf_counter() - t0, "params": sum(t.numel() for t in w.values())}
    if args.mode == "train":
        times, cpu, losses = train(args, cfg, w, res)
        med = statistics.median(times) if times else float("nan")
        res.update(batch=args.batch, seq=args.seq, step_s=times, step_cpu_s=cpu, first_loss=losses[0], last_loss=losses[-1],
                   tokens_per_step=args.batch * args.seq, median_step_s=med, tokens_per_s=args.batch * args.seq / med)
    else:
        times, cpu, out = generate(args, cfg, w)
        res.update(prompt=args.prompt, new_tokens=args.new_tokens, gen_s=times, gen_cpu_s=cpu, tokens=out[:16],
                   gen_batch=args.gen_batch, generated=args.gen_batch * len(out), dtype=args.weights,
                   tokens_per_s=args.gen_batch * len(out) / statistics.median(times))
    res["peak_rss_mib"] = peak_rss_mib()
    res["peak_rss_gb"] = vm_hwm_gb()
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
