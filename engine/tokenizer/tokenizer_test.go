package tokenizer

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/doppler-llm/doppler/rdrr"
)

func TestNewUnsupported(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    *rdrr.Tokenizer
		want string
	}{
		{"model", &rdrr.Tokenizer{Model: "xyz", Tokens: []string{"a"}}, `unsupported tokenizer model "xyz"`},
		{"pre", &rdrr.Tokenizer{Model: "gpt2", Pre: "nope", Tokens: []string{"a"}, Merges: []string{"a a"}}, `unsupported pre-tokenizer "nope"`},
		{"empty", &rdrr.Tokenizer{Model: "llama"}, "empty vocabulary"},
		{"nil", nil, "nil vocabulary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.v)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if tc.name == "model" && !errors.Is(err, ErrUnsupported) {
				t.Errorf("%v is not ErrUnsupported", err)
			}
		})
	}
}

// TestRoundTrip checks Decode(Tokenize(s)) == s on the golden inputs: every
// one of them survives, as it does in llama.cpp (byte fallback and the
// byte-level alphabet lose nothing, the space prefix is taken off again).
func TestRoundTrip(t *testing.T) {
	for _, name := range []string{"llama-spm", "phi-3", "gpt-2", "deepseek-llm", "deepseek-coder"} {
		t.Run(name, func(t *testing.T) {
			tk := loadVocab(t, name)
			for i, c := range readVocabCases(t, name) {
				for _, special := range []bool{false, true} {
					ids := tk.Tokenize(c.text, special, false)
					if got := tk.Decode(ids); got != c.text {
						t.Errorf("case %d (addSpecial %v): Decode = %q, want %q", i, special, got, c.text)
					}
				}
			}
		})
	}
}

func TestSpecialTokens(t *testing.T) {
	tk := loadVocab(t, "llama-spm")
	if tk.BOS() != 1 || tk.EOS() != 2 || tk.VocabSize() != 32000 {
		t.Fatalf("BOS %d EOS %d size %d", tk.BOS(), tk.EOS(), tk.VocabSize())
	}
	if !tk.IsEOG(2) || tk.IsEOG(1) || tk.IsEOG(15043) || tk.IsEOG(-1) {
		t.Error("IsEOG")
	}
	for _, tc := range []struct {
		text       string
		add, parse bool
		want       []int
	}{
		{"Hello", true, true, []int{1, 15043}},
		{"", true, true, []int{1}},
		{"", false, true, nil},
		// A special token in the text is matched, and the text after it
		// gets the space prefix again.
		{"<s>Hello</s>", false, true, []int{1, 15043, 2}},
		{"Hi<s>Hello", false, true, []int{6324, 1, 15043}},
		// parseSpecial=false: <s> is text.
		{"<s>", false, false, []int{529, 29879, 29958}},
	} {
		got := tk.Tokenize(tc.text, tc.add, tc.parse)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Tokenize(%q, %v, %v) = %v, want %v", tc.text, tc.add, tc.parse, got, tc.want)
		}
	}
	if got := tk.Decode([]int{1, 15043, 2}); got != "Hello" {
		t.Errorf("Decode drops control tokens: got %q", got)
	}
	for id, want := range map[int]string{1: "<s>", 13: "\n", 15043: " Hello", 29871: " ", -1: "", 32000: ""} {
		if got := tk.TokenPiece(id); got != want {
			t.Errorf("TokenPiece(%d) = %q, want %q", id, got, want)
		}
	}

	// User-defined tokens are matched even with parseSpecial=false
	// (deepseek-llm has "ü" as one).
	ds := loadVocab(t, "deepseek-llm")
	if got := ds.Tokenize("Führer", false, false); !slices.Equal(got, []int{37, 100014, 71, 6245}) {
		t.Errorf("deepseek-llm Führer: %v", got)
	}
	if got := ds.Encode("<｜begin▁of▁sentence｜>Hi", false); len(got) == 0 || got[0] != 100000 {
		t.Errorf("deepseek-llm Encode with BOS text: %v", got)
	}
	if !ds.IsEOG(100001) {
		t.Error("deepseek-llm: EOS is not EOG")
	}
	bert := loadVocab(t, "bert-bge")
	if got := bert.Encode("Hello, World!", true); !slices.Equal(got, []int{101, 7592, 1010, 2088, 999, 102}) {
		t.Errorf("bert-bge Encode: %v", got)
	}
	if got := bert.Decode([]int{101, 7592, 1010, 2088, 999, 102}); got != " hello , world !" {
		t.Errorf("bert-bge Decode: %q", got)
	}
	g2 := loadVocab(t, "gpt-2")
	if got := g2.Encode("a<|endoftext|>", false); !slices.Equal(got, []int{64, 50256}) {
		t.Errorf("gpt-2 Encode: %v", got)
	}
	if got := g2.TokenPiece(50256); got != "<|endoftext|>" {
		t.Errorf("gpt-2 TokenPiece(eos) = %q", got)
	}
}

