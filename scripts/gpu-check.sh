#!/usr/bin/env bash
# GPU check of saddle through XLA/PJRT on an NVIDIA GPU, in one prepared run of at most 8 minutes that writes one JSON
# file of numbers. Written without a GPU: the parts that need one are untested until a device run.
#
#   bash scripts/gpu-check.sh prepare   # on a dev machine (Go + module cache): builds the cgo/XLA binaries (saddle,
#                                       # scripts/bench) and the test binaries of the packages whose tests build a
#                                       # backend, xz-packed into runs/gpu-check/ (git-ignored) with the two small test
#                                       # models; the device tool carries runs/gpu-check (64 MiB at most, checked)
#   bash scripts/gpu-check.sh [run]     # on the GPU machine: uses runs/gpu-check/ if prepared, else builds (needs Go)
#
# Parts, each under its own timeout, the whole run within GPU_CHECK_BUDGET_S (470 s); the JSON is rewritten after
# every part, so a run cut short still leaves the parts done so far:
#   info      GPU, driver, tool versions.
#   backend   `saddle generate --backend xla:cuda` on stories260K: saddle's own PJRT plugin discovery (JAX's pip
#             plugin, site-packages/jax_plugins/xla_cuda13/xla_cuda_plugin.so on the device image); if it finds
#             none, a search of / for a CUDA plugin file, then passed as xla:/path.
#   go-test   the test binaries of model, lora, finetune, optimizers, theory and cmd/saddle with
#             SADDLE_TEST_BACKEND=<the backend> (internal/testbackend), in parallel, 110 s cap; per package: pass/fail,
#             the failing tests and the end of the log.
#   parity    20 steps of saddle train on stories260K-hf, --backend go vs the GPU backend with tf32=false (f32 on
#             both sides), losses step by step (pass: every relative difference <= 1e-3).
#   speed-*   real sizes: random-weight Qwen3-0.6B- and Llama-3.2-1B-shaped bf16 folders (bench -write-shape, written
#             on the GPU machine while the tests run), LoRA r=16 alpha=32 on all linear layers + Adam, batch 1 x 512,
#             then 4 x 512: saddle (bench -mode train -dtype bf16; falls back to -dtype auto, and says so, while the
#             model package lacks bf16) and transformers + PEFT (scripts/bench/peft_peer.py, bf16 weights, f32
#             adapters) one after the other on the same GPU. Each reports tokens/s and device memory: nvidia-smi's
#             memory.used sampled every 0.25 s during the process (peak minus the level before it: the CUDA
#             context, XLA's or torch's allocator pool and what it holds; go-xla does not expose PJRT's device
#             memory statistics), and for PEFT also torch.cuda.max_memory_allocated/reserved.
# Everything lands in one JSON file: $OUT/gpu-check.json if OUT is set (the device tool's folder), else
# runs/gpu-check/result/gpu-check.json; its part statuses and speed table are printed at the end. Exit status 0 when the backend started and
# the parity check passed.
# Dry run without a GPU (checks the script itself; real shapes at 1 x 64 on the Go backend, so ~2 minutes on
# 2 cores): GPU_CHECK_BACKEND=go GPU_CHECK_SMALL=1 bash scripts/gpu-check.sh
set -uo pipefail
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3} GOEXPERIMENT=simd GOMLX_NO_AUTO_INSTALL=1 PYTHONUNBUFFERED=1
here=$(cd "$(dirname "$0")/.." && pwd)
pre=$here/runs/gpu-check
start=$(date +%s)
budget=${GPU_CHECK_BUDGET_S:-470}
gpu_backend=${GPU_CHECK_BACKEND:-xla:cuda}
test_pkgs=(model lora finetune optimizers theory cmd/saddle)
shapes=(qwen3-0.6b llama-3.2-1b)
seq=512 batches=(1 4) steps=(-steps 3 -warmup 1) peer_steps=(--steps 3 --warmup 1) test_cap=110 speed_cap=120
if [ -n "${GPU_CHECK_SMALL:-}" ]; then
  seq=64 batches=(1) steps=(-steps 1 -warmup 1) peer_steps=(--steps 1 --warmup 1) test_cap=240 speed_cap=200
  budget=${GPU_CHECK_BUDGET_S:-900}
