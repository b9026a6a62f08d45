#!/usr/bin/env bash
# GPU check of saddle through XLA/PJRT on an NVIDIA GPU. UNTESTED: written on a machine without a GPU.
#
#   bash scripts/gpu-check.sh prepare   # on a dev machine (Go + module cache): builds the cgo/XLA binaries and copies
#                                       # the two small test models into runs/gpu-check/ (git-ignored, ~24 MB)
#   bash scripts/gpu-check.sh [run]     # on the GPU machine: uses runs/gpu-check/ if prepared, else builds
#
# Parts (each under its own timeout; the whole run stops itself before 8 minutes):
#   1. find the PJRT CUDA plugin: $PJRT_PLUGIN_LIBRARY_PATH, a pip-installed jax-cuda13-pjrt / jax-cuda12-pjrt
#      (xla_cuda_plugin.so), or a search of the usual folders; linked as pjrt_c_api_cuda_plugin.so with the
#      site-packages nvidia/ libraries beside it, which is where the plugin looks for them;
#   2. go test ./model ./finetune ./optimizers ./lora with GOMLX_BACKEND=xla:cuda, when a Go toolchain is there (the
#      tests pin the go backend today, so this mostly checks that the XLA build links and runs);
#   3. parity: 20 steps of saddle train on stories260K-hf, --backend go vs --backend xla:cuda, losses compared step
#      by step from metrics.jsonl (pass: every relative difference <= 1e-3);
#   4. speed: W2 scaled up (hidden 2048, 16 layers, 16 heads, 8 KV heads, FFN 5632, vocab 32000; LoRA r=8 q,k,v,o +
#      Adam; batch 8 × 1024) with scripts/bench -backend xla:cuda, and the same with transformers + PEFT
#      (scripts/bench/peft_peer.py) when python3 has torch with CUDA, transformers and peft (else saddle alone).
# Everything lands in one JSON file: $OUT/gpu-check.json if OUT is set (the device tool's folder), else
# runs/gpu-check/result/gpu-check.json. Exit status 0 when the parity check passed.
# Dry run without a GPU (checks the script itself): GPU_CHECK_BACKEND=go GPU_CHECK_SMALL=1 bash scripts/gpu-check.sh
set -uo pipefail
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3} GOEXPERIMENT=simd GOMLX_NO_AUTO_INSTALL=1
here=$(cd "$(dirname "$0")/.." && pwd)
pre=$here/runs/gpu-check
start=$(date +%s)
budget=${GPU_CHECK_BUDGET_S:-470}
gpu_backend=${GPU_CHECK_BACKEND:-xla:cuda}
big_model=(-hidden 2048 -layers 16 -heads 16 -kv-heads 8 -ffn 5632 -vocab 32000) big_batch=(-batch 8 -seq 1024)
[ -n "${GPU_CHECK_SMALL:-}" ] && big_model=(-hidden 512 -layers 8 -heads 8 -kv-heads 4 -ffn 1408 -vocab 32000) big_batch=(-batch 4 -seq 256)

if [ "${1:-run}" = prepare ]; then
  set -e
  mkdir -p "$pre/shared/models"
  # Stripped and gzipped (~22 MB for both): the device tool carries at most 64 MiB with the working tree.
  for b in saddle:./cmd/saddle bench:./scripts/bench; do
    (cd "$here" && CGO_ENABLED=1 go build -ldflags="-s -w" -o "$pre/${b%%:*}" "${b#*:}")
    gzip -f "$pre/${b%%:*}"
  done
  shared=${SADDLE_SHARED:-$here/../shared}
  cp -r "$shared/models/stories260K-hf" "$pre/shared/models/"
  [ -d "$shared/models/stories260K" ] && cp -r "$shared/models/stories260K" "$pre/shared/models/"
  du -sh "$pre"
  echo "prepared $pre: carry runs/gpu-check to the GPU machine and run: bash scripts/gpu-check.sh"
  exit 0
