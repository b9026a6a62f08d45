#!/usr/bin/env bash
# Training and generation throughput of saddle against plain PyTorch, measured in ONE run on this machine:
#   W1  LoRA r=8 on q,k,v,o + Adam, stories260K (HF folder), batch 16 × 256
#   W2  the same on a random-weight Llama (hidden 512, 8 layers, 8 heads, 4 KV heads, FFN 1408, vocab 32000),
#       batch 4 × 256
#   W3  greedy generation with a KV cache (8-token prompt, 128 new tokens) on both models
# f32 and the same thread count on both sides (THREADS, default 2). The workloads run in ROUNDS rounds, saddle and
# the peer alternating (the order flips every round), each run a fresh process; the table shows medians over all
# timed steps, the ratio saddle/peer, CPU seconds per step (less sensitive than wall time to other jobs on the
# machine), peak RSS, and W2's achieved GFLOP/s (the FLOP count is defined in scripts/bench/main.go: trainFLOPs),
# read against the machine's 1024² f32 rate measured at the start and against the rates every training process
# measures just before and after its timed steps (the same minute: this VM's speed drifts).
#
# Usage: bash scripts/bench.sh [--rounds N] [--quick] [--no-peer] [--install-peer]
#   --quick         1 round, fewer steps (a smoke test, not a measurement)
#   --no-peer       saddle alone
#   --install-peer  apt-get install python3-torch libopenblas0-pthread first (root, Debian)
#
# Real sizes: bash scripts/bench.sh --real qwen3-0.6b|llama-3.2-1b|llama-3.1-8b [--seq N] [--steps N] [--warmup N]
#     [--generate] [--rounds N] [--saddle-flags "-dtype bf16 -grad-checkpoint"] [--no-peer] [--install-peer]
#   --generate measures greedy decoding (8-token prompt, 32 new tokens, --steps generations) instead of training.
#   LoRA r=16 (alpha 32) on all linear layers (q,k,v,o,gate,up,down) + Adam, batch 1 × seq (default 512; 256 for
#   the 8B), --warmup untimed steps (default 3 for training, 1 for generation) then --steps timed ones (default 3):
#   the peer's steps only settle by its fourth (1B at 1×512: 25.0, 24.6, 20.9, 20.2, 20.1, 20.5 s; saddle's from
#   its second: 15.8, 15.1, 15.6, 15.3, 15.7, 15.7 s), so fewer warmup steps would count the peer's warm-up. The model is a random-weight HF folder with the exact
#   config.json, shapes, bf16 shards and tokenizer of the published one (scripts/bench -write-shape), written once
#   into $BENCH_DIR/shape-NAME and reused. saddle, then the peer (f32 eager, weights widened to f32 on load), each in
#   a fresh process, never both at once; with --rounds N (default 1 here) N such rounds, the order flipped every
#   round, and the medians pool every round's steps; the table shows tokens/s (median of the timed steps), peak RSS (VmHWM),
#   time to first step (process start to the end of the first optimizer step: loading and compiling included), the
#   first-step losses and the ratios saddle/peer. The peer is skipped when its f32 weights alone would not fit in
#   this machine's memory (the 8B: 32 GB). Results: $BENCH_DIR/real-NAME.jsonl.
# Environment: SADDLE_SHARED (test data, default ../shared), BENCH_DIR (work folder, default /tmp/saddle-bench),
#   THREADS, PEER_OPENBLAS_CORETYPE (auto | keep | a core name; see below).
#
# The peer runs in its fastest configuration, chosen by measuring, never by CPU flags: scripts/bench/peer_probe.py
# times a 1024² f32 GEMM and a one-row product with a 2048×8192 matrix (f32 and bf16) in one process per OpenBLAS
# core type (the library's own choice, and every core type this CPU can run: Haswell and Zen on AVX2, SkylakeX and
# Cooperlake with AVX-512) and every thread count up to the core count. Training workloads then run the peer with
# torch on every core and the core type with the fastest GEMM there (OpenBLAS's GEMMs use every core at any torch
# thread count; torch's own kernels do not), generation in the configuration with the fastest one-row product (core,
# threads and weights dtype); the tables say which. PEER_OPENBLAS_CORETYPE=NAME forces a core type (keep: the environment's).
# The peer also gets OMP_WAIT_POLICY=PASSIVE: libgomp's idle threads otherwise spin between parallel regions, which
# costs the peer 20-40 % on a machine shared with other jobs.
#
# Memory bandwidth: "bench -mode stream" measures it STREAM-style (read: summing 1 GiB; copy: read + write), and
# every generation row reports the weight bytes one decoding pass reads, the bandwidth limit they imply (bytes ÷
# read bandwidth per token) and the measured time per token as a multiple of that limit.
set -euo pipefail
export GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd

