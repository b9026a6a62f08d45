package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/saddle-ml/saddle/internal/testenv"
	"github.com/saddle-ml/saddle/tokenizer"
)

// The conformance test renders chat templates × conversations with this package and with Jinja2 itself
// (scripts/chat-oracle/render.py, configured as transformers' apply_chat_template configures it) and compares:
// the same text (and the same {% generation %} spans), or an error on both sides (carrying the template's
// message where raise_exception raised it). Where Jinja renders and this package refuses a construct as
// unsupported, the case counts as refused and is logged; anything else is a mismatch.
//
// Templates: the chat templates of real tokenizers (tokenizer_config.json fetched by scripts/fetch-tokenizers.sh)
// and the templates of this package's own tests. Conversations: generated deterministically below.

// oraclePython is Debian's interpreter, which has python3-jinja2 (the first python3 on PATH may not).
const oraclePython = "/usr/bin/python3"

type confTemplate struct {
	name     string
	src      string
	real     bool   // a tokenizer's template, rendered with its special tokens
	bos, eos string // "" when the tokenizer has none
}

// testSpecials are the special tokens test templates are rendered with, in turn: both, only EOS, none.
var testSpecials = [][2]string{{"<s>", "</s>"}, {"", "<|end|>"}, {"", ""}}

// probes exercise the subset on message contents and template variables, where the tests' templates use constants.
var probes = []string{
	"{{ messages }}|{% for m in messages %}{{ m }}{{ m.content.split() }}{{ m.content.split('\\n') }}{{ m.content.split(' ', 1) }}{% endfor %}",
	"{% for m in messages %}[{{ m.content | trim }}|{{ m.content.strip() }}|{{ m.content.lstrip() }}|{{ m.content.rstrip('\\n') }}|{{ m.content.strip('\\n ') }}]{% endfor %}",
	"{% for m in messages %}{{ m.content | length }},{{ m.content[:7] }},{{ m.content[-3:] }},{{ m.content[::-2] }},{{ m.content | reverse }},{{ m.content | first }},{{ m.content | last }},{{ m.content.find('a') }};{% endfor %}",
	"{% for m in messages %}{{ m.content | tojson }}{{ m | tojson }}{{ m.content.replace(' ', '_') }}{{ m.content | replace('\\n', '\\\\n') }}{{ m.content | int }}{{ m.content | string }}{% endfor %}",
	"{% for m in messages %}{{ m.content.startswith('<think>') }}{{ m.content.endswith(('\\n', ' ')) }}{{ '</think>' in m.content }}{{ m.content is string }}{{ m.content == '' }}{{ m.content < 'M' }}{% endfor %}",
	"{{ messages | tojson }}|{{ messages | tojson(indent=2) }}|{{ tools | tojson }}|{{ tools | tojson(indent=4) }}|{{ tools }}",
	"{{ messages | tojson(indent=-1) }}|{{ messages | tojson(indent=0) }}|{{ tools | tojson(false, 1) }}|{{ tools | tojson(ensure_ascii=false) }}",
	"{{ bos_token }}{% for m in messages %}{{ m.role | upper }}: {{ m.content | lower }}{{ eos_token }}{% endfor %}{% if enable_thinking is defined %}{{ enable_thinking }}{% endif %}",
	"{% if bos_token is defined %}B{% endif %}{% if eos_token is defined %}E{% endif %}{{ bos_token ~ eos_token }}{{ eos_token | default('no eos') }}",
	"{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% if not loop.last %}{{ eos_token }}{% endif %}{% endgeneration %}{% else %}<{{ m.role }}>{{ m.content }}{% endif %}{% endfor %}",
	"{% for m in messages %}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.previtem.role if loop.previtem is defined else '-' }}{{ loop.nextitem.role if loop.nextitem is defined }}{% endfor %}",
	"{% for m in messages %}{{ m.get('role') }}{{ m.get('name', 'anon') }}{{ m.keys() | list }}{{ m.values() | list | length }}{% for k, v in m.items() %}{{ k }}={{ v | length }};{% endfor %}{{ m | length }}{{ m | list }}{% endfor %}",
	"{{ messages | first }}{{ messages | last }}{{ (messages | reverse | list)[:1] }}{{ messages[0].content | join('|') if messages }}{{ messages[-1].role if messages }}{{ messages[99] is defined }}{{ messages.role }}",
	"{{ 'x' if messages | length > 2 else 'y' }}{{ messages | length is odd }}{{ messages | length is even }}{{ messages | length / 3 }}{{ (messages | length) * 0.1 }}{{ range(messages | length) | list }}",
	"{% for s in ['42', ' 4_2 ', '4__2', '_4', '1e3', '-7.9', '.5', '5.', 'x', '0x1A', '0x1p4', '', 'nan', '-Infinity'] %}{{ (s | int) if 'nf' not in s else 'inf' }},{% endfor %}{{ 3.7 | int }}{{ true | int }}{{ none | int }}",
	"{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 1e-5 }} {{ 0.0001 }} {{ 1 / 3 }} {{ 2.5e300 * 1.0 }} {{ -0.0 }} {{ 10 / 4 }} {{ 7 // 2.0 }} {{ -7 % 2.5 }} {{ 1.0 == 1 }} {{ 3 - 2.5 }}",
	"{% set ns = namespace(a=1e308) %}{% set x = ns.a * 10 %}{% set n = x - x %}{{ x }}{{ n }}{{ n < 1 }}{{ n <= 1 }}{{ n >= n }}{{ n == n }}{{ 1 > n }}{{ n != n }}{{ x > 9223372036854775807 }}{{ -x < 1 }}",
	"{{ 9007199254740993 > 9007199254740992.0 }}{{ 9007199254740993 == 9007199254740992.0 }}{{ 9007199254740993 in [9007199254740992.0] }}{{ 2 >= 2.0 }}{{ -0.0 == 0 }}{{ 'a' < 'b' }}{{ '' < 'a' }}",
	"{% set ns = namespace(a=1e308) %}{% set n = ns.a * 10 - ns.a * 10 %}{{ n in [n] }}", "{{ [1] < [2] }}", "{{ (1, 2) < (1, 3) }}", "{{ none < 1 }}", "{{ 'a' < 1 }}",
	"{{ 9223372036854775807 - 1 + 1 }} {{ -9223372036854775807 - 1 }} {{ 3037000499 * 3037000499 }} {{ (-9223372036854775807 - 1) // 2 }}",
	"{{ 4611686018427387904 * 2 }}", "{{ -9223372036854775807 - 2 }}", "{{ (-9223372036854775807 - 1) // -1 }}",
	"{{ 1_000 }} {{ 0x1F }} {{ 0B1_01 }} {{ 0o17 }} {{ 00 }} {{ 1_0.5e1_0 }} {{ messages.0.role if messages }} {{ (1, 2).1 }} {{ 1.e3 }}",
	`{{ 'a' * 3 }}{{ 'ab' * -1 }}{{ [1, 2] + [3] }}{{ (1, 2) + (3,) }}{{ (1,) }}{{ () }}{{ {} }}{{ {'a': {'b': (1, 'x')}} }}{{ [none, true, 1.5, 'q\'s', "d\"q", '\t\x01é😀\u200b'] }}`,
	`{{ 'a\u00e9\x41\101\'\"\\\q' }}`,
	`{{ 'a\N{BULLET}' }}`,
}