fi

if [ "${1:-run}" = prepare ]; then
  set -e
  rm -rf "${pre:?}" && mkdir -p "$pre/shared/models" "$pre/bin"
  cd "$here"
  CGO_ENABLED=1 go build -ldflags="-s -w" -o "$pre/bin/saddle" ./cmd/saddle
  CGO_ENABLED=1 go build -ldflags="-s -w" -o "$pre/bin/bench" ./scripts/bench
  for p in "${test_pkgs[@]}"; do
    CGO_ENABLED=1 go test -c -ldflags="-s -w" -o "$pre/bin/$(basename "$p").test" "./$p"
  done
  tar -C "$pre" -cf - bin | xz -6 -T0 >"$pre/bin.tar.xz"
  rm -rf "${pre:?}/bin"
  shared=${SADDLE_SHARED:-$here/../shared}
  cp -r "$shared/models/stories260K-hf" "$shared/models/stories260K" "$pre/shared/models/"
  size=$(du -sb "$pre" | cut -f1) tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
  echo "prepared $pre: $((size / 1048576)) MiB, with the working tree $(((size + tree) / 1048576)) MiB (the device tool carries 64 MiB)"
  if [ $((size + tree)) -gt $((62 * 1048576)) ]; then echo "gpu-check prepare: too big to carry" >&2; exit 1; fi
  echo "carry runs/gpu-check to the GPU machine and run: bash scripts/gpu-check.sh"
  exit 0
fi

out=${OUT:-$pre/result}
mkdir -p "$out"
work=$(mktemp -d)
json=$out/gpu-check.json
parts=$work/parts.jsonl
: >"$parts"
bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
left() { echo $((budget - ($(date +%s) - start))); }
# jsonstr: stdin as a JSON string (its last 3000 characters).
jsonstr() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()[-3000:]))'; }
# jsonfile FILE: the JSON object FILE holds (or its last line holds), else null.
jsonfile() { python3 - "$1" <<'EOF'
import json, sys
doc = None
try:
    text = open(sys.argv[1]).read()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = json.loads([l for l in text.splitlines() if l.strip()][-1])
except Exception:
    pass
print(json.dumps(doc) if isinstance(doc, dict) else "null")
EOF
}
finish() {
  python3 - "$parts" "$json" "$gpu_backend" <<'EOF'
import json, sys, platform
parts = []
for line in open(sys.argv[1]):
    try:
        parts.append(json.loads(line))
    except ValueError as e:
        parts.append({"part": "?", "status": "bad report line", "data": {"error": str(e), "line": line[-500:]}})
speed = {}
for p in parts:
    if p["part"].startswith("speed-") and isinstance(p.get("data"), dict):
        side, workload = p["part"][len("speed-"):].split(":", 1)
        d, row = p["data"], speed.setdefault(workload, {})
        res = d.get("result") or {}
        mem = d.get("gpu_mem") or {}
        row[side] = {"status": p["status"], "tokens_per_s": res.get("tokens_per_s"), "dtype": res.get("dtype"),
                     "first_loss": res.get("first_loss"), "time_to_first_step_s": res.get("time_to_first_step_s"),
                     "gpu_mem_peak_over_baseline_mib": mem.get("peak_over_baseline_mib"),
                     "torch_peak_allocated_mib": res.get("peak_allocated_mib")}
for row in speed.values():
    s, q = (row.get("saddle") or {}).get("tokens_per_s"), (row.get("peft") or {}).get("tokens_per_s")
    if s and q:
        row["tokens_per_s_saddle_over_peft"] = s / q
    s, q = [(row.get(k) or {}).get("gpu_mem_peak_over_baseline_mib") for k in ("saddle", "peft")]
    if s and q:
        row["gpu_mem_saddle_over_peft"] = s / q
doc = {"host": platform.node(), "backend": sys.argv[3], "speed_summary": speed, "parts": parts,
       "backend_ok": any(p["part"] == "backend" and p["status"] == "ok" for p in parts),
       "parity_passed": any(p["part"] == "parity" and p["status"] == "pass" for p in parts)}
json.dump(doc, open(sys.argv[2], "w"), indent=1)
EOF
}
# part NAME STATUS JSON-OBJECT: one line of the report; the JSON file is rewritten each time.
part() {
  local data=${3:-null}
  python3 -c 'import json,sys; json.loads(sys.argv[1])' "$data" 2>/dev/null || data=$(printf '%s' "$data" | jsonstr)
  printf '{"part":"%s","status":"%s","elapsed_s":%d,"data":%s}\n' "$1" "$2" $(($(date +%s) - start)) "$data" >>"$parts"
  echo "== $1: $2 ($(($(date +%s) - start)) s)"
  finish
}
# limit SECONDS CMD...: run under a timeout that also respects the overall budget (124 when no time is left).
limit() {
  local s=$1 l
  shift
  l=$(left)
  [ "$l" -lt "$s" ] && s=$l
  [ "$s" -lt 10 ] && return 124
  timeout -k 5 "$s" "$@"
}
# gpumem_start NAME / gpumem_stop: sample nvidia-smi's memory.used (MiB) every 0.25 s; gpumem_stop prints
# {"samples", "baseline_mib", "peak_mib", "peak_over_baseline_mib"} (null without nvidia-smi).
gpumem_pid=""
gpumem_start() {
  gpumem_log=$work/gpumem-$1.txt
  : >"$gpumem_log"
  gpumem_pid=""
  command -v nvidia-smi >/dev/null || return 0
  (while :; do nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits >>"$gpumem_log" 2>/dev/null; sleep 0.25; done) &
  gpumem_pid=$!
  bg_pids+=("$gpumem_pid")
  sleep 0.5 # a baseline sample before the measured process starts
}
gpumem_stop() {
  if [ -n "$gpumem_pid" ]; then kill "$gpumem_pid" 2>/dev/null; wait "$gpumem_pid" 2>/dev/null; fi
  python3 - "$gpumem_log" <<'EOF'
import json, sys
v = []
for line in open(sys.argv[1]):
    try:
        v.append(float(line.strip()))
    except ValueError:
        pass
print(json.dumps({"samples": len(v), "baseline_mib": v[0], "peak_mib": max(v), "peak_over_baseline_mib": max(v) - v[0]}) if v else "null")
EOF
}

