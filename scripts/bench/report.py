#!/usr/bin/env python3
"""Prints bench.sh's W1-W3 comparison: RESULTS.jsonl STREAM.json MATMUL.json [PEER-PROBE.jsonl] (see scripts/bench.sh). Every figure is the median
over all timed samples of all rounds, with the spread (min–max over those samples) beside it."""
import json
import statistics
import sys

runs = [json.loads(l) for l in open(sys.argv[1])]
stream = json.load(open(sys.argv[2]))
matmul = json.load(open(sys.argv[3]))
probe = []
if len(sys.argv) > 4:
    try:
        probe = [json.loads(l) for l in open(sys.argv[4]) if l.strip()]
    except OSError:
        pass
blas_gemm = max((x["gemm_gflops"] for r in probe for x in r["results"]), default=None)


def side_runs(wl, side):
    return [r["result"] for r in runs if r["workload"] == wl and r["result"]["side"] == side]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


names = {"W1": "W1 train stories260K 16×256", "W2": "W2 train synth-512 4×256",
         "W3s": "W3 generate stories260K", "W3m": "W3 generate synth-512", "W3b": "W3 generate synth-512, 8 sequences"}
rows = []
for wl in names:
    row = {"workload": names[wl], "gen": wl.startswith("W3")}
    for side in ("saddle", "pytorch"):
        rs = side_runs(wl, side)
        if not rs:
            continue
        if row["gen"]:
            per = rs[0].get("generated", rs[0]["new_tokens"])
            wall = [1e3 * t / per for r in rs for t in r["gen_s"]]  # ms per token
            cpu = [1e3 * t / per for r in rs for t in r["gen_cpu_s"]]
            row[side] = {"tok_s": 1e3 / med(wall)}
            if side == "saddle":
                row["bytes"] = rs[0]["weight_bytes_per_pass"] / rs[0].get("gen_batch", 1)
                row["decoder"] = rs[0].get("decoder", "graph")
        else:
            wall = [1e3 * t for r in rs for t in r["step_s"]]
            cpu = [1e3 * t for r in rs for t in r["step_cpu_s"]]
            per = rs[0]["tokens_per_step"]
            row[side] = {"tok_s": per / (med(wall) / 1e3), "loss": rs[0]["first_loss"]}
        row[side].update(ms=med(wall), lo=min(wall), hi=max(wall), cpu_ms=med(cpu), rss=max(r["peak_rss_mib"] for r in rs),
                         samples=len(wall))
        if side == "saddle" and "flops" in rs[0]:
            row["flops"] = rs[0]["flops"]["total"]
        if side == "pytorch":
            row["peer"] = f'{rs[0].get("blas", {}).get("openblas_core", "?")}, {rs[0]["threads"]} thr, {rs[0].get("dtype", "f32")}'
    rows.append(row)


def fmt(x, d=0):
    return "—" if x is None or x != x else f"{x:,.{d}f}"


