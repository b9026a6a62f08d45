#!/usr/bin/env bash
# Training and generation throughput of saddle against plain PyTorch, measured in ONE run on this machine:
#   W1  LoRA r=8 on q,k,v,o + Adam, stories260K (HF folder), batch 16 × 256
#   W2  the same on a random-weight Llama (hidden 512, 8 layers, 8 heads, 4 KV heads, FFN 1408, vocab 32000),
#       batch 4 × 256
#   W3  greedy generation with a KV cache (8-token prompt, 128 new tokens) on both models
# f32 and the same thread count on both sides (THREADS, default 2). The workloads run in ROUNDS rounds, saddle and
# the peer alternating (the order flips every round), each run a fresh process; the table shows medians over all
# timed steps, the ratio saddle/peer, CPU seconds per step (less sensitive than wall time to other jobs on the
# machine), peak RSS, and W2's achieved GFLOP/s (the FLOP count is defined in scripts/bench/main.go: trainFLOPs).
#
# Usage: bash scripts/bench.sh [--rounds N] [--quick] [--no-peer] [--install-peer]
#   --quick         1 round, fewer steps (a smoke test, not a measurement)
#   --no-peer       saddle alone
#   --install-peer  apt-get install python3-torch libopenblas0-pthread first (root, Debian)
#
# Real sizes: bash scripts/bench.sh --real qwen3-0.6b|llama-3.2-1b|llama-3.1-8b [--seq N] [--steps N]
#     [--saddle-flags "-dtype bf16 -grad-checkpoint"] [--no-peer] [--install-peer]
#   LoRA r=16 (alpha 32) on all linear layers (q,k,v,o,gate,up,down) + Adam, batch 1 × seq (default 512; 256 for
#   the 8B), 1 warmup step then --steps timed ones (default 3). The model is a random-weight HF folder with the exact
#   config.json, shapes, bf16 shards and tokenizer of the published one (scripts/bench -write-shape), written once
#   into $BENCH_DIR/shape-NAME and reused. saddle, then the peer (f32 eager, weights widened to f32 on load), each in
#   a fresh process, never both at once; the table shows tokens/s (median of the timed steps), peak RSS (VmHWM),
#   time to first step (process start to the end of the first optimizer step: loading and compiling included), the
#   first-step losses and the ratios saddle/peer. The peer is skipped when its f32 weights alone would not fit in
#   this machine's memory (the 8B: 32 GB). Results: $BENCH_DIR/real-NAME.jsonl.
# Environment: SADDLE_SHARED (test data, default ../shared), BENCH_DIR (work folder, default /tmp/saddle-bench),
#   THREADS, PEER_OPENBLAS_CORETYPE (auto | keep | a core name; see below).
#
# OpenBLAS: 0.3.21 (Debian 12) does not know recent Xeons and falls back to its generic "Prescott" kernels (~7×
# slower matmuls). With PEER_OPENBLAS_CORETYPE=auto (the default) the peer's command alone gets
# OPENBLAS_CORETYPE=SkylakeX on AVX-512 machines (Haswell on AVX2 ones) and no OPENBLAS_L2_SIZE; the peer reports the
# core it ran. "keep" leaves the environment as it is. The peer also gets OMP_WAIT_POLICY=PASSIVE: libgomp's idle
# threads otherwise spin between parallel regions, which costs the peer 20-40 % on a machine shared with other jobs.
set -euo pipefail
export GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd

here=$(cd "$(dirname "$0")/.." && pwd)
rounds=3 quick=0 peer=1 install=0 real="" real_seq="" real_steps="" saddle_flags=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift ;;
    --quick) quick=1 rounds=1 ;;
    --no-peer) peer=0 ;;
    --install-peer) install=1 ;;
    --real) real=$2; shift ;;
    --seq) real_seq=$2; shift ;;
    --steps) real_steps=$2; shift ;;
    --saddle-flags) saddle_flags=$2; shift ;;
    *) echo "bench.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
