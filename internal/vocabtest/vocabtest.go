// Package vocabtest reads llama.cpp's tokenizer goldens (a vocabulary
// GGUF's .inp/.out pair in the shared test data) for the tokenizer's
// tests and doppler tokenize's.
package vocabtest

import (
	"os"
	"strings"
	"testing"
)

// sep separates the inputs of a .inp file.
const sep = "\n__ggml_vocab_test__\n"

// Cases reads gguf+".inp" and gguf+".out" the way llama.cpp's
// tests/test-tokenizer-0.cpp does: the inputs are separated by
// "\n__ggml_vocab_test__\n", and the outputs are one line of
// space-separated token ids per input. A missing file or a count mismatch
// fails the test.
func Cases(tb testing.TB, gguf string) (texts, lines []string) {
	tb.Helper()
	inp, err := os.ReadFile(gguf + ".inp")
	if err != nil {
		tb.Fatal(err)
	}
	outp, err := os.ReadFile(gguf + ".out")
	if err != nil {
		tb.Fatal(err)
	}
	for raw := string(inp); raw != ""; {
		i := strings.Index(raw, sep)
		if i < 0 {
			texts = append(texts, raw)
			break
		}
		texts = append(texts, raw[:i])
		raw = raw[i+len(sep):]
	}
	lines = strings.Split(strings.TrimSuffix(string(outp), "\n"), "\n")
	if len(lines) != len(texts) {
		tb.Fatalf("%s: %d inputs but %d outputs", gguf, len(texts), len(lines))
	}
	return texts, lines
}
