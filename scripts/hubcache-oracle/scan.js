#!/usr/bin/env node
// Reads a Hugging Face hub cache folder with the official Hugging Face JS library's cache scanner (npm package
// @huggingface/hub@2.17.5, scanCacheDir), for model/hubcache_oracle_test.go: what saddle downloads must be a
// cache that Hugging Face's own tools understand.
//
// usage: node scan.js CACHE_DIR
// Prints JSON: {"repos": [{"id": "owner/name", "type": "model", "revisions": [{"commit": "...", "refs": ["main"],
//   "files": [{"name": "path/in/repo", "size": N, "blob": "/abs/blobs/etag"}]}]}], "warnings": ["..."]}
// The module is loaded from $SADDLE_TOKENIZER_CACHE/node_modules (default $HOME/.cache/saddle/tokenizers), where
// scripts/fetch-tokenizers.sh installs it.
'use strict';
const path = require('path');
const os = require('os');

async function main() {
  const [cacheDir] = process.argv.slice(2);
  if (!cacheDir) {
    console.error('usage: node scan.js CACHE_DIR');
    process.exit(2);
  }
  const cache = process.env.SADDLE_TOKENIZER_CACHE || path.join(os.homedir(), '.cache', 'saddle', 'tokenizers');
  const { scanCacheDir } = require(path.join(cache, 'node_modules', '@huggingface', 'hub'));
  const res = await scanCacheDir(cacheDir);
  const out = {
    repos: res.repos.map((r) => ({
      id: r.id.name,
      type: r.id.type,
      revisions: r.revisions.map((v) => ({
        commit: v.commitOid,
        refs: v.refs,
        files: v.files.map((f) => ({ name: f.path, size: f.blob.size, blob: f.blob.path })),
      })),
    })),
    warnings: res.warnings.map((w) => String(w && w.message ? w.message : w)),
  };
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