fi

out=${OUT:-$pre/result}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
json=$out/gpu-check.json
parts=$work/parts.jsonl
: >"$parts"
left() { echo $((budget - ($(date +%s) - start))); }
# part NAME STATUS JSON-OBJECT: one line of the report.
part() { printf '{"part":"%s","status":"%s","elapsed_s":%d,"data":%s}\n' "$1" "$2" $(($(date +%s) - start)) "${3:-null}" >>"$parts"; echo "== $1: $2"; }
# limit SECONDS CMD...: run under a timeout that also respects the overall budget.
limit() { local s=$1; shift; local l; l=$(left); [ "$l" -lt "$s" ] && s=$l; [ "$s" -lt 10 ] && return 124; timeout -k 5 "$s" "$@"; }
jsonstr() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()[-4000:]))'; }

finish() {
  python3 - "$parts" "$json" <<'EOF'
import json, sys, platform
parts = [json.loads(l) for l in open(sys.argv[1])]
doc = {"host": platform.node(), "parts": parts,
       "parity_passed": any(p["part"] == "parity" and p["status"] == "pass" for p in parts)}
json.dump(doc, open(sys.argv[2], "w"), indent=1)
print("wrote", sys.argv[2])
EOF
}

# 0. the machine
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)
part info ok "{\"gpu\":$(echo "$gpu" | jsonstr),\"go\":$(go version 2>&1 | jsonstr),\"python\":$(python3 --version 2>&1 | jsonstr)}"

# 1. the PJRT CUDA plugin
plugin=""
if [ "$gpu_backend" = xla:cuda ]; then
  for d in ${PJRT_PLUGIN_LIBRARY_PATH:+${PJRT_PLUGIN_LIBRARY_PATH//:/ }}; do
    for f in "$d"/pjrt_c_api_cuda_plugin.so "$d"/xla_cuda_plugin.so; do [ -f "$f" ] && plugin=$f && break 2; done
  done
  if [ -z "$plugin" ]; then
    for pkg in jax-cuda13-pjrt jax-cuda12-pjrt; do
      loc=$(python3 -m pip show -f "$pkg" 2>/dev/null | awk '/^Location:/{print $2}')
      [ -n "$loc" ] && f=$(find "$loc" -name 'xla_cuda_plugin.so' 2>/dev/null | head -1) && [ -n "$f" ] && plugin=$f && break
    done
  fi
  if [ -z "$plugin" ]; then
    plugin=$(limit 30 find / -xdev \( -name 'pjrt_c_api_cuda_plugin.so' -o -name 'xla_cuda_plugin.so' \) 2>/dev/null | head -1)
  fi
  if [ -z "$plugin" ]; then
    part plugin fail '{"error":"no PJRT CUDA plugin found (pip install jax-cuda13-pjrt, or set PJRT_PLUGIN_LIBRARY_PATH)"}'
    finish
    exit 1
  fi
  # The plugin finds CUDA's libraries in ../nvidia relative to itself: lay out a folder where that holds.
  site=$(cd "$(dirname "$plugin")/../.." && pwd)
  mkdir -p "$work/pjrt/plugins"
  ln -sf "$plugin" "$work/pjrt/plugins/pjrt_c_api_cuda_plugin.so"
  [ -d "$site/nvidia" ] && ln -sfn "$site/nvidia" "$work/pjrt/nvidia"
  export PJRT_PLUGIN_LIBRARY_PATH=$work/pjrt/plugins
  if [ -d "$site/nvidia" ]; then
    LD_LIBRARY_PATH=$(find "$site/nvidia" -maxdepth 2 -name lib -type d | tr '\n' ':')${LD_LIBRARY_PATH:-}
    export LD_LIBRARY_PATH
  fi
  part plugin ok "{\"plugin\":$(echo -n "$plugin" | jsonstr),\"nvidia_libs\":$([ -d "$site/nvidia" ] && echo true || echo false)}"
else
  part plugin skipped "{\"backend\":\"$gpu_backend\"}"
fi

# 2. binaries, then go test with the xla:cuda backend
saddle=$work/saddle bench=$work/bench
shared=${SADDLE_SHARED:-}
[ -z "$shared" ] && { [ -d "$pre/shared/models" ] && shared=$pre/shared || shared=$here/../shared; }
if [ -f "$pre/saddle.gz" ] && [ -f "$pre/bench.gz" ]; then
  gunzip -c "$pre/saddle.gz" >"$saddle" && gunzip -c "$pre/bench.gz" >"$bench" && chmod +x "$saddle" "$bench"
  part build prepared null
else
  if ! (cd "$here" && limit 240 env CGO_ENABLED=1 go build -o "$saddle" ./cmd/saddle && limit 120 env CGO_ENABLED=1 go build -o "$bench" ./scripts/bench) >"$work/build.log" 2>&1; then
    part build fail "{\"log\":$(jsonstr <"$work/build.log")}"
    finish
    exit 1
  fi
  part build ok null
fi
if command -v go >/dev/null; then
  (cd "$here" && SADDLE_SHARED=$shared GOMLX_BACKEND=$gpu_backend limit 150 go test ./model ./finetune ./optimizers ./lora) >"$work/test.log" 2>&1
  rc=$?
  part go-test "$([ $rc = 0 ] && echo pass || echo "fail rc=$rc")" "{\"log\":$(jsonstr <"$work/test.log")}"
else
  part go-test skipped '{"why":"no Go toolchain on this machine"}'
fi

# 3. parity: the same 20 steps on the CPU (go) backend and on CUDA
for side in cpu:go "gpu:$gpu_backend"; do
  b=${side#*:} d=$work/train-${side%%:*}
  limit 150 "$saddle" train --backend "$b" --model "$shared/models/stories260K-hf" --data demo --optimizer adam --lr 1e-3 \
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
                  "loss_go": cpu, "loss_cuda": gpu}))