// realTemplate reads the chat template of a tokenizer_config.json; ok is false when the file has none.
func realTemplate(name, path string) (tmpl confTemplate, ok bool, err error) {
	cfg, err := tokenizer.ReadConfig(path)
	if err != nil {
		return tmpl, false, err
	}
	tmpl = confTemplate{name: name, src: cfg.ChatTemplate, bos: cfg.BOSToken, eos: cfg.EOSToken}
	return tmpl, cfg.ChatTemplate != "", nil
}

// conformanceTemplates lists the real templates (required: fails or skips the test when missing), the templates
// of this package's tests, and the probes.
func conformanceTemplates(t *testing.T) []confTemplate {
	var out []confTemplate
	cache := testenv.TokenizerCache()
	for _, name := range []string{"llama3", "llama3_1", "qwen3", "gemma3", "deepseek_v3"} {
		tmpl, ok, err := realTemplate(name, filepath.Join(cache, name, "tokenizer_config.json"))
		tmpl.real = true
		if err != nil {
			testenv.Missing(t, "chat template of %s: %v; run scripts/fetch-tokenizers.sh", name, err)
		}
		if !ok {
			t.Fatalf("%s: tokenizer_config.json has no chat_template", name)
		}
		out = append(out, tmpl)
	}
	for _, opt := range []struct{ name, path string }{
		{"llama2", filepath.Join(cache, "llama2", "tokenizer_config.json")},
		{"stories260K", filepath.Join(testenv.SharedDir(), "models", "stories260K-hf", "tokenizer_config.json")},
	} {
		switch tmpl, ok, err := realTemplate(opt.name, opt.path); {
		case ok:
			tmpl.real = true
			out = append(out, tmpl)
		case err != nil:
			t.Logf("%s: %v", opt.name, err)
		default:
			t.Logf("%s: tokenizer_config.json has no chat_template", opt.name)
		}
	}
	add := func(name, src string) { out = append(out, confTemplate{name: name, src: src}) }
	for i, c := range subsetCases {
		add(fmt.Sprintf("subset/%d %s", i, c.name), c.tmpl)
	}
	for i, c := range unsupportedParse {
		add(fmt.Sprintf("unsupported-parse/%d %s", i, c.construct), c.tmpl)
	}
	for i, c := range unsupportedRun {
		add(fmt.Sprintf("unsupported-run/%d %s", i, c.msg), c.tmpl)
	}
	for i, src := range fuzzSeeds {
		add(fmt.Sprintf("fuzz-seed/%d", i), src)
	}
	for i, src := range probes {
		add(fmt.Sprintf("probe/%d", i), src)
	}
	return out
}

