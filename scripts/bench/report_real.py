#!/usr/bin/env python3
"""Prints bench.sh --real's comparison: RESULTS.jsonl NAME STREAM.json WARMUP (see scripts/bench.sh)."""
import json
import statistics
import sys

runs = {}  # side -> its runs, one per round
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["side"], []).append(r)
stream = json.load(open(sys.argv[3]))
warmup = int(sys.argv[4]) if len(sys.argv) > 4 else 1  # untimed steps (or generations) before the timed ones


def ok(r):
    return bool(r) and "failed" not in r


def pooled(rs):
    """One side's runs as one: the timed steps (or generations) of every round together, the largest peak RSS, the
    median of the per-run times to the first step; a failed run when none succeeded."""
    good = [r for r in rs if ok(r)]
    if not good:
        return rs[-1] if rs else {}
    m = dict(good[0])
    m["per_run"] = len(good[0].get("step_s", good[0].get("gen_s", [])))
    for key in ("step_s", "step_cpu_s", "gen_s", "gen_cpu_s"):
        if key in m:
            m[key] = [x for r in good for x in r[key]]
    if "step_s" in m:
        m["median_step_s"] = statistics.median(m["step_s"])
        m["tokens_per_s"] = m["tokens_per_step"] / m["median_step_s"]
    m["peak_rss_gb"] = max(r["peak_rss_gb"] for r in good)
    for key in ("time_to_first_step_s", "load_s", "first_step_s"):
        if key in m:
            m[key] = statistics.median(r[key] for r in good)
    m["rounds"] = len(good)
    return m


s, p = pooled(runs.get("saddle", [])), pooled(runs.get("pytorch", []))


ref = s if ok(s) else p
gen = ref.get("mode") == "generate"
if gen:
    print(f'{sys.argv[2]}-shaped, random bf16 weights: greedy decoding, {ref.get("prompt")}-token prompt + '
          f'{ref.get("new_tokens")} new tokens, {ref.get("per_run", len(ref.get("gen_s", [])))} timed generations after {warmup} warmup'
          + (f' pooled over {ref["rounds"]} rounds (the order flipped every round)' if ref.get("rounds", 1) > 1 else ''))
else:
    print(f'{sys.argv[2]}-shaped, random bf16 weights: batch {ref.get("batch", "?")} × {ref.get("seq", "?")}, LoRA r=16 '
          f'alpha 32 on q,k,v,o,gate,up,down ({ref.get("adapters", "?")} adapters, {ref.get("adapter_params", 0):,} '
          f'parameters), Adam; {ref.get("per_run", len(ref.get("step_s", [])))} timed steps after {warmup} warmup step{"s" if warmup != 1 else ""}'
          + (f' in each run, pooled over {ref["rounds"]} rounds (the order flipped every round)' if ref.get("rounds", 1) > 1 else ''))
if ok(s):
    if gen:
        print(f'saddle: {s["decoder"]} decoder, weights {s["weights_dtype"]}, backend {s["backend"]}')
    else:
        print(f'saddle: compute dtype {s["dtype"]}, grad checkpoint {"on" if s["grad_checkpoint"] else "off"}, backend {s["backend"]}')
if ok(p):
    print(f'peer: torch {p["torch"]}, eager, {p.get("dtype", "f32")} weights, {p["threads"]} threads, OpenBLAS core '
          f'{p.get("blas", {}).get("openblas_core", "?")}')
for r in (s, p):
    if not ok(r):
        continue
    if r.get("step_cpu_s"):
        r["median_step_cpu_s"] = statistics.median(r["step_cpu_s"])
    if gen:
        per = r["generated"] if "generated" in r else r["new_tokens"]
        r["ms_per_token"] = 1e3 * statistics.median(r["gen_s"]) / per
        r["cpu_ms_per_token"] = 1e3 * statistics.median(r["gen_cpu_s"]) / per
        r["tokens_per_s"] = per / statistics.median(r["gen_s"])


def val(r, key, d):
    if not r:
        return "—"
    if "failed" in r:
        return "failed: " + r["failed"]
    v = r.get(key)
    return "—" if v is None else f"{v:,.{d}f}"


def ratio(key):
    if key != "first_loss" and ok(s) and ok(p) and s.get(key) and p.get(key):
        return f"{s[key] / p[key]:.2f}×"
    return "—"


print()
print("| | saddle | PyTorch peer | saddle / peer |")
print("|---|---|---|---|")
if gen:
    keys = [("tokens/s (median)", "tokens_per_s", 2), ("ms per token (prompt included)", "ms_per_token", 1),
            ("CPU ms per token", "cpu_ms_per_token", 1), ("peak RSS GB (VmHWM)", "peak_rss_gb", 2)]
else:
    keys = [("tokens/s (median of timed steps)", "tokens_per_s", 2), ("step wall s (median)", "median_step_s", 2),
            ("step CPU s (median)", "median_step_cpu_s", 2), ("peak RSS GB (VmHWM)", "peak_rss_gb", 2),
            ("time to first step s", "time_to_first_step_s", 1), ("… loading s", "load_s", 1),
            ("… first step s (compilation included)", "first_step_s", 1), ("first-step loss", "first_loss", 6)]
for label, key, d in keys:
    print(f"| {label} | {val(s, key, d)} | {val(p, key, d)} | {ratio(key)} |")
if gen and ok(s):
    limit = 1e3 * s["weight_bytes_per_pass"] / (stream["read_gb_s"] * 1e9)
    print(f'\nmemory bandwidth (read, {stream["threads"]} threads): {stream["read_gb_s"]:.1f} GB/s; a decoding pass reads '
          f'{s["weight_bytes_per_pass"] / 1e9:.2f} GB of {s["weights_dtype"]} weights: limit {limit:.1f} ms/token; saddle '
          f'{s["ms_per_token"]:.1f} ms/token = {s["ms_per_token"] / limit:.2f}× the limit')
if not gen and ok(s) and ok(p):
    rel = abs(s["first_loss"] - p["first_loss"]) / abs(p["first_loss"])
    print(f"\nfirst-step losses differ by {rel:.1e} relative (both sides read the same bf16 weights).")
print("GB = 10^9 bytes. CPU s is the process's user+sys time, less sensitive than wall time to other jobs on the machine.")

if not gen and ok(s) and ok(p) and s.get("rounds", 1) > 1:
    by_round = {}
    for side in ("saddle", "pytorch"):
        for r in runs.get(side, []):
            if ok(r):
                by_round.setdefault(r.get("round"), {})[side] = statistics.median(r["step_s"])
    print("per round, saddle / peer tokens/s ratio: " + ", ".join(
        f'{k}: {v["pytorch"] / v["saddle"]:.2f}×' for k, v in sorted(by_round.items()) if len(v) == 2)
          + f'; fastest step against fastest step: {min(p["step_s"]) / min(s["step_s"]):.2f}×')
