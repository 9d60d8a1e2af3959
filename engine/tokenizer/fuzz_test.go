package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEncode checks, for a SentencePiece, two byte-level BPE and a
// WordPiece vocabulary: no panics, ids in range, and for all but WordPiece Decode∘Encode idempotent and
// exact for valid UTF-8, and streaming equal to Decode.
func FuzzEncode(f *testing.F) {
	tks := map[string]*Tokenizer{
		"stories":      loadTokenizer(f, "models/stories260K.gguf"),
		"gpt-2":        loadVocab(f, "gpt-2"),
		"deepseek-llm": loadVocab(f, "deepseek-llm"),
		"bert-bge":     loadVocab(f, "bert-bge"),
	}
	for _, s := range pretokSamples {
		f.Add(s)
	}
	f.Add(streamText)
	f.Add("<s>a</s><|endoftext|>ü\xff\xc3(\xed\xa0\x80")
	f.Fuzz(func(t *testing.T, text string) {
		for name, tk := range tks {
			for _, parse := range []bool{false, true} {
				ids := tk.Tokenize(text, true, parse)
				for _, id := range ids {
					if id < 0 || id >= tk.VocabSize() {
						t.Fatalf("%s: id %d out of range", name, id)
					}
				}
				if tk.model == modelWPM {
					continue // lossy (lowercase, no accents): only no panics
				}
				dec := tk.Decode(ids)
				// Idempotent once the text is valid UTF-8 (see below for
				// what invalid bytes do).
				if again := tk.Decode(tk.Tokenize(dec, true, parse)); utf8.ValidString(dec) && again != dec {
					t.Errorf("%s: not idempotent: %q -> %q -> %q", name, text, dec, again)
				}
				// Exact for valid UTF-8 (SentencePiece: unless the text
				// spells U+2581 itself). Invalid bytes are not kept: BPE
				// makes them U+FFFD, and in SentencePiece a stray lead byte
				// can swallow part of an escaped space, as in llama.cpp.
				exact := utf8.ValidString(text) && !(tk.model == modelSPM && strings.Contains(text, spaceMark))
				if !parse && exact && dec != text {
					t.Errorf("%s: Decode(Tokenize(%q)) = %q", name, text, dec)
				}
				d := tk.NewStreamDecoder()
				var b strings.Builder
				for _, id := range ids {
					s := d.Push(id)
					if !utf8.ValidString(s) {
						t.Fatalf("%s: Push gave invalid UTF-8 %q", name, s)
					}
					b.WriteString(s)
				}
				b.WriteString(d.Flush())
				if utf8.ValidString(dec) && b.String() != dec {
					t.Errorf("%s: streamed %q, Decode %q", name, b.String(), dec)
				}
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. Всё хорошо, 我想在apple工作 🚀 1234567!\n", 40)
	for _, name := range []string{"llama-spm", "gpt-2", "deepseek-coder"} {
		b.Run(name, func(b *testing.B) {
			tk := loadVocab(b, name)
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				tk.Encode(text, true)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	tk := loadVocab(b, "gpt-2")
	ids := tk.Encode(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 100), false)
	b.ReportAllocs()
	for b.Loop() {
		tk.Decode(ids)
	}
}