threads=${THREADS:-2}
shared=${SADDLE_SHARED:-$here/../shared}
stories=$shared/models/stories260K-hf
work=${BENCH_DIR:-/tmp/saddle-bench}
mkdir -p "$work"
if [ -n "$real" ]; then
  case "$real" in
    qwen3-0.6b|llama-3.2-1b|llama-3.1-8b) ;;
    *) echo "bench.sh: --real $real: use qwen3-0.6b, llama-3.2-1b or llama-3.1-8b" >&2; exit 2 ;;
  esac
  if [ -z "$real_seq" ]; then
    real_seq=512
    [ "$real" = llama-3.1-8b ] && real_seq=256
  fi
  real_steps=${real_steps:-3}
elif [ -n "$real_seq$real_steps$saddle_flags" ]; then
  echo "bench.sh: --seq, --steps and --saddle-flags go with --real" >&2
  exit 2
fi
results=$work/results.jsonl
[ -n "$real" ] && results=$work/real-$real.jsonl
: >"$results"

if [ -z "$real" ] && [ ! -f "$stories/model.safetensors" ]; then
  echo "bench.sh: $stories not found (set SADDLE_SHARED to the folder holding models/stories260K-hf)" >&2
  exit 1
fi

echo "== building scripts/bench (GOEXPERIMENT=simd, -tags noxla)"
(cd "$here" && go build -tags noxla -o "$work/bench" ./scripts/bench)
bench=$work/bench

synth=$work/synth-512
if [ -z "$real" ] && [ ! -f "$synth/model.safetensors" ]; then
  echo "== writing the W2 model (random weights) to $synth"
  "$bench" -write-synth "$synth"
fi

py=/usr/bin/python3
if [ "$install" = 1 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch libopenblas0-pthread >/dev/null
fi
if [ "$peer" = 1 ] && ! "$py" -c 'import torch' 2>/dev/null; then
  echo "bench.sh: PyTorch is not installed (Debian: apt-get install python3-torch libopenblas0-pthread, or pass" \
    "--install-peer); measuring saddle alone" >&2
  peer=0
fi

peer_env=(env)
case "${PEER_OPENBLAS_CORETYPE:-auto}" in
  keep) ;;
  auto)
    if grep -qw avx512f /proc/cpuinfo; then peer_env=(env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=SkylakeX)
    elif grep -qw avx2 /proc/cpuinfo; then peer_env=(env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=Haswell)
    fi ;;
  *) peer_env=(env -u OPENBLAS_L2_SIZE "OPENBLAS_CORETYPE=$PEER_OPENBLAS_CORETYPE") ;;
esac
[ "$peer" = 1 ] && echo "== peer environment: ${peer_env[*]} OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE"

