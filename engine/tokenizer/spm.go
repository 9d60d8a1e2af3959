package tokenizer

// spaceMark is SentencePiece's escaped space, U+2581 "▁".
const spaceMark = "\u2581"

type spmData struct {
	// byteTok maps a byte to its fallback token (<0xXX>, else the byte
	// itself as a one-byte token, else -1).
	byteTok [256]int
}

func newSPM(tk *Tokenizer) spmData {
	var d spmData
	const hex = "0123456789ABCDEF"
	for b := range 256 {
		d.byteTok[b] = -1
		if id, ok := tk.ids["<0x"+string(hex[b>>4])+string(hex[b&15])+">"]; ok {
			d.byteTok[b] = id
		} else if id, ok := tk.ids[string([]byte{byte(b)})]; ok {
			d.byteTok[b] = id
		}
	}
	return d
}

// symbol is one piece of the text being merged, linked to its neighbours.
type symbol struct {
	prev, next int // -1 at either end
	start, n   int // bytes of the text; n == 0 once merged away
}

// spmBigram is a candidate merge of symbols left and right.
type spmBigram struct {
	left, right int
	score       float32
	size        int
}

// spmBefore is llama.cpp's llm_bigram_spm order: highest score first, then
// leftmost.
func spmBefore(a, b spmBigram) bool {
	return a.score > b.score || a.score == b.score && a.left < b.left
}

// encodeSPM appends the tokens of text (spaces already escaped) to out,
// following llm_tokenizer_spm_session::tokenize.
func (tk *Tokenizer) encodeSPM(out []int, text string) []int {
	if text == "" {
		return out
	}
	syms := make([]symbol, 0, len(text))
	for off := 0; off < len(text); {
		n := min(utf8Len(text[off]), len(text)-off)
		next := len(syms) + 1
		if off+n == len(text) {
			next = -1
		}
		syms = append(syms, symbol{prev: len(syms) - 1, next: next, start: off, n: n})
		off += n
	}
	q := queue[spmBigram]{before: spmBefore}
	tryAdd := func(left, right int) {
		if left < 0 || right < 0 {
			return
		}
		s := text[syms[left].start : syms[left].start+syms[left].n+syms[right].n]
		id, ok := tk.ids[s]
		if !ok {
			return
		}
		var score float32
		if tk.scores != nil {
			score = tk.scores[id]
		}
		q.push(spmBigram{left: left, right: right, score: score, size: len(s)})
	}
	for i := 1; i < len(syms); i++ {
		tryAdd(i-1, i)
	}
	for q.len() > 0 {
		b := q.pop()
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		tryAdd(l.prev, b.left)
		tryAdd(b.left, l.next)
	}
	for i := 0; i != -1; i = syms[i].next {
		s := text[syms[i].start : syms[i].start+syms[i].n]
		if id, ok := tk.ids[s]; ok {
			out = append(out, id)
			continue
		}
		// Not a token: a symbol that never merged; fall back to its bytes.
		for j := 0; j < len(s); j++ {
			if id := tk.spm.byteTok[s[j]]; id >= 0 {
				out = append(out, id)
			} else if tk.unk >= 0 {
				out = append(out, tk.unk)
			}
		}
	}
	return out
}