// streamText needs byte fallback in the 512-token stories vocabulary:
// multi-byte letters, CJK and emoji (4-byte sequences, ZWJ sequences).
const streamText = "Once upon a time, Zoë saw a 🐉 — 我想 😶‍🌫️ naïve café ✅!"

func TestStreamDecoder(t *testing.T) {
	tk := loadTokenizer(t, "models/stories260K.gguf")
	ids := tk.Encode(streamText, true)
	fallback := 0
	for _, id := range ids {
		if tk.attrs[id]&attrByte != 0 {
			fallback++
		}
	}
	if fallback < 20 {
		t.Fatalf("only %d byte tokens: the test does not exercise byte fallback", fallback)
	}
	if got := tk.Decode(ids); got != streamText {
		t.Fatalf("Decode = %q, want %q", got, streamText)
	}
	d := tk.NewStreamDecoder()
	var b strings.Builder
	for i, id := range ids {
		s := d.Push(id)
		if !utf8.ValidString(s) {
			t.Fatalf("step %d: Push returned invalid UTF-8 %q", i, s)
		}
		b.WriteString(s)
		if !strings.HasPrefix(streamText, b.String()) {
			t.Fatalf("step %d: streamed %q is not a prefix of the text", i, b.String())
		}
	}
	b.WriteString(d.Flush())
	if b.String() != streamText {
		t.Errorf("streamed %q, want %q", b.String(), streamText)
	}

	// A dangling lead byte comes out as U+FFFD on Flush.
	d = tk.NewStreamDecoder()
	lead := tk.spm.byteTok[0xF0]
	if s := d.Push(lead); s != "" {
		t.Errorf("Push(<0xF0>) = %q, want nothing yet", s)
	}
	if s := d.Flush(); s != "\uFFFD" {
		t.Errorf("Flush = %q, want U+FFFD", s)
	}
}

// TestStreamDecoderBPE: GPT-2 splits characters across tokens too.
func TestStreamDecoderBPE(t *testing.T) {
	tk := loadVocab(t, "gpt-2")
	ids := tk.Encode(streamText, false)
	d := tk.NewStreamDecoder()
	var b strings.Builder
	for _, id := range ids {
		s := d.Push(id)
		if !utf8.ValidString(s) {
			t.Fatalf("Push returned invalid UTF-8 %q", s)
		}
		b.WriteString(s)
	}
	b.WriteString(d.Flush())
	if b.String() != tk.Decode(ids) || b.String() != streamText {
		t.Errorf("streamed %q, Decode %q", b.String(), tk.Decode(ids))
	}
}

// TestTinyVocab builds vocabularies by hand: an empty token (llama.cpp
// renames it), a user-defined token, and SentencePiece's score order.
func TestTinyVocab(t *testing.T) {
	v := &rdrr.Tokenizer{
		Model:  "llama",
		Tokens: []string{"<unk>", "<s>", "</s>", "", "▁", "a", "b", "ab", "▁a", "<0x63>", "<x>"},
		Scores: []float32{0, 0, 0, 0, -1, -2, -2, -1.5, -0.5, 0, 0},
		Types:  []int32{2, 3, 3, 4, 1, 1, 1, 1, 1, 6, 4},
		BOS:    1, EOS: 2, UNK: 0, PAD: -1,
		AddBOS: true, AddSpacePrefix: true,
	}
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	// "▁ab": ▁a (-0.5) beats ab (-1.5); 'c' falls back to <0x63>; 'd' has
	// no byte token and becomes <unk>; <x> is user-defined.
	if got, want := tk.Tokenize("abc<x>d", true, false), []int{1, 8, 6, 9, 10, 4, 0}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := tk.Decode([]int{1, 8, 6, 9, 10}); got != "abc<x>" {
		t.Errorf("Decode = %q", got)
	}
	if got := tk.TokenPiece(3); got != "[EMPTY_3]" {
		t.Errorf("empty token piece %q", got)
	}
}
