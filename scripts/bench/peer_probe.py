#!/usr/bin/env python3
"""Measures the PyTorch peer's matmul speed in this process's BLAS configuration (OPENBLAS_CORETYPE is read when
the library loads, so scripts/bench.sh runs one process per core type) for every thread count up to --max-threads:
a 1024² f32 GEMM (the training workloads' kind of product) and a one-row product with a 2048×8192 matrix held in
f32 and in bf16 (decoding's kind). Prints one JSON object; bench.sh runs the peer in the fastest configuration of each
kind."""
import argparse
import json
import os
import time

import torch


def best_of(f, n):
    f()
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.manual_seed(0)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    x, w = torch.randn(1, 2048), torch.randn(8192, 2048)
    w16, x16 = w.to(torch.bfloat16), x.to(torch.bfloat16)
    core = ""
    try:
        import ctypes

        for line in open("/proc/self/maps"):
            if "openblas" in line and ".so" in line:
                h = ctypes.CDLL(line.split()[-1])
                h.openblas_get_corename.restype = ctypes.c_char_p
                core = h.openblas_get_corename().decode()
                break
    except (OSError, AttributeError):
        pass
    rows = []
    for threads in range(1, args.max_threads + 1):
        torch.set_num_threads(threads)
        gemm = best_of(lambda: a @ b, 5)
        gemv32 = best_of(lambda: x @ w.t(), 20)
        gemv16 = best_of(lambda: x16 @ w16.t(), 5)
        rows.append({"threads": threads, "gemm_gflops": 2 * 1024**3 / gemm / 1e9, "gemv_f32_ms": gemv32 * 1e3,
                     "gemv_bf16_ms": gemv16 * 1e3})
    print(json.dumps({"coretype": os.environ.get("OPENBLAS_CORETYPE", ""), "core": core, "results": rows}))


if __name__ == "__main__":
    main()