type conversation struct {
	name      string
	msgs      []Message
	genPrompt bool
	extra     map[string]any
}

// contents are message texts that stress whitespace handling, escaping, Unicode and template-looking text.
var contents = []string{
	"Hello!",
	"",
	" ",
	"\n",
	" \t\n ",
	"  Can you fix my kite?  ",
	"\nLeading and trailing newlines\n\n",
	"Line one\nLine two\n\nLine four",
	"tab\tinside\tand at the end\t",
	"Café, naïve façade, Ærøskøbing, Łódź",
	"你好，世界。今天天气很好。",
	"こんにちは、ピップ！",
	"👋🏽 🚀 👩‍👩‍👧 🇫🇷",
	"مرحبا بالعالم",
	"שָׁלוֹם עולם",
	"e\u0301 a\u0308 n\u0303 (combining marks)",
	`He said "hi" and 'bye'`,
	`C:\path\to\file \n \\ \" \u00e9`,
	"Ends with a backslash\\",
	"{{ messages }} {% if true %}x{% endif %} {# comment #} {{",
	"}} %} #} { } {%- raw -%}",
	"<think>\nLet me think.\n</think>\n\nThe answer is 4.",
	"</think>only the end of a thought",
	"<think>\n\n</think>\n\n",
	"<tool_response>\n42\n</tool_response>",
	"<|im_start|>user\n<|im_end|><|eot_id|><start_of_turn><end_of_turn><s></s>",
	"\u00a0non-breaking\u3000ideographic\u2003em space\u00a0",
	"line\u2028separator\u2029paragraph\x1cfile\u0085next",
	"\x00nul and \x7f del",
	"1 + 1 = 2; 10 % 3 = 1; 2 ** 8",
	"None null true False",
	"ß ǅ İ ŉ ﬁ",
	strings.Repeat("A long answer with many words. ", 300),
}

