#!/usr/bin/env python3
"""Independent check of a PEFT LoRA adapter folder written by saddle (stdlib only: json, struct).

usage: check_peft.py ADAPTER_DIR REFERENCE_JSON

REFERENCE_JSON: {"scale": s, "modules": {"model.layers.N....": {"out": o, "in": i, "delta": [o*i floats]}}}
where delta is the ΔW = s·B⋯A saddle applies. The script parses adapter_config.json and adapter_model.safetensors
by the safetensors spec (8-byte little-endian header length, JSON header, raw little-endian data), checks PEFT's
field names and tensor naming, recomputes (lora_alpha/r)·lora_B·lora_A (alpha/sqrt(r) with use_rslora) and
compares it with delta. Prints a JSON summary; exits 1 listing every problem.
"""
import json
import math
import re
import struct
import sys


def main(adapter_dir, ref_path):
    problems = []

    def check(cond, msg):
        if not cond:
            problems.append(msg)
        return cond

    with open(adapter_dir + "/adapter_config.json", encoding="utf-8") as f:
        cfg = json.load(f)
    with open(ref_path, encoding="utf-8") as f:
        ref = json.load(f)

    check(cfg.get("peft_type") == "LORA", "peft_type %r" % cfg.get("peft_type"))
    check(cfg.get("task_type") == "CAUSAL_LM", "task_type %r" % cfg.get("task_type"))
    r = cfg.get("r")
    check(isinstance(r, int) and not isinstance(r, bool) and r > 0, "r %r is not a positive int" % r)
    alpha = cfg.get("lora_alpha")
    check(isinstance(alpha, (int, float)) and alpha > 0, "lora_alpha %r" % alpha)
    for key, want in (("bias", "none"), ("use_dora", False), ("fan_in_fan_out", False), ("inference_mode", True)):
        check(cfg.get(key) == want, "%s is %r, want %r" % (key, cfg.get(key), want))
    check(isinstance(cfg.get("use_rslora"), bool), "use_rslora %r is not a bool" % cfg.get("use_rslora"))
    check(isinstance(cfg.get("lora_dropout"), (int, float)), "lora_dropout %r" % cfg.get("lora_dropout"))
    check("base_model_name_or_path" in cfg, "base_model_name_or_path missing")
    if problems:
        return problems, {}
    scale = alpha / math.sqrt(r) if cfg["use_rslora"] else alpha / r
    check(abs(scale - ref["scale"]) <= 1e-12 * abs(ref["scale"]), "scale %r, saddle's %r" % (scale, ref["scale"]))
    targets = cfg.get("target_modules")
    layers = cfg.get("layers_to_transform")
    check(isinstance(targets, (list, str)), "target_modules %r" % targets)

    with open(adapter_dir + "/adapter_model.safetensors", "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    check(8 + n <= len(data), "header length %d past the end" % n)
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    body = data[8 + n :]
    meta = header.pop("__metadata__", None)
    check(meta == {"format": "pt"}, "__metadata__ %r, want {'format': 'pt'}" % meta)

    # The data section is covered exactly, without gaps or overlaps.
    pos = 0
    for start, end, key in sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items()):
        check(start == pos, "%s starts at %d, want %d" % (key, start, pos))
        pos = end
    check(pos == len(body), "tensors end at %d, data section is %d bytes" % (pos, len(body)))

    key_re = re.compile(r"^base_model\.model\.(model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj))\.lora_([AB])\.weight$")
    factors = {}
    for key, info in header.items():
        m = key_re.match(key)
        if not check(m, "tensor name %r does not follow PEFT's base_model.model.<module>.lora_A/B.weight" % key):
            continue
        module, layer, short, which = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        check(info["dtype"] == "F32", "%s dtype %s" % (key, info["dtype"]))
        shape = info["shape"]
        count = 1
        for d in shape:
            count *= d
        start, end = info["data_offsets"]
        if not check(end - start == 4 * count, "%s: %d bytes for shape %r" % (key, end - start, shape)):
            continue
        factors.setdefault(module, {})[which] = (shape, struct.unpack("<%df" % count, body[start:end]))
        if isinstance(targets, list):
            check(short in targets, "%s: %s not in target_modules %r" % (key, short, targets))
        else:
            check(re.fullmatch(targets, module), "%s: target_modules regex %r does not match %s" % (key, targets, module))
        if layers is not None:
            check(layer in layers, "%s: layer %d not in layers_to_transform %r" % (key, layer, layers))
    check(set(factors) == set(ref["modules"]), "modules %r, saddle adapted %r" % (sorted(factors), sorted(ref["modules"])))

    worst = 0.0
    for module, f in sorted(factors.items()):
        if not check("A" in f and "B" in f, "%s lacks lora_A or lora_B" % module):
            continue
        (sa, A), (sb, B) = f["A"], f["B"]
        want = ref["modules"].get(module)
        if not check(want is not None, "%s was not adapted" % module):
            continue
        out, inp = want["out"], want["in"]
        if not check(sa == [r, inp] and sb == [out, r], "%s: lora_A %r, lora_B %r, want [%d, %d] and [%d, %d]" % (module, sa, sb, r, inp, out, r)):
            continue
        delta = want["delta"]
        peak = max(abs(x) for x in delta) or 1.0
        for o in range(out):
            brow = B[o * r : (o + 1) * r]
            for i in range(inp):
                s = 0.0
                for k in range(r):
                    s += brow[k] * A[k * inp + i]
                worst = max(worst, abs(scale * s - delta[o * inp + i]) / peak)
    check(worst < 1e-5, "scale·B·A differs from saddle's ΔW by %g (relative to the largest entry)" % worst)
    return problems, {"modules": len(factors), "rank": r, "scale": scale, "worst_relative_error": worst}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    problems, summary = main(sys.argv[1], sys.argv[2])
    print(json.dumps({"ok": not problems, "problems": problems, **summary}))
    sys.exit(1 if problems else 0)
