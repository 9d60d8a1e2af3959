package tokenizer

import "fmt"

// A splitter refines a split of cps: lens holds the lengths (in code
// points) of consecutive pieces; it returns the lengths of the finer pieces.
// Every regex of a pre-tokenizer is applied in turn to the pieces the
// previous one left, as llama.cpp's unicode_regex_split does.
type splitter func(cps []rune, lens []int) []int

// preTokenizer is the pre-tokenizer that a GGUF tokenizer.ggml.pre names.
type preTokenizer struct {
	splitters    []splitter
	ignoreMerges bool // a piece that is a whole token skips the merges
}

// The two patterns llama.cpp runs with hand-written scanners instead of
// std::regex (unicode_regex_split_custom); this package does the same.
const (
	gpt2Regex   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
	llama3Regex = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Regex  = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// preRegexes returns llama.cpp's regexes for a pre-tokenizer name (the
// llm_tokenizer_bpe constructor, keyed through llama_vocab::impl::load).
func preRegexes(pre string) (exprs []string, ignoreMerges bool, ok bool) {
	switch pre {
	case "", "default":
		return []string{
			`[\p{P}\$\+<=>\^~\|]+`,
			gpt2Regex,
			`\p{N}+`,
			`[0-9][0-9][0-9]`,
		}, false, true
	case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano":
		return []string{llama3Regex}, true, true
	case "dbrx", "smaug-bpe", "glm4", "chatglm-bpe":
		return []string{llama3Regex}, false, true
	case "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
		"modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4", "mpt", "olmo", "jais",
		"trillion", "granite-docling":
		return []string{gpt2Regex}, false, true
	case "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2":
		return []string{`\p{N}`, gpt2Regex}, false, true
	case "falcon":
		return []string{
			`[\p{P}\$\+<=>\^~\|` + "`" + `]+`,
			gpt2Regex,
			`[0-9][0-9][0-9]`,
		}, false, true
	case "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open", "grok-2":
		return []string{qwen2Regex}, false, true
	case "qwen35":
		return []string{`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`}, false, true
	case "seed-coder":
		return []string{`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+`}, false, true
	case "deepseek-llm":
		// Six letters of the class are escaped: they have canonical
		// singleton decompositions and would not survive NFC.
		return []string{
			"[\r\n]",
			`\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌῐ-\x{1FD3}ῖ-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+`,
			`\s?[!-/:-~！-／：-～‘-‟　-。]+`,
			`\s+$`,
			`[一-龥ࠀ-一가-퟿]+`,
			`\p{N}+`,
		}, false, true
	case "deepseek-coder":
		return []string{
			"[\r\n]",
			`\s?\p{L}+`,
			`\s?\p{P}+`,
			`[一-龥ࠀ-一가-퟿]+`,
			`\p{N}`,
		}, false, true
	case "deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4":
		return []string{
			`\p{N}{1,3}`,
			`[一-龥぀-ゟ゠-ヿ]+`,
			`[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_` + "`" + `{|}~][A-Za-z]+|[^` + "\r\n" + `\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[` + "\r\n" + `]*|\s*[` + "\r\n" + `]+|\s+(?!\S)|\s+`,
		}, false, true
	case "poro-chat", "bloom", "gpt3-finnish":
		return []string{` ?[^(\s|.,!?…。，、।۔،)]+`}, false, true
	case "viking":
		return []string{` ?[^(\s|.,!?…。，、।۔،)]+`, `\p{N}`}, false, true
	case "tekken":
		return []string{`[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`}, true, true
	case "gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2":
		return []string{`[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`}, false, true
	}
	return nil, false, false
}

func newPreTokenizer(pre string) (*preTokenizer, error) {
	exprs, ignore, ok := preRegexes(pre)
	if !ok {
		return nil, fmt.Errorf("tokenizer: %w pre-tokenizer %q", ErrUnsupported, pre)
	}
	p := &preTokenizer{ignoreMerges: ignore}
	for _, e := range exprs {
		switch e {
		case gpt2Regex:
			p.splitters = append(p.splitters, splitGPT2)
		case llama3Regex:
			p.splitters = append(p.splitters, splitLlama3)
		default:
			s, err := compileSplitter(e)
			if err != nil {
				return nil, fmt.Errorf("tokenizer: pre-tokenizer %q: %w", pre, err)
			}
			p.splitters = append(p.splitters, s)
		}
	}
	return p, nil
}

// split returns the pieces of text as code points runs, like
// unicode_regex_split before its byte encoding.
func (p *preTokenizer) split(cps []rune) []int {
	lens := []int{len(cps)}
	for _, s := range p.splitters {
		lens = s(cps, lens)
	}
	return lens
}

// cpFlags are the unicode_cpt_flags bits the scanners look at. The zero
// value stands for a position outside the piece.
type cpFlags struct {
	valid, letter, number, space bool
}

const outOfRange = rune(-1)

// scanner is the state the custom scanners share for one piece
// [ini, end) of cps: _get_cpt, _get_flags and _add_token in unicode.cpp.
type scanner struct {
	cps      []rune
	ini, end int
	prev     int
	out      []int
}

func (s *scanner) cpt(p int) rune {
	if p >= s.ini && p < s.end {
		return s.cps[p]
	}
	return outOfRange
}

func (s *scanner) flags(p int) cpFlags {
	if p < s.ini || p >= s.end {
		return cpFlags{}
	}
	r := s.cps[p]
	c := classOf(r)
	return cpFlags{valid: true, letter: c == classLetter, number: c == classNumber, space: isSpace(r)}
}

// add ends a token at end and returns end.
func (s *scanner) add(end int) int {
	if end > s.prev {
		s.out = append(s.out, end-s.prev)
	}
	s.prev = end
	return end
}

// scanPieces runs scan over every piece of lens.
func scanPieces(cps []rune, lens []int, scan func(s *scanner)) []int {
	s := &scanner{cps: cps, out: make([]int, 0, len(lens))}
	start := 0
	for _, n := range lens {
		s.ini, s.end, s.prev = start, start+n, start
		start += n
		scan(s)
	}
	return s.out
}

func lowerASCII(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + 'a' - 'A'
	}
	return r
}