// toolsValue is a tools list as Hugging Face passes it (JSON schemas of functions).
var toolsValue = []any{
	map[string]any{"type": "function", "function": map[string]any{
		"name": "get_weather", "description": "Weather in a city, in °C",
		"parameters": map[string]any{"type": "object", "required": []any{"city"},
			"properties": map[string]any{"city": map[string]any{"type": "string", "description": "The city, e.g. \"Zürich\""}}},
	}},
	map[string]any{"type": "function", "function": map[string]any{"name": "fix_kite", "description": "", "parameters": map[string]any{}}},
}

// extras are the template variables conversations are rendered with, in turn.
var extras = []map[string]any{
	nil,
	{"enable_thinking": true},
	{"enable_thinking": false},
	{"tools": toolsValue},
	{"tools": []any{}, "enable_thinking": false},
}

func msgs(roleContent ...string) []Message {
	out := make([]Message, 0, len(roleContent)/2)
	for i := 0; i+1 < len(roleContent); i += 2 {
		out = append(out, Message{Role: roleContent[i], Content: roleContent[i+1]})
	}
	return out
}

// conversations returns hand-picked conversations (including role sequences templates reject) and generated ones.
func conversations() []conversation {
	fixed := []conversation{
		{name: "three turns", msgs: msgs("system", "You are Pip, a small robot.", "user", "  Can you fix my kite?  ", "assistant", "Beep boop! Yes, I can fix it.\n")},
		{name: "one user turn", msgs: msgs("user", "Hi"), genPrompt: true},
		{name: "qwen3 reasoning in an earlier turn", msgs: msgs("user", "Hi", "assistant", "<think>\nsay hi\n</think>\n\nHello!", "user", "Fix it?", "assistant", "Beep boop.")},
		{name: "qwen3 multi-step tool", msgs: msgs("user", "Weather?", "assistant", "<think>\ncall\n</think>\n\nCalling.", "user", "<tool_response>\n21\n</tool_response>", "assistant", "21 °C.")},
		{name: "empty", msgs: []Message{}},
		{name: "empty with generation prompt", msgs: []Message{}, genPrompt: true},
		{name: "system only", msgs: msgs("system", "Be brief."), genPrompt: true},
		{name: "two user turns", msgs: msgs("user", "a", "user", "b")},
		{name: "assistant first", msgs: msgs("assistant", "Hello.", "user", "Hi.")},
		{name: "system then assistant", msgs: msgs("system", "Be brief.", "assistant", "Hello.")},
		{name: "two assistant turns", msgs: msgs("user", "Hi", "assistant", "a", "assistant", "b")},
		{name: "two system messages", msgs: msgs("system", "One.", "system", "Two.", "user", "Hi")},
		{name: "system in the middle", msgs: msgs("user", "Hi", "assistant", "Hello", "system", "Be brief.", "user", "Ok")},
		{name: "tool role", msgs: msgs("user", "Weather?", "tool", "21 °C", "assistant", "It is 21 °C.")},
		{name: "two tool outputs", msgs: msgs("user", "Weather?", "tool", "21", "tool", "22", "user", "Thanks")},
		{name: "unknown role", msgs: msgs("user", "Hi", "narrator", "Meanwhile…")},
		{name: "assistant-span probe", msgs: msgs("user", "Hi", "assistant", "Hello!", "\x00saddle-probe", "\x00")},
		{name: "ending with user, thinking off", msgs: msgs("system", "S", "user", "Q"), genPrompt: true, extra: map[string]any{"enable_thinking": false}},
		{name: "tools with system", msgs: msgs("system", "Use tools.", "user", "Weather in Zürich?"), genPrompt: true, extra: map[string]any{"tools": toolsValue}},
	}
	out := fixed
	rng := rand.New(rand.NewPCG(2024, 7))
	for i := range 110 {
		var m []Message
		if rng.IntN(3) == 0 {
			m = append(m, Message{Role: "system", Content: contents[rng.IntN(len(contents))]})
		}
		turns := 1 + rng.IntN(6)
		for k := range turns {
			role := "user"
			if k%2 == 1 {
				role = "assistant"
			}
			m = append(m, Message{Role: role, Content: contents[rng.IntN(len(contents))]})
		}
		out = append(out, conversation{
			name:      fmt.Sprintf("generated %d", i),
			msgs:      m,
			genPrompt: rng.IntN(2) == 0,
			extra:     extras[rng.IntN(len(extras))],
		})
	}
	out = append(out, toolConversations()...)
	// Every content once as a user turn and once as an assistant turn.
	for i, c := range contents {
		out = append(out,
			conversation{name: fmt.Sprintf("content %d as user", i), msgs: msgs("user", c), genPrompt: true},
			conversation{name: fmt.Sprintf("content %d as assistant", i), msgs: msgs("system", "S", "user", "Q", "assistant", c)})
	}
	return out
}

