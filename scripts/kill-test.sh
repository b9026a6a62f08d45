#!/usr/bin/env bash
# Kill test: trains with SIGKILL at random moments (also during checkpoint saves) and resumes each time; the final
# loss must equal an uninterrupted run's exactly (on the Go backend; on SADDLE_TEST_BACKEND's, within 1e-4 relative:
# XLA on a GPU does not promise bitwise-identical reductions). Usage: scripts/kill-test.sh [KILLS] (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd
export GOMLX_BACKEND=${SADDLE_TEST_BACKEND:-go}
KILLS=${1:-20}
MODEL=${SADDLE_SHARED:-../shared}/models/stories260K/stories260K.gguf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/saddle" ./cmd/saddle
args=(--model "$MODEL" --optimizer adam --lr 3e-3 --schedule cosine --warmup 5 --dropout 0.1 --steps 60
      --batch-size 4 --seq-len 64 --eval-every 10 --save-every 1 --keep 2)

"$work/saddle" train "${args[@]}" --out "$work/clean" --json >"$work/clean.json" 2>/dev/null
want=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["final_train_loss"], d["final_eval_loss"])' "$work/clean.json")

run="$work/killed"
kills=0 resumes=0
while :; do
  if [[ -f "$run/summary.json" ]]; then break; fi
  # A kill during the first save leaves checkpoints/ without "latest": nothing to resume, start again.
  if [[ -f "$run/checkpoints/latest" ]]; then
    cmd=("$work/saddle" train --resume "$run" --json); resumes=$((resumes+1))
  else
    rm -rf "$run"; cmd=("$work/saddle" train "${args[@]}" --out "$run" --json)
  fi
  "${cmd[@]}" >"$work/out.json" 2>"$work/err.txt" &
  pid=$!
  if (( kills < KILLS )); then
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.3, 2.5), 2))')"
    if kill -9 "$pid" 2>/dev/null; then kills=$((kills+1)); fi
  fi
  status=0
  wait "$pid" 2>/dev/null || status=$?
  if (( status != 0 && status != 137 )); then echo "kill-test: saddle exited $status:"; cat "$work/err.txt"; exit 1; fi
done
got=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["final_train_loss"], d["final_eval_loss"])' "$run/summary.json")
echo "kill-test: $kills kills, $resumes resumes; final losses uninterrupted [$want] killed+resumed [$got]"
same() { # exact on the Go backend, 1e-4 relative on others
  python3 -c 'import sys; a = [float(x) for x in sys.argv[1].split()]; b = [float(x) for x in sys.argv[2].split()]
exact = sys.argv[3].split(":")[0] in ("go", "cpu")
sys.exit(0 if all(x == y if exact else abs(x - y) <= 1e-4 * max(abs(x), abs(y)) for x, y in zip(a, b)) and len(a) == len(b) else 1)' "$1" "$2" "$GOMLX_BACKEND"
}
same "$want" "$got" || { echo "kill-test: FAILED: losses differ ($GOMLX_BACKEND)"; exit 1; }
echo "kill-test: ok"
