// The llama.cpp oracle of model/llamacpp_test.go: runs GGUF models in llama.cpp (node-llama-cpp's CPU build) on a
// fixed token sequence and prints, for each model, one JSON line: for every position, llama.cpp's next-token
// probabilities, [{"token": p, ...}, ...].
// Usage: node logprobs.mjs NODE_MODULES_DIR '[1, 403, 407]' MODEL.gguf...
import {join} from "node:path";
import {pathToFileURL} from "node:url";

const [modulesDir, tokensJSON, ...modelPaths] = process.argv.slice(2);
const {getLlama} = await import(pathToFileURL(join(modulesDir, "node-llama-cpp", "dist", "index.js")).href);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const tokens = JSON.parse(tokensJSON);
const sampling = {temperature: 1, topK: 0, topP: 1, minP: 0}; // the plain softmax of the logits
for (const modelPath of modelPaths) {
  const model = await llama.loadModel({modelPath});
  // An F32 KV cache (llama.cpp defaults to F16) and no flash attention: the only rounding left is llama.cpp's
  // own quantization of activations in quantized matmuls.
  const context = await model.createContext({contextSize: 256, batchSize: 256, threads: 1, flashAttention: false,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
  const outputs = await context.getSequence().controlledEvaluate(
    tokens.map((t) => [t, {generateNext: {probabilities: true, options: sampling}}]));
  const rows = outputs.map((o) => Object.fromEntries([...(o?.next?.probabilities ?? new Map())].map(([k, v]) => [String(k), v])));
  process.stdout.write(JSON.stringify(rows) + "\n");
  await context.dispose();
  await model.dispose();
}
await llama.dispose();
