package tokenizer

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/vocabtest"
	"github.com/doppler-llm/doppler/rdrr/convert"
	"github.com/doppler-llm/doppler/rdrr/gguf"
)

// loadTokenizer reads the tokenizer of a shared GGUF file (rel is its
// path in the shared test data). A missing file skips the test, or fails it
// under CI (testenv.Path); one that does not parse always fails it.
func loadTokenizer(tb testing.TB, rel string) *Tokenizer {
	tb.Helper()
	f, err := gguf.Open(testenv.Path(tb, rel))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	v, err := convert.TokenizerFromGGUF(f)
	if err != nil {
		tb.Fatal(err)
	}
	tk, err := New(v)
	if err != nil {
		tb.Fatal(err)
	}
	return tk
}

func loadVocab(tb testing.TB, name string) *Tokenizer {
	tb.Helper()
	return loadTokenizer(tb, "vocab/ggml-vocab-"+name+".gguf")
}

type vocabCase struct {
	text string
	ids  []int
}

// readVocabCases reads a vocabulary's llama.cpp goldens (vocabtest.Cases)
// and parses the ids.
func readVocabCases(tb testing.TB, name string) []vocabCase {
	tb.Helper()
	texts, lines := vocabtest.Cases(tb, strings.TrimSuffix(testenv.Path(tb, "vocab/ggml-vocab-"+name+".gguf.inp"), ".inp"))
	cases := make([]vocabCase, len(texts))
	for i, line := range lines {
		cases[i].text = texts[i]
		for _, f := range strings.Fields(line) {
			id, err := strconv.Atoi(f)
			if err != nil {
				tb.Fatalf("%s line %d: %v", name, i+1, err)
			}
			cases[i].ids = append(cases[i].ids, id)
		}
	}
	return cases
}

func TestVocabGoldens(t *testing.T) {
	for _, name := range []string{"llama-spm", "phi-3", "gpt-2", "deepseek-llm", "deepseek-coder", "bert-bge"} {
		t.Run(name, func(t *testing.T) {
			tk := loadVocab(t, name)
			for i, c := range readVocabCases(t, name) {
				got := tk.Tokenize(c.text, false, false)
				if !slices.Equal(got, c.ids) {
					t.Errorf("case %d %q:\n got %v\nwant %v", i, c.text, got, c.ids)
				}
			}
		})
	}
}

// TestVocabLoad checks the vocabularies that come without goldens load.
func TestVocabLoad(t *testing.T) {
	for _, name := range []string{"gpt-neox", "baichuan"} {
		t.Run(name, func(t *testing.T) {
			tk := loadVocab(t, name)
			text := "Hello world, 3.14 — ok?\n"
			if got := tk.Decode(tk.Tokenize(text, false, false)); got != text {
				t.Errorf("round trip: got %q, want %q", got, text)
			}
		})
	}
}