print("| workload | saddle tok/s | peer tok/s | ratio | saddle ms (min–max) | peer ms (min–max) | CPU-s ratio | "
      "saddle RSS MiB | peer RSS MiB | peer config | first loss saddle / peer |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for row in rows:
    s, p = row.get("saddle"), row.get("pytorch")
    ratio = s["tok_s"] / p["tok_s"] if s and p else None
    cpur = p["cpu_ms"] / s["cpu_ms"] if s and p else None
    loss = f'{s["loss"]:.6f} / {p["loss"]:.6f}' if s and p and "loss" in s else "—"
    span = lambda r: f'{fmt(r["ms"], 1)} ({fmt(r["lo"], 1)}–{fmt(r["hi"], 1)})' if r else "—"
    print(f'| {row["workload"]} | {fmt(s and s["tok_s"])} | {fmt(p and p["tok_s"])} | {fmt(ratio, 2)}× | {span(s)} | '
          f'{span(p)} | {fmt(cpur, 2)}× | {fmt(s and s["rss"])} | {fmt(p and p["rss"])} | {row.get("peer", "—")} | {loss} |')
print("\nms: per step (W1, W2) or per generated token (W3, prompt included; for 8 sequences, per token of any of them).")
print("ratio = saddle tokens/s ÷ peer tokens/s (medians of wall time); CPU-s ratio = peer CPU seconds ÷ saddle's.")
bw = stream["read_gb_s"]
print(f'\nMemory bandwidth (STREAM-style, {stream["threads"]} threads): read {bw:.1f} GB/s, copy {stream["copy_gb_s"]:.1f} GB/s.')
for row in rows:
    if row["gen"] and row.get("saddle"):
        limit = 1e3 * row["bytes"] / (bw * 1e9)
        print(f'{row["workload"]}: a pass reads {row["bytes"] / 1e6:.1f} MB of weights per token; bandwidth limit '
              f'{limit:.2f} ms/token; saddle ({row["decoder"]} decoder) {row["saddle"]["ms"]:.2f} ms = '
              f'{row["saddle"]["ms"] / limit:.2f}× the limit')
w2 = next((r for r in rows if r["workload"].startswith("W2")), None)
if w2 and "flops" in w2 and "saddle" in w2:
    print(f'\nW2 matmul FLOPs per step: {w2["flops"]/1e9:.1f} GFLOP (dense 4·N·T, LoRA 6·r·(in+out)·T, attention '
          f'12·B·heads·headDim·layers·seq(seq+1)/2, the causal triangle); achieved: saddle {w2["flops"]/w2["saddle"]["ms"]/1e6:.1f} GFLOP/s'
          + (f', peer {w2["flops"]/w2["pytorch"]["ms"]/1e6:.1f} GFLOP/s' if "pytorch" in w2 else ""))
    rate = w2["flops"] / w2["saddle"]["ms"] / 1e6
    rates = {"the Go backend": matmul["gflops"]}
    if "gemm_gflops" in matmul:
        rates["saddle's internal/gemm"] = matmul["gemm_gflops"]
    if blas_gemm:
        rates["OpenBLAS (the peer probe's best)"] = blas_gemm
    best_name = max(rates, key=rates.get)
    print('machine f32 matmul rate (1024²): ' + ', '.join(f'{k} {v:.1f} GFLOP/s' for k, v in rates.items())
          + f'; W2 runs at {100 * rate / rates[best_name]:.0f} % of the fastest ({best_name})')

# The same reading in the same minute: each W2 process measures the 1024² rate of its own matmul just before and just
# after its timed steps (saddle: internal/gemm; the peer: torch.mm, OpenBLAS), so every round gives W2's rate against
# the fastest 1024² rate measured in that round (this VM's speed drifts by up to 2× within the hour, so a rate
# measured minutes apart can be off either way).
if w2 and "flops" in w2:
    per_round = []
    for r in sorted({x["round"] for x in runs if x["workload"] == "W2"}):
        got = {x["result"]["side"]: x["result"] for x in runs if x["workload"] == "W2" and x["round"] == r}
        s = got.get("saddle")
        if not s or "gemm_gflops_around" not in s:
            continue
        rates = {"saddle's internal/gemm": max(s["gemm_gflops_around"])}
        if "pytorch" in got and got["pytorch"].get("blas_gflops_around"):
            rates["OpenBLAS"] = max(x for x in got["pytorch"]["blas_gflops_around"] if x)
        best_name = max(rates, key=rates.get)
        rate = w2["flops"] / (1e3 * med(s["step_s"])) / 1e6
        per_round.append((r, rate, best_name, rates[best_name], rate / rates[best_name]))
    if per_round:
        fr = [x[4] for x in per_round]
        print(f'W2 against the fastest 1024² rate measured in the same round, around its steps: median '
              f'{100 * med(fr):.0f} % (rounds: ' + '; '.join(
                  f'{r}: {rate:.1f} GFLOP/s = {100 * f:.0f} % of {name} {best:.1f}' for r, rate, name, best, f in per_round) + ')')
