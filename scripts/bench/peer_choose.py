#!/usr/bin/env python3
"""Reads peer_probe.py's lines, prints their table on stderr and, on stdout, the fastest configuration for training
(the best GEMM with torch using every core) and for generation (the fastest one-row product, f32 or bf16 weights):
    TRAIN_CORETYPE TRAIN_THREADS GEN_CORETYPE GEN_THREADS GEN_WEIGHTS     ("-" for the library's default core)."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not rows:
    sys.exit("peer_choose.py: no configuration of the peer ran")
print("| OpenBLAS core (asked → used) | threads | GEMM 1024² GFLOP/s | 1×2048·2048×8192 f32 ms | same, bf16 ms |", file=sys.stderr)
print("|---|---|---|---|---|", file=sys.stderr)
best_t = best_g = None
# Training runs torch with every core: OpenBLAS's GEMMs use all of them whatever torch's thread count (so the probe's
# GEMM cannot tell thread counts apart, beyond noise), while torch's own elementwise and reduction kernels run on
# that many threads (1 thread cost the peer 40 % on W2). The core type is chosen by the GEMM at that count.
max_threads = max(x["threads"] for r in rows for x in r["results"])
for r in rows:
    for x in r["results"]:
        print(f'| {r["coretype"] or "(library default)"} → {r["core"]} | {x["threads"]} | {x["gemm_gflops"]:.1f} | '
              f'{x["gemv_f32_ms"]:.2f} | {x["gemv_bf16_ms"]:.2f} |', file=sys.stderr)
        if x["threads"] == max_threads and (best_t is None or x["gemm_gflops"] > best_t[0]):
            best_t = (x["gemm_gflops"], r["coretype"], x["threads"])
        for wt in ("f32", "bf16"):
            ms = x[f"gemv_{wt}_ms"]
            if best_g is None or ms < best_g[0]:
                best_g = (ms, r["coretype"], x["threads"], wt)
print(best_t[1] or "-", best_t[2], best_g[1] or "-", best_g[2], best_g[3])