// contraction returns the end of 's 't 'm 'd 're 've 'll at pos, or -1.
func (s *scanner) contraction(pos int, fold func(rune) rune) int {
	if s.cpt(pos) != '\'' || pos+1 >= s.end {
		return -1
	}
	n := fold(s.cpt(pos + 1))
	if n == 's' || n == 't' || n == 'm' || n == 'd' {
		return pos + 2
	}
	if pos+2 < s.end {
		nn := fold(s.cpt(pos + 2))
		if n == 'r' && nn == 'e' || n == 'v' && nn == 'e' || n == 'l' && nn == 'l' {
			return pos + 3
		}
	}
	return -1
}

// whitespace handles the trailing \s+(?!\S)|\s+ alternatives at pos; it
// returns the new position, or -1 when pos is not white space.
func (s *scanner) whitespace(pos int) int {
	n := 0
	for s.flags(pos + n).space {
		n++
	}
	if n > 1 && s.cpt(pos+n) != outOfRange {
		return s.add(pos + n - 1)
	}
	if n > 0 {
		return s.add(pos + n)
	}
	return -1
}

// splitGPT2 is unicode_regex_split_custom_gpt2:
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func splitGPT2(cps []rune, lens []int) []int {
	return scanPieces(cps, lens, func(s *scanner) {
		for pos := s.ini; pos < s.end; {
			if e := s.contraction(pos, func(r rune) rune { return r }); e >= 0 {
				pos = s.add(e)
				continue
			}
			c := s.cpt(pos)
			f2 := s.flags(pos)
			if c == ' ' {
				f2 = s.flags(pos + 1)
			}
			run := func(in func(cpFlags) bool) {
				if c == ' ' {
					pos++
				}
				for in(f2) {
					pos++
					f2 = s.flags(pos)
				}
				s.add(pos)
			}
			other := func(f cpFlags) bool { return !(f.space || f.letter || f.number) && f.valid }
			switch {
			case f2.letter:
				run(func(f cpFlags) bool { return f.letter })
			case f2.number:
				run(func(f cpFlags) bool { return f.number })
			case other(f2):
				run(other)
			default:
				if p := s.whitespace(pos); p >= 0 {
					pos = p
				} else {
					pos++
					s.add(pos)
				}
			}
		}
	})
}

// splitLlama3 is unicode_regex_split_custom_llama3:
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func splitLlama3(cps []rune, lens []int) []int {
	return scanPieces(cps, lens, func(s *scanner) {
		for pos := s.ini; pos < s.end; {
			if e := s.contraction(pos, lowerASCII); e >= 0 {
				pos = s.add(e)
				continue
			}
			c := s.cpt(pos)
			f := s.flags(pos)
			// [^\r\n\p{L}\p{N}]?\p{L}+
			if !(c == '\r' || c == '\n' || f.number) && (f.letter || s.flags(pos+1).letter) {
				pos++
				for s.flags(pos).letter {
					pos++
				}
				s.add(pos)
				continue
			}
			// \p{N}{1,3}
			if f.number {
				ini := pos
				for s.flags(pos).number {
					pos++
					if pos-ini >= 3 {
						s.add(pos)
						ini = pos
					}
				}
				s.add(pos)
				continue
			}
			// ' ?[^\s\p{L}\p{N}]+[\r\n]*' (llama.cpp tests the validity of
			// the current position here, not of the one after the space)
			f2 := f
			if c == ' ' {
				f2 = s.flags(pos + 1)
			}
			if !(f2.space || f2.letter || f2.number) && f.valid {
				if c == ' ' {
					pos++
				}
				for !(f2.space || f2.letter || f2.number) && f2.valid {
					pos++
					f2 = s.flags(pos)
				}
				for c2 := s.cpt(pos); c2 == '\r' || c2 == '\n'; c2 = s.cpt(pos) {
					pos++
				}
				s.add(pos)
				continue
			}
			// \s*[\r\n]+
			n, lastRN := 0, 0
			for s.flags(pos + n).space {
				if c2 := s.cpt(pos + n); c2 == '\r' || c2 == '\n' {
					lastRN = pos + n + 1
				}
				n++
			}
			if lastRN > 0 {
				pos = s.add(lastRN)
				continue
			}
			if p := s.whitespace(pos); p >= 0 {
				pos = p
				continue
			}
			pos++
			s.add(pos)
		}
	})
}