# info: the machine
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)
part info ok "{\"gpu\":$(echo "$gpu" | jsonstr),\"go\":$(go version 2>&1 | jsonstr),\"python\":$(python3 --version 2>&1 | jsonstr),\"python_path\":$(command -v python3 | jsonstr),\"budget_s\":$budget}"

# binaries: prepared ones, else built here
bin=$work/bin
shared=${SADDLE_SHARED:-}
[ -z "$shared" ] && { [ -d "$pre/shared/models" ] && shared=$pre/shared || shared=$here/../shared; }
export SADDLE_SHARED=$shared
prepared=0
if [ -f "$pre/bin.tar.xz" ]; then
  if tar -C "$work" -xJf "$pre/bin.tar.xz"; then prepared=1; part build prepared null
  else part build fail '{"error":"could not unpack runs/gpu-check/bin.tar.xz"}'; exit 1
  fi
else
  mkdir -p "$bin"
  if ! (cd "$here" && limit 240 env CGO_ENABLED=1 go build -o "$bin/saddle" ./cmd/saddle &&
    limit 120 env CGO_ENABLED=1 go build -o "$bin/bench" ./scripts/bench) >"$work/build.log" 2>&1; then
    part build fail "{\"log\":$(jsonstr <"$work/build.log")}"
    exit 1
  fi
  part build ok null
fi
saddle=$bin/saddle bench=${GPU_CHECK_BENCH:-$bin/bench} # GPU_CHECK_BENCH: another build of scripts/bench (dry runs)
stories=$shared/models/stories260K-hf