here=$(cd "$(dirname "$0")/.." && pwd)
rounds=3 rounds_given="" quick=0 peer=1 install=0 real="" real_seq="" real_steps="" real_warmup="" saddle_flags="" real_gen=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2 rounds_given=1; shift ;;
    --quick) quick=1 rounds=1 ;;
    --no-peer) peer=0 ;;
    --install-peer) install=1 ;;
    --real) real=$2; shift ;;
    --seq) real_seq=$2; shift ;;
    --steps) real_steps=$2; shift ;;
    --warmup) real_warmup=$2; shift ;;
    --saddle-flags) saddle_flags=$2; shift ;;
    --generate) real_gen=1 ;;
    *) echo "bench.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
threads=${THREADS:-$(nproc)}
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
elif [ -n "$real_seq$real_steps$real_warmup$saddle_flags" ]; then
  echo "bench.sh: --seq, --steps, --warmup and --saddle-flags go with --real" >&2
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

# choose_peer: measure the peer's configurations (see the header) and set peer_train/peer_gen (env commands),
# peer_train_threads/peer_gen_threads and peer_gen_weights.
peer_train=(env) peer_gen=(env) peer_train_threads=$threads peer_gen_threads=$threads peer_gen_weights=f32
choose_peer() {
  local cores=("") c
  case "${PEER_OPENBLAS_CORETYPE:-auto}" in
    auto)
      grep -qw avx2 /proc/cpuinfo && cores+=(Haswell Zen)
      grep -qw avx512f /proc/cpuinfo && cores+=(SkylakeX Cooperlake) ;;
    keep) ;;
    *) cores=("$PEER_OPENBLAS_CORETYPE") ;;
  esac
  local probe=$work/peer-probe.jsonl
  : >"$probe"
  for c in "${cores[@]}"; do
    local e=(env)
    [ -n "$c" ] && e=(env -u OPENBLAS_L2_SIZE "OPENBLAS_CORETYPE=$c")
    "${e[@]}" OMP_WAIT_POLICY=PASSIVE "$py" "$here/scripts/bench/peer_probe.py" --max-threads "$threads" >>"$probe" 2>/dev/null ||
      echo "   (core type ${c:-default} does not run here)"
  done
  local choice tc tt gc gt gw
  choice=$("$py" "$here/scripts/bench/peer_choose.py" "$probe")
  read -r tc tt gc gt gw <<<"$choice"
  peer_train=(env) peer_gen=(env)
  [ "$tc" != - ] && peer_train=(env -u OPENBLAS_L2_SIZE "OPENBLAS_CORETYPE=$tc")
  [ "$gc" != - ] && peer_gen=(env -u OPENBLAS_L2_SIZE "OPENBLAS_CORETYPE=$gc")
  peer_train_threads=$tt peer_gen_threads=$gt peer_gen_weights=$gw
  echo "== peer for training: ${peer_train[*]} OMP_NUM_THREADS=$tt; for generation: ${peer_gen[*]} OMP_NUM_THREADS=$gt, $gw weights"
}
if [ "$peer" = 1 ]; then
  echo "== measuring the peer's configurations"
  choose_peer