type oracleCase struct {
	Template            int            `json:"template"`
	Messages            []Message      `json:"messages"`
	AddGenerationPrompt bool           `json:"add_generation_prompt"`
	BOSToken            string         `json:"bos_token"`
	EOSToken            string         `json:"eos_token"`
	Vars                map[string]any `json:"vars"`
}

type oracleResult struct {
	Text       *string  `json:"text"`
	Generation [][2]int `json:"generation"`
	Error      string   `json:"error"`
	Type       string   `json:"type"`
	Raised     bool     `json:"raised"`
}

func runOracle(t *testing.T, templates []confTemplate, cases []oracleCase) []oracleResult {
	script, err := filepath.Abs(filepath.Join("..", "scripts", "chat-oracle", "render.py"))
	if err != nil {
		t.Fatal(err)
	}
	srcs := make([]string, len(templates))
	for i, tm := range templates {
		srcs[i] = tm.src
	}
	in, err := json.Marshal(map[string]any{"templates": srcs, "cases": cases})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(oraclePython, script)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("oracle failed: %v\n%s", err, stderr.String())
	}
	var res []oracleResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("oracle output: %v", err)
	}
	if len(res) != len(cases) {
		t.Fatalf("oracle returned %d results for %d cases", len(res), len(cases))
	}
	return res
}

// runeSpans converts byte spans of text to the character (code point) spans Python reports.
func runeSpans(text string, spans [][2]int) [][2]int {
	out := make([][2]int, len(spans))
	for i, s := range spans {
		out[i] = [2]int{utf8.RuneCountInString(text[:s[0]]), utf8.RuneCountInString(text[:s[1]])}
	}
	return out
}

// firstDiff describes where got and want first differ.
func firstDiff(got, want string) string {
	i := commonPrefix(got, want)
	from := max(0, i-60)
	return fmt.Sprintf("first difference at byte %d:\n got …%q\nwant …%q", i, clip(got[from:]), clip(want[from:]))
}

func clip(s string) string {
	if len(s) > 160 {
		return strings.ToValidUTF8(s[:160], "") + "…"
	}
	return s
}

