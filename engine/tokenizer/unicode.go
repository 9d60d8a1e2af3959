package tokenizer

import "unicode"

// utf8Len is llama.cpp's unicode_len_utf8: the length of a UTF-8 sequence
// judged by its first byte alone (continuation bytes count as 1).
func utf8Len(b byte) int {
	switch {
	case b < 0xC0:
		return 1
	case b < 0xE0:
		return 2
	case b < 0xF0:
		return 3
	default:
		return 4
	}
}

// decodeCodepoints is llama.cpp's unicode_cpts_from_utf8: it decodes like
// UTF-8 but, as llama.cpp does, accepts surrogates and overlong forms, and
// turns each byte it cannot decode into U+FFFD. Code points above U+10FFFF
// (which llama.cpp cannot re-encode) also become U+FFFD.
func decodeCodepoints(s string) []rune {
	out := make([]rune, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		cont := func(k int) bool { return i+k < len(s) && s[i+k]&0xC0 == 0x80 }
		var r rune
		n := 1
		switch {
		case c&0x80 == 0:
			r = rune(c)
		case c&0x40 == 0:
			r = unicode.ReplacementChar
		case c&0x20 == 0:
			if cont(1) {
				r, n = rune(c&0x1F)<<6|rune(s[i+1]&0x3F), 2
			} else {
				r = unicode.ReplacementChar
			}
		case c&0x10 == 0:
			if cont(1) && cont(2) {
				r, n = rune(c&0x0F)<<12|rune(s[i+1]&0x3F)<<6|rune(s[i+2]&0x3F), 3
			} else {
				r = unicode.ReplacementChar
			}
		case c&0x08 == 0:
			if cont(1) && cont(2) && cont(3) {
				r, n = rune(c&0x07)<<18|rune(s[i+1]&0x3F)<<12|rune(s[i+2]&0x3F)<<6|rune(s[i+3]&0x3F), 4
			} else {
				r = unicode.ReplacementChar
			}
		default:
			r = unicode.ReplacementChar
		}
		if r > unicode.MaxRune {
			r = unicode.ReplacementChar
		}
		out = append(out, r)
		i += n
	}
	return out
}

// appendCodepoint appends the UTF-8 encoding of r the way llama.cpp's
// unicode_cpt_to_utf8 does (surrogates included, unlike utf8.AppendRune).
func appendCodepoint(b []byte, r rune) []byte {
	switch {
	case r < 0x80:
		return append(b, byte(r))
	case r < 0x800:
		return append(b, 0xC0|byte(r>>6), 0x80|byte(r)&0x3F)
	case r < 0x10000:
		return append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	default:
		return append(b, 0xF0|byte(r>>18), 0x80|byte(r>>12)&0x3F, 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	}
}

// Code point classes, as llama.cpp's unicode_cpt_flags derive them from the
// Unicode general category (\p{N}, \p{L}, …) and the White_Space property.
type cpClass uint8

const (
	classOther  cpClass = iota // \p{C}, \p{Z} that is not white space
	classNumber                // \p{N}
	classLetter                // \p{L}
	classPunct                 // \p{P}
	classMark                  // \p{M}
	classSymbol                // \p{S}
)

func isSpace(r rune) bool {
	if r < 0x80 {
		return r == ' ' || r >= '\t' && r <= '\r'
	}
	return unicode.Is(unicode.White_Space, r)
}

func classOf(r rune) cpClass {
	if r < 0x80 {
		switch {
		case r >= '0' && r <= '9':
			return classNumber
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			return classLetter
		case r < 0x20 || r == 0x7F || r == ' ':
			return classOther
		case r == '$' || r == '+' || r == '<' || r == '=' || r == '>' || r == '^' || r == '`' || r == '|' || r == '~':
			return classSymbol
		default:
			return classPunct
		}
	}
	switch {
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	case unicode.IsPunct(r):
		return classPunct
	case unicode.IsMark(r):
		return classMark
	case unicode.IsSymbol(r):
		return classSymbol
	}
	return classOther
}

// gpt2Bytes maps each byte to the code point GPT-2's bytes_to_unicode gives
// it: printable Latin-1 bytes map to themselves, the rest to U+0100 upwards.
func gpt2ByteTable() (enc [256]rune, dec map[rune]byte) {
	dec = make(map[rune]byte, 256)
	n := rune(0)
	for b := 0; b < 256; b++ {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE {
			enc[b] = rune(b)
		} else {
			enc[b] = 256 + n
			n++
		}
		dec[enc[b]] = byte(b)
	}
	return enc, dec
}