# backend: saddle finds the plugin itself; else a search of / for one, passed by path
discovered=saddle
try_backend() {
  limit 90 "$saddle" generate --backend "$gpu_backend" --model "$stories" --prompt "Once upon a time" \
    --max-tokens 16 --temperature 0 --json >"$work/gen.json" 2>"$work/gen.log"
}
try_backend
rc=$?
if [ $rc != 0 ] && grep -q "no PJRT plugin" "$work/gen.log"; then
  f=$(limit 30 find / -xdev \( -name xla_cuda_plugin.so -o -name 'pjrt_c_api_cuda*_plugin.so' \) -not -path '/proc/*' 2>/dev/null | head -1)
  if [ -n "$f" ]; then
    cp "$work/gen.log" "$work/gen-discovery.log"
    gpu_backend=xla:$f discovered="find (saddle's discovery missed it)"
    try_backend
    rc=$?
  fi
fi
if [ $rc = 0 ]; then
  part backend ok "{\"backend\":$(echo -n "$gpu_backend" | jsonstr),\"found_by\":\"$discovered\",\"generate\":$(jsonfile "$work/gen.json"),\"stderr\":$(jsonstr <"$work/gen.log")}"
else
  part backend fail "{\"rc\":$rc,\"backend\":$(echo -n "$gpu_backend" | jsonstr),\"found_by\":\"$discovered\",\"log\":$(cat "$work/gen-discovery.log" "$work/gen.log" 2>/dev/null | jsonstr)}"
fi

# the real-shaped folders, written in the background while the tests run
(for s in "${shapes[@]}"; do limit 150 "$bench" -write-shape "$s" "$work/$s" || echo "write-shape $s failed" >&2; done) >"$work/shapes.log" 2>&1 &
writer=$!
bg_pids+=("$writer")

# go-test: the test binaries (prepared), or go test (when Go is here), on the GPU backend
if [ $prepared = 1 ] || command -v go >/dev/null; then
  pids=()
  for p in "${test_pkgs[@]}"; do
    n=$(basename "$p")
    if [ $prepared = 1 ]; then
      (cd "$here/$p" && SADDLE_TEST_BACKEND=$gpu_backend limit "$test_cap" "$bin/$n.test" -test.count=1 -test.timeout="${test_cap}s") >"$work/test-$n.log" 2>&1 &
    else
      (cd "$here" && SADDLE_TEST_BACKEND=$gpu_backend limit "$test_cap" go test -count=1 -timeout="${test_cap}s" "./$p") >"$work/test-$n.log" 2>&1 &
    fi
    pids+=($!)
  done
  i=0
  for p in "${test_pkgs[@]}"; do
    wait "${pids[$i]}"
    rc=$?
    n=$(basename "$p")
    fails=$(grep -E -- '^\s*--- FAIL' "$work/test-$n.log" | head -40 | jsonstr)
    part "go-test:$p" "$([ $rc = 0 ] && echo pass || echo "fail rc=$rc")" "{\"failed\":$fails,\"log\":$(tail -c 2500 "$work/test-$n.log" | jsonstr)}"
    i=$((i + 1))
  done
else
  part go-test skipped '{"why":"neither prepared test binaries nor a Go toolchain"}'
fi

# parity: the same 20 steps on the Go backend (CPU) and on the GPU backend in f32 (tf32=false)
for side in cpu:go "gpu:$gpu_backend,tf32=false"; do
  b=${side#*:} d=$work/train-${side%%:*}
  [ "$b" = "go,tf32=false" ] && b=go
  limit 90 "$saddle" train --backend "$b" --model "$stories" --data demo --optimizer adam --lr 1e-3 \
    --rank 8 --alpha 16 --steps 20 --batch-size 8 --seq-len 128 --eval-every 0 --out "$d" >"$d.log" 2>&1
done
python3 - "$work" >"$work/parity.json" <<'EOF'
import json, sys, os
w = sys.argv[1]
def losses(side):
    p = os.path.join(w, f"train-{side}", "metrics.jsonl")
    return [r["loss"] for r in map(json.loads, open(p)) if r.get("loss") is not None] if os.path.exists(p) else []
cpu, gpu = losses("cpu"), losses("gpu")
rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(cpu, gpu)]
ok = len(cpu) >= 20 and len(cpu) == len(gpu) and max(rel) <= 1e-3
print(json.dumps({"ok": ok, "steps": [len(cpu), len(gpu)], "max_rel_diff": max(rel) if rel else None,
                  "loss_go": cpu, "loss_gpu": gpu}))