func TestConformanceWithJinja(t *testing.T) {
	if err := exec.Command(oraclePython, "-c", "import jinja2").Run(); err != nil {
		testenv.Missing(t, "%s with jinja2 not available (%v); install python3-jinja2", oraclePython, err)
	}
	templates := conformanceTemplates(t)
	convs := conversations()

	var cases []oracleCase
	for ti, tm := range templates {
		for ci, c := range convs {
			bos, eos := tm.bos, tm.eos
			if !tm.real {
				sp := testSpecials[(ti+ci)%len(testSpecials)]
				bos, eos = sp[0], sp[1]
			}
			cases = append(cases, oracleCase{Template: ti, Messages: c.msgs, AddGenerationPrompt: c.genPrompt,
				BOSToken: bos, EOSToken: eos, Vars: c.extra})
		}
	}
	want := runOracle(t, templates, cases)

	var renderedAlike, raisedAlike, mismatches int
	refused := map[string]int{} // "template: error" → cases
	type tally struct{ rendered, raised, refused, mismatches int }
	perTemplate := map[string]*tally{}
	k := 0
	for _, tm := range templates {
		tl := &tally{}
		perTemplate[tm.name] = tl
		tmpl, parseErr := Parse(tm.src)
		for _, c := range convs {
			w, oc := want[k], cases[k]
			k++
			var got string
			var spans [][2]int
			err := parseErr
			if err == nil {
				got, spans, err = tmpl.render(c.msgs, Options{AddGenerationPrompt: c.genPrompt, BOSToken: oc.BOSToken, EOSToken: oc.EOSToken, Extra: c.extra})
			}
			where := fmt.Sprintf("%s × %s (generation prompt %v, bos %q, eos %q, vars %v)", tm.name, c.name, c.genPrompt, oc.BOSToken, oc.EOSToken, c.extra)
			report := func(format string, args ...any) {
				mismatches++
				tl.mismatches++
				if mismatches <= 20 {
					t.Errorf("%s: "+format, append([]any{where}, args...)...)
				}
			}
			switch {
			case w.Text != nil && err == nil:
				if got != *w.Text {
					report("renders differently from Jinja2: %s", firstDiff(got, *w.Text))
				} else if gs := runeSpans(got, spans); !slices.Equal(gs, w.Generation) {
					report("generation spans %v, Jinja2 %v", gs, w.Generation)
				} else {
					renderedAlike++
					tl.rendered++
				}
			case w.Text != nil:
				if strings.Contains(err.Error(), "unsupported") {
					refused[tm.name+": "+err.Error()]++
					tl.refused++
				} else {
					report("Go fails (%v), Jinja2 renders %q", err, clip(*w.Text))
				}
			case err == nil:
				report("Go renders %q, Jinja2 raises %s: %s", clip(got), w.Type, w.Error)
			case w.Raised && !strings.Contains(err.Error(), w.Error):
				report("Go error %q lacks the template's exception message %q", err, w.Error)
			default:
				raisedAlike++
				tl.raised++
			}
		}
	}
	if len(refused) > 0 {
		keys := make([]string, 0, len(refused))
		for r := range refused {
			keys = append(keys, r)
		}
		sort.Strings(keys)
		for _, r := range keys {
			t.Logf("refused (Jinja2 renders, outside the supported subset) %d×: %s", refused[r], r)
		}
	}
	nReal := 0
	for _, tm := range templates {
		if tl := perTemplate[tm.name]; tm.real || tl.mismatches > 0 {
			t.Logf("%s: %d rendered alike, %d raised alike, %d refused, %d mismatches", tm.name, tl.rendered, tl.raised, tl.refused, tl.mismatches)
		}
		if tm.real {
			nReal++
		}
	}
	nRefused := 0
	for _, n := range refused {
		nRefused += n
	}
	t.Logf("chat conformance: %d templates (%d of tokenizers) × %d conversations = %d checks: %d rendered alike, %d raised alike, %d refused as unsupported, %d mismatches",
		len(templates), nReal, len(convs), len(cases), renderedAlike, raisedAlike, nRefused, mismatches)
}

// parsed parses messages written as chat data has them (tool calls, tool results, names, content parts).
func parsed(js string) []Message {
	m, err := ParseMessages([]byte(js))
	if err != nil {
		panic(fmt.Sprintf("%s: %v", js, err))
	}
	return m
}

