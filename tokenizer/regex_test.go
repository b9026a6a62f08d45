package tokenizer

import (
	"math/rand/v2"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func splitWith(t *testing.T, pattern, s string) []string {
	t.Helper()
	re, err := compileRegex(pattern)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, sp := range findMatches(re, s) {
		if sp.start < sp.end {
			out = append(out, s[sp.start:sp.end])
		}
	}
	return out
}

const llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

func TestRegexSplitPatterns(t *testing.T) {
	cases := []struct {
		pattern, in string
		want        []string
	}{
		// \s+(?!\S) leaves the last space of a run to the next word.
		{gpt2Pattern, "Hello  world  ", []string{"Hello", " ", " world", "  "}},
		{gpt2Pattern, "I'm 12345 ok!!", []string{"I", "'m", " 12345", " ok", "!!"}},
		{gpt2Pattern, "a\n\n b", []string{"a", "\n\n", " b"}},
		{llama3Pattern, "1234567 'S 'ſt", []string{"123", "456", "7", " '", "S", " '", "ſt"}},
		{llama3Pattern, "'ſt", []string{"'ſ", "t"}}, // (?i) folds ſ with s, as Oniguruma does
		{llama3Pattern, "'LL've", []string{"'LL", "'ve"}},
		{llama3Pattern, "x  \n\n  y", []string{"x", "  \n\n", " ", " y"}},
		{llama3Pattern, "foo.bar()\n\tbaz", []string{"foo", ".bar", "()\n", "\tbaz"}},
		{llama3Pattern, "你好，世界", []string{"你好", "，世界"}},
		{`a++a|b`, "aaab", []string{"aaa", "b"}}, // possessive: "aaa" is no match, kept as unmatched
		{`(?>a+)b|a`, "aab", []string{"aab"}},
		{`a*?b`, "aab", []string{"aab"}},
		{`(?:ab)+?c|.`, "ababc", []string{"ababc"}},
		{`x(?=y)`, "xxy", []string{"x", "x", "y"}},
		{`^a|b$`, "a\nab\nb", []string{"a", "\n", "a", "b", "\n", "b"}},
		{`\bw`, "w ww", []string{"w", " ", "w", "w"}},
	}
	for _, c := range cases {
		if got := splitWith(t, c.pattern, c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("split(%q, %q) = %q, want %q", c.pattern, c.in, got, c.want)
		}
	}
}

func TestRegexUnsupportedSyntax(t *testing.T) {
	for _, p := range []string{`(?<=a)b`, `(?<!a)b`, `(a)\1`, `[a[b]]`, `[a&&b]`, `(a`, `a)`, `*a`, `\p{NoSuchProperty}`, `(?x)a`} {
		if _, err := compileRegex(p); err == nil {
			t.Errorf("compileRegex(%q) should fail", p)
		}
	}
}

// On ASCII text without \v, Go's regexp (leftmost-first, like a backtracking engine) defines
// the same matches for patterns without lookaround or possessive quantifiers.
func TestRegexAgreesWithGoRegexp(t *testing.T) {
	patterns := []string{
		gpt2Pattern[:strings.Index(gpt2Pattern, `|\s+(?!\S)`)] + `|\s+`,
		`(?i:'s|'t|'re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+`,
		`a|ab|abc`, `(?:a|ab)(?:c|bcd)`, `a*?b?`, `(?:ab?)*c`, `\w+|[^\w\s]+`, `[a-c]{2,3}?|\d+`,
		`(a|b)*?c|.`, `^a|c$`, `x*`, `(?:a*)*b|a`, `[^ab\n]+`, `\bab|b\B`, `(?:|a)b`,
	}
	alphabet := []rune("ab c1\n'.-_xX\t")
	rng := rand.New(rand.NewPCG(1, 2))
	for _, p := range patterns {
		ours, err := compileRegex(p)
		if err != nil {
			t.Fatal(err)
		}
		goRe := regexp.MustCompile("(?m)" + p) // Oniguruma's ^ and $ are line anchors
		for i := 0; i < 1500; i++ {
			rs := make([]rune, rng.IntN(14))
			for j := range rs {
				rs[j] = alphabet[rng.IntN(len(alphabet))]
			}
			s := string(rs)
			var got [][]int
			for _, m := range ours.findAll(s) {
				got = append(got, []int{m[0], m[1]})
			}
			want := goRe.FindAllStringIndex(s, -1)
			if s == "" {
				want = nil // findAll reports nothing for "" (HF returns the empty string unmatched)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("pattern %q on %q: got %v, want %v", p, s, got, want)
			}
		}
	}
}