if [ -n "$real" ]; then
  folder=$work/shape-$real
  if [ ! -f "$folder/config.json" ]; then # config.json is written last: its presence marks a complete folder
    echo "== writing the $real-shaped model (random bf16 weights) to $folder"
    "$bench" -write-shape "$real" "$folder"
  fi
  weights_bytes=$(du -bc "$folder"/*.safetensors | tail -n 1 | cut -f1)
  mem_bytes=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024))
  if [ "$peer" = 1 ] && [ $((weights_bytes * 2)) -gt $((mem_bytes * 9 / 10)) ]; then
    echo "bench.sh: skipping the peer: its f32 weights alone take $((weights_bytes * 2 / 1000000000)) GB," \
      "this machine has $((mem_bytes / 1000000000)) GB" >&2
    peer=0
  fi
  lora=(--rank 16 --alpha 32 --targets all-linear)
  common=(--mode train --model "$folder" --batch 1 --seq "$real_seq" --steps "$real_steps" --warmup 1)
  # run_real SIDE CMD...: one fresh process; its JSON line, or its failure, appended to the results.
  run_real() {
    local side=$1 line rc=0
    shift
    echo "== $side: $* (memory available now: $(awk '/^MemAvailable:/ {printf "%.1f", $2/1e6}' /proc/meminfo) GB)"
    line=$("$@" | tail -n 1) || rc=$?
    if [ "$rc" != 0 ] || [ "${line:0:1}" != "{" ]; then
      local why="exit $rc"
      [ "$rc" = 137 ] && why="killed (SIGKILL: out of memory?)"
      echo "bench.sh: $side failed: $why" >&2
      line="{\"side\":\"$side\",\"failed\":\"$why\"}"
    fi
    echo "$line" >>"$results"
  }
  # shellcheck disable=SC2086 # --saddle-flags is a list of flags
  run_real saddle env GOMAXPROCS="$threads" "$bench" "${common[@]}" "${lora[@]}" $saddle_flags
  if [ "$peer" = 1 ]; then
    run_real pytorch "${peer_env[@]}" OMP_NUM_THREADS="$threads" OMP_WAIT_POLICY=PASSIVE "$py" \
      "$here/scripts/bench/peer.py" --threads "$threads" "${common[@]}" "${lora[@]}"
  fi
  echo "== results ($results), $(nproc) cores, $((mem_bytes / 1000000000)) GB, load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$py" - "$results" "$real" <<'EOF'
import json, statistics, sys

rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[r["side"]] = r
s, p = rows.get("saddle", {}), rows.get("pytorch", {})
def ok(r):
    return bool(r) and "failed" not in r
ref = s if ok(s) else p
print(f'{sys.argv[2]}-shaped, random bf16 weights: batch {ref.get("batch", "?")} × {ref.get("seq", "?")}, LoRA r=16 '
      f'alpha 32 on q,k,v,o,gate,up,down ({ref.get("adapters", "?")} adapters, {ref.get("adapter_params", 0):,} '
      f'parameters), Adam; {len(ref.get("step_s", []))} timed steps after 1 warmup step')
if ok(s):
    print(f'saddle: compute dtype {s["dtype"]}, grad checkpoint {"on" if s["grad_checkpoint"] else "off"}, backend {s["backend"]}')
if ok(p):
    print(f'peer: torch {p["torch"]}, f32 eager, OpenBLAS core {p.get("blas", {}).get("openblas_core", "?")}')
for r in (s, p):
    if ok(r) and r.get("step_cpu_s"):
        r["median_step_cpu_s"] = statistics.median(r["step_cpu_s"])

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
for label, key, d in [("tokens/s (median of timed steps)", "tokens_per_s", 2), ("step wall s (median)", "median_step_s", 2),
                      ("step CPU s (median)", "median_step_cpu_s", 2), ("peak RSS GB (VmHWM)", "peak_rss_gb", 2),
                      ("time to first step s", "time_to_first_step_s", 1), ("… loading s", "load_s", 1),
                      ("… first step s (compilation included)", "first_step_s", 1), ("first-step loss", "first_loss", 6)]:
    print(f"| {label} | {val(s, key, d)} | {val(p, key, d)} | {ratio(key)} |")
if ok(s) and ok(p):
    rel = abs(s["first_loss"] - p["first_loss"]) / abs(p["first_loss"])
    print(f"\nfirst-step losses differ by {rel:.1e} relative (both sides read the same bf16 weights).")
print("GB = 10^9 bytes. Time to first step runs from process start (the peer's includes importing torch); step CPU s"
      " is the process's user+sys time, less sensitive than wall time to other jobs on the machine.")
EOF
  exit 0
fi

if [ "$quick" = 1 ]; then s1=2 s2=1 s3=1; else s1=4 s2=3 s3=3; fi

# run WORKLOAD SIDE ROUND CMD...: one process, its JSON line tagged and appended to the results.
run() {
  local wl=$1 side=$2 round=$3
  shift 3
  local line
  if ! line=$("$@" | tail -n 1); then
    echo "bench.sh: $wl $side failed: $*" >&2
    return 1
  fi
  echo "{\"workload\":\"$wl\",\"round\":$round,\"result\":$line}" >>"$results"
  printf '   %-3s %-7s done\n' "$wl" "$side"
}

saddle() { GOMAXPROCS=$threads "$bench" "$@"; }
pytorch() { "${peer_env[@]}" OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE "$py" "$here/scripts/bench/peer.py" --threads "$threads" "$@"; }

for round in $(seq 1 "$rounds"); do
  echo "== round $round/$rounds"
  order="saddle pytorch"
  [ $((round % 2)) = 0 ] && order="pytorch saddle"
  for side in $order; do
    [ "$side" = pytorch ] && [ "$peer" = 0 ] && continue
    run W1 "$side" "$round" "$side" --mode train --model "$stories" --batch 16 --seq 256 --steps $s1 --warmup 1
    run W2 "$side" "$round" "$side" --mode train --model "$synth" --batch 4 --seq 256 --steps $s2 --warmup 1
    run W3s "$side" "$round" "$side" --mode generate --model "$stories" --prompt 8 --new-tokens 128 --steps $s3 --warmup 1
    run W3m "$side" "$round" "$side" --mode generate --model "$synth" --prompt 8 --new-tokens 128 --steps $s3 --warmup 1
  done
done

echo "== results ($results), $(nproc) cores, load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$results" <<'EOF'
import json, statistics, sys

runs = [json.loads(l) for l in open(sys.argv[1])]
def side_runs(wl, side):
    return [r["result"] for r in runs if r["workload"] == wl and r["result"]["side"] == side]
def med(xs):
    return statistics.median(xs) if xs else float("nan")

names = {"W1": "W1 train stories260K 16×256", "W2": "W2 train synth-512 4×256",
         "W3s": "W3 generate stories260K", "W3m": "W3 generate synth-512"}
rows = []
for wl in ("W1", "W2", "W3s", "W3m"):
    row = {"workload": names[wl]}
    for side in ("saddle", "pytorch"):
        rs = side_runs(wl, side)
        if not rs:
            continue
        if wl.startswith("W3"):
            wall = [t for r in rs for t in r["gen_s"]]
            cpu = [t for r in rs for t in r["gen_cpu_s"]]
            per = rs[0]["new_tokens"]
            row[side] = {"tok_s": per / med(wall), "ms": 1e3 * med(wall) / per, "cpu_ms": 1e3 * med(cpu) / per}
        else:
            wall = [t for r in rs for t in r["step_s"]]
            cpu = [t for r in rs for t in r["step_cpu_s"]]
            per = rs[0]["tokens_per_step"]
            row[side] = {"tok_s": per / med(wall), "ms": 1e3 * med(wall), "cpu_ms": 1e3 * med(cpu),
                         "loss": rs[0]["first_loss"]}
        row[side]["rss"] = max(r["peak_rss_mib"] for r in rs)
        row[side]["runs"] = len(rs)
        row[side]["samples"] = len(wall)
        if side == "saddle" and "flops" in rs[0]:
            row["flops"] = rs[0]["flops"]["total"]
        if side == "pytorch":
            row["blas"] = rs[0].get("blas", {}).get("openblas_core", "?")
    rows.append(row)

def fmt(x, d=0):
    return "—" if x is None or x != x else f"{x:,.{d}f}"
print("| workload | saddle tok/s | peer tok/s | ratio | saddle ms/step | peer ms/step | CPU-s ratio | "
      "saddle RSS MiB | peer RSS MiB | first loss saddle / peer |")
print("|---|---|---|---|---|---|---|---|---|---|")
for row in rows:
    s, p = row.get("saddle"), row.get("pytorch")
    ratio = s["tok_s"] / p["tok_s"] if s and p else None
    cpur = p["cpu_ms"] / s["cpu_ms"] if s and p else None
    unit = "ms/token" if row["workload"].startswith("W3") else "ms/step"
    loss = f'{s["loss"]:.6f} / {p["loss"]:.6f}' if s and p and "loss" in s else "—"
    print(f'| {row["workload"]} | {fmt(s and s["tok_s"])} | {fmt(p and p["tok_s"])} | {fmt(ratio, 2)}× | '
          f'{fmt(s and s["ms"], 1)} | {fmt(p and p["ms"], 1)} | {fmt(cpur, 2)}× | {fmt(s and s["rss"])} | '
          f'{fmt(p and p["rss"])} | {loss} |')
w2 = rows[1]
if "flops" in w2:
    print(f'\nW2 matmul FLOPs per step: {w2["flops"]/1e9:.1f} GFLOP (dense 4·N·T, LoRA 6·r·(in+out)·T, attention '
          f'12·B·heads·seq²·headDim·layers); achieved: saddle {w2["flops"]/w2["saddle"]["ms"]/1e6:.1f} GFLOP/s'
          + (f', peer {w2["flops"]/w2["pytorch"]["ms"]/1e6:.1f} GFLOP/s' if "pytorch" in w2 else ""))
print("ratio = saddle tokens/s ÷ peer tokens/s (medians of wall time); CPU-s ratio = peer CPU seconds per step ÷ "
      "saddle's (process user+sys). ms/token for W3 includes the prompt.")
if any("blas" in r for r in rows):
    print("peer OpenBLAS core:", rows[0].get("blas", "?"))
EOF
