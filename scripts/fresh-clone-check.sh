#!/usr/bin/env bash
# Fresh-clone check: clones this repository's HEAD into a temporary folder with no ../shared beside it, points HOME
# and every model cache at empty folders, turns the Hugging Face hub off (HF_HUB_OFFLINE=1; and the network itself
# with `unshare -rn` where user namespaces are allowed), and runs the README's main command there, which must print
# its table: the built-in model needs nothing else. STEPS=N replaces the command's --steps 100 (CI uses 2).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd
cmdline=$(grep -m1 '^GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd go run ./cmd/saddle escape ' README.md) ||
  { echo "fresh-clone-check: README.md has no main command (go run ./cmd/saddle escape ...)" >&2; exit 1; }
[[ "$cmdline" == *"--steps 100"* ]] || { echo "fresh-clone-check: the main command has no --steps 100: $cmdline" >&2; exit 1; }
if [[ "$cmdline" == *../* || "$cmdline" == */shared/* ]]; then
  echo "fresh-clone-check: the main command uses a path outside the repository: $cmdline" >&2; exit 1
fi
cmdline=${cmdline/--steps 100/--steps ${STEPS:-100}}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$(pwd)" "$tmp/clone/saddle"
mkdir -p "$tmp/home"
# The Go toolchain and modules stay where they are (no network needed for them either).
export GOMODCACHE GOCACHE GOPATH GOPROXY=off GOFLAGS=-mod=mod
GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE) GOPATH=$(go env GOPATH)
unset SADDLE_SHARED SADDLE_CACHE HF_HUB_CACHE HF_HOME XDG_CACHE_HOME SADDLE_BASEHASH_CACHE
export HOME="$tmp/home" HF_HUB_OFFLINE=1
netns=()
if unshare -rn true 2>/dev/null; then netns=(unshare -rn); else echo "fresh-clone-check: no network namespace here; HF_HUB_OFFLINE=1 only" >&2; fi
cd "$tmp/clone/saddle"
echo "fresh-clone-check: $cmdline" >&2
"${netns[@]}" bash -c "$cmdline" | tee "$tmp/out.txt"
rows=$(grep -cE '^(sgd|adam|sign) ' "$tmp/out.txt" || true)
if ! grep -q '^optimizer  *lr ' "$tmp/out.txt" || [[ "$rows" -ne 12 ]]; then
  echo "fresh-clone-check: no table of 12 runs in the output" >&2; exit 1
fi
if [[ -e "$tmp/home/.cache/huggingface" ]]; then
  echo "fresh-clone-check: the Hugging Face cache was written" >&2; exit 1
fi
echo "fresh-clone-check: ok (a fresh clone, no ../shared, no network: the table of 12 runs)" >&2
