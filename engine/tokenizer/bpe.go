package tokenizer

import (
	"errors"
	"fmt"
	"strings"
)

type bpeData struct {
	pre *preTokenizer
	// ranks maps "left right" to the merge's rank (its index in the merge
	// list; the first occurrence wins).
	ranks  map[string]int
	encode [256]string   // byte -> its GPT-2 code point as UTF-8
	decode map[rune]byte // the reverse
}

func newBPE(pre string, merges []string) (bpeData, error) {
	var d bpeData
	if len(merges) == 0 {
		return d, errors.New("tokenizer: byte-level BPE vocabulary without merges")
	}
	p, err := newPreTokenizer(pre)
	if err != nil {
		return d, err
	}
	d.pre = p
	d.ranks = make(map[string]int, len(merges))
	for i, m := range merges {
		// llama.cpp splits at the first space after the first byte.
		var key string
		if j := strings.IndexByte(m[min(1, len(m)):], ' '); j >= 0 {
			key = m
		} else {
			key = " "
		}
		if _, dup := d.ranks[key]; !dup {
			d.ranks[key] = i
		}
	}
	enc, dec := gpt2ByteTable()
	for b, r := range enc {
		d.encode[b] = string(r)
	}
	d.decode = dec
	return d, nil
}

// decodeText undoes GPT-2's byte alphabet (llama_decode_text). A code
// point outside it is kept as llama.cpp does: "[UNK_BYTE_0x…" + text + "]".
func (d *bpeData) decodeText(s string) string {
	var b []byte
	for _, r := range decodeCodepoints(s) {
		if c, ok := d.decode[r]; ok {
			b = append(b, c)
			continue
		}
		b = append(b, "[UNK_BYTE_0x"...)
		for _, c := range appendCodepoint(nil, r) {
			b = fmt.Appendf(b, "%02x", c)
		}
		b = append(b, s...)
		b = append(b, ']')
	}
	return string(b)
}

// bpeBefore is llm_bigram_bpe's order: lowest rank first, then leftmost.
func bpeBefore(a, b bigram[int]) bool {
	return a.score < b.score || a.score == b.score && a.left < b.left
}

// encodeBPE appends the tokens of text to out, following
// llm_tokenizer_bpe_session::tokenize.
func (tk *Tokenizer) encodeBPE(out []int, text string) []int {
	d := &tk.bpe
	cps := decodeCodepoints(text)
	var word, raw, key []byte
	m := newMerger(bpeBefore)
	start := 0
	for _, n := range d.pre.split(cps) {
		raw = raw[:0]
		for _, r := range cps[start : start+n] {
			raw = appendCodepoint(raw, r)
		}
		start += n
		word = word[:0]
		for _, c := range raw {
			word = append(word, d.encode[c]...)
		}
		w := string(word)

		if id, ok := tk.ids[w]; ok && d.pre.ignoreMerges {
			out = append(out, id)
			continue
		}
		// A merge's rank scores joining two pieces of w.
		rank := func(start, mid, end int) (int, bool) {
			key = append(append(append(key[:0], w[start:mid]...), ' '), w[mid:end]...)
			r, ok := d.ranks[string(key)]
			return r, ok
		}
		for _, p := range m.merge(w, rank) {
			s := w[p.start : p.start+p.n]
			if id, ok := tk.ids[s]; ok {
				out = append(out, id)
				continue
			}
			// llama.cpp looks each byte of the piece up as a one-byte token.
			for j := 0; j < len(s); j++ {
				if id, ok := tk.ids[s[j:j+1]]; ok {
					out = append(out, id)
				}
			}
		}
	}
	return out
}