EOF
if python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$work/parity.json" 2>/dev/null; then
  part parity pass "$(cat "$work/parity.json")"
else
  tail -5 "$work"/train-*.log >"$work/train.tail" 2>&1
  part parity fail "{\"result\":$(cat "$work/parity.json" 2>/dev/null || echo null),\"logs\":$(jsonstr <"$work/train.tail")}"
fi

# 4. speed: W2 scaled up, saddle (xla:cuda) and, if present, transformers + PEFT on the same GPU
big=$work/synth-2048
if limit 120 "$bench" -write-synth "$big" "${big_model[@]}" >"$work/synth.log" 2>&1; then
  if limit 200 "$bench" -backend "$gpu_backend" -mode train -model "$big" "${big_batch[@]}" -steps 5 -warmup 2 >"$work/saddle-big.json" 2>"$work/saddle-big.log"; then
    part speed-saddle ok "$(tail -1 "$work/saddle-big.json")"
  else
    part speed-saddle fail "{\"log\":$(jsonstr <"$work/saddle-big.log")}"
  fi
  limit 200 python3 "$here/scripts/bench/peft_peer.py" --model "$big" --batch "${big_batch[1]}" --seq "${big_batch[3]}" --steps 5 >"$work/peft.json" 2>"$work/peft.log"
  rc=$?
  if [ $rc = 0 ]; then part speed-peft ok "$(tail -1 "$work/peft.json")"
  elif [ $rc = 3 ]; then part speed-peft skipped "$(tail -1 "$work/peft.json")"
  else part speed-peft fail "{\"rc\":$rc,\"log\":$(jsonstr <"$work/peft.log")}"
  fi
else
  part speed-saddle fail "{\"log\":$(jsonstr <"$work/synth.log")}"
fi

finish
python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["parity_passed"] else 1)' "$json"