EOF
if python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$work/parity.json" 2>/dev/null; then
  part parity pass "$(cat "$work/parity.json")"
else
  tail -n 5 "$work"/train-*.log >"$work/train.tail" 2>&1
  part parity fail "{\"result\":$(jsonfile "$work/parity.json"),\"logs\":$(jsonstr <"$work/train.tail")}"
fi

# speed: real shapes in bf16, saddle then PEFT, batch 1 first
wait "$writer"
part shapes "$(for s in "${shapes[@]}"; do [ -f "$work/$s/config.json" ] || echo missing; done | grep -q missing && echo fail || echo ok)" \
  "{\"log\":$(jsonstr <"$work/shapes.log"),\"note\":\"bench -write-shape comes with the bench's real-size writer (issue 11)\"}"
lora=(-rank 16 -alpha 32 -targets all-linear)
for b in "${batches[@]}"; do
  for s in "${shapes[@]}"; do
    w="$s:${b}x$seq" dir=$work/$s
    if [ ! -f "$dir/config.json" ]; then part "speed-saddle:$w" skipped '{"why":"no model folder"}'; continue; fi
    if [ "$(left)" -lt 30 ]; then part "speed-saddle:$w" skipped '{"why":"out of time"}'; continue; fi
    dtype=bf16 note=""
    gpumem_start "saddle-$w"
    limit "$speed_cap" "$bench" -backend "$gpu_backend" -mode train -model "$dir" -batch "$b" -seq "$seq" "${lora[@]}" \
      -dtype "$dtype" "${steps[@]}" >"$work/saddle.json" 2>"$work/saddle.log"
    rc=$?
    if [ $rc != 0 ] && grep -q -- "-dtype bf16: not available" "$work/saddle.log"; then
      dtype=auto note="-dtype bf16 is not available yet in this build: the base ran in f32"
      limit "$speed_cap" "$bench" -backend "$gpu_backend" -mode train -model "$dir" -batch "$b" -seq "$seq" "${lora[@]}" \
        -dtype "$dtype" "${steps[@]}" >"$work/saddle.json" 2>"$work/saddle.log"
      rc=$?
    fi
    mem=$(gpumem_stop)
    part "speed-saddle:$w" "$([ $rc = 0 ] && echo ok || echo "fail rc=$rc")" \
      "{\"result\":$(jsonfile "$work/saddle.json"),\"gpu_mem\":$mem,\"note\":\"$note\",\"log\":$(tail -c 1500 "$work/saddle.log" | jsonstr)}"

    if [ "$(left)" -lt 30 ]; then part "speed-peft:$w" skipped '{"why":"out of time"}'; continue; fi
    gpumem_start "peft-$w"
    limit "$speed_cap" python3 "$here/scripts/bench/peft_peer.py" --model "$dir" --batch "$b" --seq "$seq" \
      --dtype bf16 --rank 16 --alpha 32 --targets all-linear "${peer_steps[@]}" >"$work/peft.json" 2>"$work/peft.log"
    rc=$?
    mem=$(gpumem_stop)
    status=ok
    [ $rc = 3 ] && status=skipped
    [ $rc != 0 ] && [ $rc != 3 ] && status="fail rc=$rc"
    part "speed-peft:$w" "$status" "{\"result\":$(jsonfile "$work/peft.json"),\"gpu_mem\":$mem,\"log\":$(tail -c 1500 "$work/peft.log" | jsonstr)}"
  done
done

finish
# The compact view (the whole report is in $json): part statuses and the speed table.
python3 - "$json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({"json": sys.argv[1], "backend": d["backend"], "backend_ok": d["backend_ok"], "parity_passed": d["parity_passed"],
                  "parts": {p["part"]: p["status"] for p in d["parts"]}, "speed_summary": d["speed_summary"]}, indent=1))
EOF
python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); sys.exit(0 if d["parity_passed"] and d["backend_ok"] else 1)' "$json"
