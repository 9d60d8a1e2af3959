package tokenizer

import (
	"sort"
	"strings"
	"unicode"
)

//go:generate sh -c "python3 gen_nfd.py > nfd_table.go && gofmt -w nfd_table.go"

// wpmData is the WordPiece state. BERT GGUFs store word-initial pieces
// with a U+2581 prefix (## continuation pieces without), so a word is
// matched as "▁"+word. Normalization is llama.cpp's: lowercase and strip
// accents (its defaults; GGUF's tokenizer.ggml.normalizer.* keys are not
// carried by rdrr.Tokenizer).
type wpmData struct {
	cls, sep int
	maxLen   int // longest token, in bytes
}

func newWPM(tk *Tokenizer) wpmData {
	d := wpmData{cls: tk.bos, sep: -1}
	if id, ok := tk.ids["[CLS]"]; ok && d.cls < 0 {
		d.cls = id
	}
	if id, ok := tk.ids["[SEP]"]; ok {
		d.sep = id
	}
	for _, s := range tk.tokens {
		d.maxLen = max(d.maxLen, len(s))
	}
	return d
}

// nfdFirst is llama.cpp's unicode_cpts_normalize_nfd for one code point:
// the first code point of its NFD decomposition.
func nfdFirst(r rune) rune {
	i := sort.Search(len(nfdRanges), func(i int) bool { return rune(nfdRanges[i]>>42) > r }) - 1
	if i < 0 {
		return r
	}
	e := nfdRanges[i]
	if last := rune(e >> 21 & (1<<21 - 1)); r > last {
		return r
	}
	return rune(e & (1<<21 - 1))
}

func isControl(r rune) bool {
	return classOf(r) == classOther && !unicode.Is(unicode.Z, r)
}

func isChineseChar(r rune) bool {
	return r >= 0x4E00 && r <= 0x9FFF || r >= 0x3400 && r <= 0x4DBF ||
		r >= 0x20000 && r <= 0x2A6DF || r >= 0x2A700 && r <= 0x2B73F ||
		r >= 0x2B740 && r <= 0x2B81F || r >= 0x2B920 && r <= 0x2CEAF ||
		r >= 0xF900 && r <= 0xFAFF || r >= 0x2F800 && r <= 0x2FA1F
}

// wpmWords is llm_tokenizer_wpm_session::preprocess: normalize, split on
// white space, and make punctuation, ASCII symbols and CJK characters
// words of their own.
func wpmWords(text string) []string {
	var words []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			words = append(words, cur.String())
			cur.Reset()
		}
	}
	for _, r := range decodeCodepoints(text) {
		r = nfdFirst(r)
		if isSpace(r) {
			flush()
			continue
		}
		c := classOf(r)
		if r == 0 || r == unicode.ReplacementChar || isControl(r) || c == classMark {
			continue
		}
		s := string(appendCodepoint(nil, unicode.ToLower(r)))
		if c == classPunct || r < 0x7F && c == classSymbol || isChineseChar(r) {
			flush()
			words = append(words, s)
			continue
		}
		cur.WriteString(s)
	}
	flush()
	return words
}

// encodeWPM appends the tokens of text, following
// llm_tokenizer_wpm_session::tokenize: greedy longest match per word, and
// the unknown token for a word that cannot be covered.
func (tk *Tokenizer) encodeWPM(out []int, text string) []int {
	for _, word := range wpmWords(text) {
		w := spaceMark + word
		n := len(w)
		mark := len(out)
		for i := 0; i < n; i++ {
			match := false
			for j := min(n, i+tk.wpm.maxLen+1); j > i; j-- {
				if id, ok := tk.ids[w[i:j]]; ok {
					out = append(out, id)
					match = true
					i = j - 1
					break
				}
			}
			if !match {
				out = out[:mark]
				break
			}
		}
		if len(out) == mark && tk.unk >= 0 {
			out = append(out, tk.unk)
		}
	}
	return out
}
