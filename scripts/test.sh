#!/usr/bin/env bash
# The test command: fetches the tokenizer oracle (npm), then vets and tests every package with the fast Go backend,
# or with the backend named by SADDLE_TEST_BACKEND (e.g. xla:cuda; see internal/testbackend).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd
bash scripts/fetch-tokenizers.sh
# shellcheck disable=SC2046 # one argument per file
gofmt_out=$(gofmt -l $(git ls-files '*.go'))
if [[ -n "$gofmt_out" ]]; then echo "gofmt would change: $gofmt_out" >&2; exit 1; fi
go vet ./...
if [[ -n "${SADDLE_TEST_BACKEND:-}" ]]; then
  # One message, not one per package, when the backend cannot start.
  go test -count=1 ./internal/testbackend >/dev/null 2>&1 || {
    go test -count=1 ./internal/testbackend 2>&1 | grep -v '^FAIL' >&2
    exit 1
  }
fi
go test -count=1 ./...
# Short kill test: SIGKILL during training and saves, resume, same final loss (scripts/kill-test.sh 20 for the full one).
bash scripts/kill-test.sh 3
