#!/usr/bin/env node
// Reference ids from the official Hugging Face tokenizers (npm package tokenizers@0.23.2, a native
// binding) for the Go tokenizer's conformance test.
//
// usage: node oracle.js TOKENIZER_JSON CORPUS_JSON [ID_LISTS_JSON]
//   CORPUS_JSON:   JSON array of strings
//   ID_LISTS_JSON: optional JSON array of id arrays to decode
// Prints JSON:
//   {"encode": [{"ids": [...], "ids_special": [...], "decode": "...", "decode_skip": "..."}, ...],
//    "decode_lists": [{"decode": "...", "decode_skip": "..."}, ...]}
// where ids / ids_special are encodings without / with special tokens, and decode / decode_skip
// decode ids_special keeping / skipping special tokens.
// The tokenizers module is loaded from $SADDLE_TOKENIZER_CACHE/node_modules (default
// $HOME/.cache/saddle/tokenizers), where scripts/fetch-tokenizers.sh installs it.
'use strict';
const fs = require('fs');
const path = require('path');
const os = require('os');

async function main() {
  const [tokPath, corpusPath, idsPath] = process.argv.slice(2);
  if (!tokPath || !corpusPath) {
    console.error('usage: node oracle.js TOKENIZER_JSON CORPUS_JSON [ID_LISTS_JSON]');
    process.exit(2);
  }
  const cache = process.env.SADDLE_TOKENIZER_CACHE || path.join(os.homedir(), '.cache', 'saddle', 'tokenizers');
  const { Tokenizer } = require(path.join(cache, 'node_modules', 'tokenizers'));
  const tok = Tokenizer.fromFile(tokPath);
  const corpus = JSON.parse(fs.readFileSync(corpusPath, 'utf8'));
  const out = { encode: [], decode_lists: [] };
  for (const text of corpus) {
    const plain = await tok.encode(text, null, { addSpecialTokens: false });
    const special = await tok.encode(text, null, { addSpecialTokens: true });
    const ids = Array.from(plain.getIds());
    const idsSpecial = Array.from(special.getIds());
    out.encode.push({
      ids,
      ids_special: idsSpecial,
      decode: await tok.decode(idsSpecial, false),
      decode_skip: await tok.decode(idsSpecial, true),
    });
  }
  if (idsPath) {
    const lists = JSON.parse(fs.readFileSync(idsPath, 'utf8'));
    for (const ids of lists) {
      out.decode_lists.push({
        decode: await tok.decode(ids, false),
        decode_skip: await tok.decode(ids, true),
      });
    }
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
