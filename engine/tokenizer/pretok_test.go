package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// pieces splits text with one splitter and returns the pieces as strings.
func pieces(s splitter, text string) []string {
	cps := []rune(text)
	var out []string
	start := 0
	for _, n := range s(cps, []int{len(cps)}) {
		out = append(out, string(cps[start:start+n]))
		start += n
	}
	return out
}

var pretokSamples = []string{
	"",
	"Hello world",
	" Hello  World!  ",
	"I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
	"3333333 12.5% 1,000,000",
	"\n\n\n \n\t\r\n  \t x",
	"   Hello\n    Hello",
	"🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅",
	"нещо на Български Führer ½ ",
	"Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
	"a\u00a0b\u3000c\u2028d  \u00a0 e",
	"x''''''```````\"\"\"\"......!!!!!!??????",
	"\x01\x7f abc\x00",
	"Ⅻ ⅻ ١٢٣ 𝟘𝟙 x²",
}

// randomText draws from an alphabet that exercises every branch of the
// pre-tokenizer patterns.
func randomText(r *rand.Rand, n int) string {
	alphabet := []string{"a", "B", "z", " ", " ", "  ", "\n", "\r", "\t", "'", "s", "t", "re", "LL", "1", "23", "!", ".", "~", "$",
		"é", "Ж", "中", "😀", "\u00a0", "\u3000", "\u0301", "½", "٣", "\x00", "<", "_"}
	var b strings.Builder
	for range n {
		b.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

// TestScannersMatchRegex checks the hand-written gpt2 and llama3 scanners
// against their regexes run through the generic (std::regex-like) engine:
// llama.cpp's scanners implement exactly those regexes, so the two paths
// must agree, which tests both.
func TestScannersMatchRegex(t *testing.T) {
	for _, tc := range []struct {
		name    string
		expr    string
		scanner splitter
	}{
		{"gpt2", gpt2Regex, splitGPT2},
		{"llama3", llama3Regex, splitLlama3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			re, err := compileSplitter(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			texts := append([]string(nil), pretokSamples...)
			r := rand.New(rand.NewPCG(1, 2))
			for range 3000 {
				texts = append(texts, randomText(r, 1+r.IntN(12)))
			}
			for _, text := range texts {
				a, b := pieces(tc.scanner, text), pieces(re, text)
				if strings.Join(a, "|") != strings.Join(b, "|") {
					t.Errorf("%q:\nscanner %q\n  regex %q", text, a, b)
				}
				if strings.Join(a, "") != text {
					t.Errorf("%q: pieces %q do not cover the text", text, a)
				}
			}
		})
	}
}

func TestPretokSplits(t *testing.T) {
	for _, tc := range []struct {
		pre, text string
		want      []string
	}{
		{"llama3", "Hello, y'all! 12345 \n\n  x", []string{"Hello", ",", " y", "'all", "!", " ", "123", "45", " \n\n", " ", " x"}},
		{"llama3", "I'M   here", []string{"I", "'M", "  ", " here"}},
		{"qwen2", "abc 12345", []string{"abc", " ", "1", "2", "3", "4", "5"}},
		{"gpt-2", "Hello  world's\n", []string{"Hello", " ", " world", "'s", "\n"}},
		{"deepseek-coder", "foo(bar) 42\n", []string{"foo", "(", "bar", ")", " ", "4", "2", "\n"}},
		{"default", "a+b=3.14", []string{"a", "+", "b", "=", "3", ".", "14"}},
	} {
		p, err := newPreTokenizer(tc.pre)
		if err != nil {
			t.Fatal(err)
		}
		cps := []rune(tc.text)
		var got []string
		start := 0
		for _, n := range p.split(cps) {
			got = append(got, string(cps[start:start+n]))
			start += n
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%s %q: got %q, want %q", tc.pre, tc.text, got, tc.want)
		}
	}
}

func TestPreTokenizersCompile(t *testing.T) {
	for _, pre := range []string{"default", "llama-bpe", "dbrx", "gpt-2", "starcoder", "falcon", "qwen2", "qwen35",
		"seed-coder", "deepseek-llm", "deepseek-coder", "deepseek-v3", "bloom", "viking", "tekken", "gpt-4o"} {
		if _, err := newPreTokenizer(pre); err != nil {
			t.Errorf("%s: %v", pre, err)
		}
	}
	if _, err := newPreTokenizer("no-such-pre"); err == nil {
		t.Error("unknown pre-tokenizer: no error")
	}
}