// toolConversations are conversations with OpenAI / Hugging Face tool calls, tool results, names and content given
// as a list of parts: hand-written ones and generated ones.
func toolConversations() []conversation {
	withTools := map[string]any{"tools": toolsValue}
	out := []conversation{
		{name: "tool call, object arguments, null content", extra: withTools, msgs: parsed(`[
			{"role": "system", "content": "Use tools."},
			{"role": "user", "content": "Weather in Zürich?"},
			{"role": "assistant", "content": null, "tool_calls": [{"type": "function", "id": "call_1",
				"function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "C", "days": 2, "ratio": 0.5, "hourly": false}}}]},
			{"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 21}"},
			{"role": "assistant", "content": "It is 21 °C."}]`)},
		{name: "tool call, string arguments, empty content", msgs: parsed(`[
			{"role": "user", "content": "Fix my kite"},
			{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "fix_kite", "arguments": "{\"kite\": \"red\"}"}}]},
			{"role": "tool", "content": "fixed"},
			{"role": "assistant", "content": "Done!"}]`)},
		{name: "tool call without content, generation prompt after the result", genPrompt: true, extra: withTools, msgs: parsed(`[
			{"role": "user", "content": "Weather?"},
			{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
			{"role": "tool", "name": "get_weather", "content": "-3"}]`)},
		{name: "two tool calls in one turn", extra: withTools, msgs: parsed(`[
			{"role": "user", "content": "Weather in A and B?"},
			{"role": "assistant", "content": "Checking both.", "tool_calls": [
				{"type": "function", "id": "a", "function": {"name": "get_weather", "arguments": {"city": "A"}}},
				{"type": "function", "id": "b", "function": {"name": "get_weather", "arguments": "{\"city\": \"B\"}"}}]},
			{"role": "tool", "tool_call_id": "a", "content": "1"},
			{"role": "tool", "tool_call_id": "b", "content": "2"},
			{"role": "assistant", "content": "A: 1, B: 2."}]`)},
		{name: "content as parts", msgs: parsed(`[
			{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
			{"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": " world\n"}]},
			{"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]}]`)},
		{name: "names on messages", msgs: parsed(`[
			{"role": "system", "name": "rules", "content": "Be kind."},
			{"role": "user", "name": "alice", "content": "Hi"},
			{"role": "assistant", "name": "pip", "content": "Beep."}]`)},
	}
	// Generated: a user question, an assistant turn calling 1–2 tools (content null, absent, empty or text;
	// arguments an object or a JSON string), their results, and a final answer, sometimes as parts.
	rng := rand.New(rand.NewPCG(77, 3))
	for i := range 40 {
		var b strings.Builder
		q, _ := json.Marshal(contents[rng.IntN(len(contents))])
		fmt.Fprintf(&b, `[{"role": "user", "content": %s}, {"role": "assistant"`, q)
		switch rng.IntN(4) {
		case 0:
			b.WriteString(`, "content": null`)
		case 1:
		case 2:
			b.WriteString(`, "content": ""`)
		case 3:
			fmt.Fprintf(&b, `, "content": %q`, "Let me check.")
		}
		calls := 1 + rng.IntN(2)
		b.WriteString(`, "tool_calls": [`)
		for k := range calls {
			if k > 0 {
				b.WriteString(", ")
			}
			city, _ := json.Marshal(contents[rng.IntN(len(contents))])
			args := fmt.Sprintf(`{"city": %s, "n": %d}`, city, k)
			if rng.IntN(2) == 0 {
				quoted, _ := json.Marshal(args)
				args = string(quoted)
			}
			fmt.Fprintf(&b, `{"type": "function", "id": "call_%d", "function": {"name": "get_weather", "arguments": %s}}`, k, args)
		}
		b.WriteString(`]}`)
		for k := range calls {
			res, _ := json.Marshal(contents[rng.IntN(len(contents))])
			fmt.Fprintf(&b, `, {"role": "tool", "tool_call_id": "call_%d", "name": "get_weather", "content": %s}`, k, res)
		}
		answer, _ := json.Marshal(contents[rng.IntN(len(contents))])
		if rng.IntN(2) == 0 {
			answer = []byte(`[{"type": "text", "text": ` + string(answer) + `}]`)
		}
		genPrompt := rng.IntN(3) == 0
		if !genPrompt {
			fmt.Fprintf(&b, `, {"role": "assistant", "content": %s}`, answer)
		}
		b.WriteString("]")
		out = append(out, conversation{name: fmt.Sprintf("generated tool call %d", i), msgs: parsed(b.String()),
			genPrompt: genPrompt, extra: extras[rng.IntN(len(extras))]})
	}
	return out
}
