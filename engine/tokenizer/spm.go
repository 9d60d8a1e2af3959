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

// spmBefore is llama.cpp's llm_bigram_spm order: highest score first, then
// leftmost.
func spmBefore(a, b bigram[float32]) bool {
	return a.score > b.score || a.score == b.score && a.left < b.left
}

// encodeSPM appends the tokens of text (spaces already escaped) to out,
// following llm_tokenizer_spm_session::tokenize.
func (tk *Tokenizer) encodeSPM(out []int, text string) []int {
	// Two pieces join when together they are a token, scored by its score.
	score := func(start, _, end int) (float32, bool) {
		id, ok := tk.ids[text[start:end]]
		if !ok || tk.scores == nil {
			return 0, ok
		}
		return tk.scores[id], true
	}
	for _, p := range newMerger(spmBefore).merge(text, score) {
		s := text[p.start : p.start+p.n]
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