fi
echo "== memory bandwidth (STREAM-style, $threads threads)"
GOMAXPROCS=$threads "$bench" -mode stream -steps 5 >"$work/stream.json"
cat "$work/stream.json"
echo "== f32 matmul rate (1024², the Go backend and internal/gemm, $threads threads)"
GOMAXPROCS=$threads "$bench" -mode matmul -steps 10 >"$work/matmul.json"
cat "$work/matmul.json"

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
  common=(--mode train --model "$folder" --batch 1 --seq "$real_seq" --steps "$real_steps" --warmup "${real_warmup:-3}")
  if [ "$real_gen" = 1 ]; then
    lora=()
    common=(--mode generate --model "$folder" --prompt 8 --new-tokens 32 --steps "$real_steps" --warmup "${real_warmup:-1}")
  fi
  # run_real ROUND SIDE CMD...: one fresh process; its JSON line (tagged with the round), or its failure, appended to
  # the results.
  run_real() {
    local round=$1 side=$2 line rc=0
    shift 2
    echo "== $side (round $round): $* (memory available now: $(awk '/^MemAvailable:/ {printf "%.1f", $2/1e6}' /proc/meminfo) GB)"
    line=$("$@" | tail -n 1) || rc=$?
    if [ "$rc" != 0 ] || [ "${line:0:1}" != "{" ]; then
      local why="exit $rc"
      [ "$rc" = 137 ] && why="killed (SIGKILL: out of memory?)"
      echo "bench.sh: $side failed: $why" >&2
      line="{\"side\":\"$side\",\"failed\":\"$why\"}"
    fi
    echo "{\"round\":$round,${line:1}" >>"$results"
  }
  real_rounds=1
  [ -n "$rounds_given" ] && real_rounds=$rounds
  for round in $(seq 1 "$real_rounds"); do
    order="saddle pytorch"
    [ $((round % 2)) = 0 ] && order="pytorch saddle"
    for side in $order; do
      if [ "$side" = saddle ]; then
        # shellcheck disable=SC2086 # --saddle-flags is a list of flags
        run_real "$round" saddle env GOMAXPROCS="$threads" "$bench" "${common[@]}" "${lora[@]}" $saddle_flags
      elif [ "$peer" = 1 ] && [ "$real_gen" = 1 ]; then
        run_real "$round" pytorch "${peer_gen[@]}" OMP_NUM_THREADS="$peer_gen_threads" OMP_WAIT_POLICY=PASSIVE "$py" \
          "$here/scripts/bench/peer.py" --threads "$peer_gen_threads" --weights "$peer_gen_weights" "${common[@]}"
      elif [ "$peer" = 1 ]; then
        run_real "$round" pytorch "${peer_train[@]}" OMP_NUM_THREADS="$peer_train_threads" OMP_WAIT_POLICY=PASSIVE "$py" \
          "$here/scripts/bench/peer.py" --threads "$peer_train_threads" "${common[@]}" "${lora[@]}"
      fi
    done
  done
  echo "== results ($results), $(nproc) cores, $((mem_bytes / 1000000000)) GB, load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
  warm=${real_warmup:-3}
  [ "$real_gen" = 1 ] && warm=${real_warmup:-1}
  "$py" "$here/scripts/bench/report_real.py" "$results" "$real" "$work/stream.json" "$warm"
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
# pytorch KIND ARGS...: the peer in its fastest configuration for KIND (train or gen).
pytorch() {
  local kind=$1
  shift
  if [ "$kind" = gen ]; then
    "${peer_gen[@]}" OMP_NUM_THREADS="$peer_gen_threads" OMP_WAIT_POLICY=PASSIVE "$py" "$here/scripts/bench/peer.py" \
      --threads "$peer_gen_threads" --weights "$peer_gen_weights" "$@"
  else
    "${peer_train[@]}" OMP_NUM_THREADS="$peer_train_threads" OMP_WAIT_POLICY=PASSIVE "$py" "$here/scripts/bench/peer.py" \
      --threads "$peer_train_threads" "$@"
  fi
}

for round in $(seq 1 "$rounds"); do
  echo "== round $round/$rounds"
  order="saddle pytorch"
  [ $((round % 2)) = 0 ] && order="pytorch saddle"
  for side in $order; do
    [ "$side" = pytorch ] && [ "$peer" = 0 ] && continue
    train=("$side") gen=("$side")
    [ "$side" = pytorch ] && train=(pytorch train) gen=(pytorch gen)
    run W1 "$side" "$round" "${train[@]}" --mode train --model "$stories" --batch 16 --seq 256 --steps $s1 --warmup 1
    run W2 "$side" "$round" "${train[@]}" --mode train --model "$synth" --batch 4 --seq 256 --steps $s2 --warmup 1
    run W3s "$side" "$round" "${gen[@]}" --mode generate --model "$stories" --prompt 8 --new-tokens 128 --steps $s3 --warmup 1
    run W3m "$side" "$round" "${gen[@]}" --mode generate --model "$synth" --prompt 8 --new-tokens 128 --steps $s3 --warmup 1
    run W3b "$side" "$round" "${gen[@]}" --mode generate --model "$synth" --prompt 8 --new-tokens 128 --steps $s3 --warmup 1 \
      --gen-batch 8
  done
done

echo "== results ($results), $(nproc) cores, load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" "$here/scripts/bench/report.py" "$results" "$work/stream.json" "$work/matmul.json" "$work/peer-probe.jsonl"
