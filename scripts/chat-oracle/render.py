#!/usr/bin/python3
"""Reference renderer for chat/conformance_test.go: renders chat templates with Jinja2 itself, configured as
Hugging Face transformers' apply_chat_template configures it (src/transformers/utils/chat_template_utils.py,
_compile_jinja_template and render_jinja_template):

  - ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the loopcontrols extension and a
    {% generation %} tag whose output spans are recorded (transformers' AssistantTracker);
  - the tojson filter replaced by json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False);
  - globals raise_exception(message) (raises TemplateError) and strftime_now(format);
  - render(messages=..., tools=None, documents=None, add_generation_prompt=..., **special_tokens, **kwargs), where
    the special tokens (bos_token, eos_token) are passed only when set, as the tokenizer's special_tokens_map does.

Reads one JSON object from stdin:
  {"templates": ["...", ...],
   "cases": [{"template": index, "messages": [{"role": ..., "content": ...}, ...], "add_generation_prompt": bool,
              "bos_token": str or null, "eos_token": str or null, "vars": {...}}, ...]}
and writes a JSON list with one result per case:
  {"text": rendered, "generation": [[start, end], ...]}   (spans in characters)
  {"error": message, "type": exception class, "raised": true when raise_exception raised it}
Run with /usr/bin/python3 (Debian's python3-jinja2).
"""

import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment


class RaisedException(jinja2.exceptions.TemplateError):
    """What raise_exception raises: a TemplateError, as in transformers, told apart for the report."""


class Generation(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %} renders its body and records where it lands in the output."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_track"), [], [], body).set_lineno(lineno)

    def _track(self, caller):
        text = caller()
        if TRACK is not None:
            blocks, spans = TRACK
            start = sum(len(b) for b in blocks)
            spans.append([start, start + len(text)])
        return text


TRACK = None  # (blocks rendered so far, generation spans) while a case renders


def raise_exception(message):
    raise RaisedException(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def error(e):
    return {"error": str(e), "type": type(e).__name__, "raised": isinstance(e, RaisedException)}


def render(template, case):
    global TRACK
    kwargs = {"messages": case["messages"], "tools": None, "documents": None,
              "add_generation_prompt": case["add_generation_prompt"]}
    for name in ("bos_token", "eos_token"):
        if case.get(name):
            kwargs[name] = case[name]
    kwargs.update(case.get("vars") or {})
    blocks, spans = [], []
    TRACK = (blocks, spans)
    try:
        for block in template.generate(**kwargs):
            blocks.append(block)
    finally:
        TRACK = None
    return {"text": "".join(blocks), "generation": spans}


def main():
    req = json.loads(sys.stdin.buffer.read())
    env = environment()
    compiled = []
    for src in req["templates"]:
        try:
            compiled.append(env.from_string(src))
        except Exception as e:  # a syntax error fails every case of the template
            compiled.append(e)
    out = []
    for case in req["cases"]:
        t = compiled[case["template"]]
        if isinstance(t, Exception):
            out.append(error(t))
            continue
        try:
            out.append(render(t, case))
        except Exception as e:
            out.append(error(e))
    json.dump(out, sys.stdout)  # ASCII with \u escapes: safe for any locale and for lone surrogates


if __name__ == "__main__":
    main()
