package tokenizer

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"
)

// llama.cpp runs the pre-tokenizer regexes it has no scanner for through
// std::regex. Where a regex uses Unicode categories it first "collapses" the
// text: ASCII stays, white space becomes \v, and every other code point
// becomes one byte standing for its category (0xD0 other, 0xD1 \p{N}, 0xD2
// \p{L}, 0xD3 \p{P}, 0xD4 \p{M}, 0xD5 \p{S}); \p{X} in the regex becomes
// that byte plus the ASCII members of X. This file does the same with Go's
// regexp, using private-use code points as the stand-ins.
const (
	standInOther  = '\uE000'
	standInNumber = '\uE001'
	standInLetter = '\uE002'
	standInPunct  = '\uE003'
	standInMark   = '\uE004'
	standInSymbol = '\uE005'
)

// categoryClass returns the bracket-expression body that llama.cpp's
// collapsed regex uses for a \p{…} class (k_ucat_cpt + k_ucat_map). Note
// that '~' is in neither \p{P} nor \p{S} there.
func categoryClass(name string) (string, bool) {
	switch name {
	case `\p{N}`:
		return `\x{E001}0-9`, true
	case `\p{L}`, `\p{Lu}`, `\p{Ll}`, `\p{Lt}`, `\p{Lm}`, `\p{Lo}`:
		return `\x{E002}A-Za-z`, true
	case `\p{P}`:
		return `\x{E003}!-#%-*,-/:;?@\[-\]_\{\}`, true
	case `\p{M}`:
		return `\x{E004}`, true
	case `\p{S}`:
		return `\x{E005}\$\+<->\^` + "`" + `\|`, true
	}
	return "", false
}

// regexSplitter applies one translated regex to each piece, keeping the
// matches and the text between them as pieces (unicode_regex_split_stl).
type regexSplitter struct {
	re        *regexp.Regexp
	collapsed bool
	// wsGroup is the submatch index of the \s+(?!\S) alternative, which Go
	// cannot express: it is matched as \s+ and then cut back by one code
	// point when a non-space follows. wsLast: it was the last alternative,
	// so a single space before a non-space matches nothing.
	wsGroup int
	wsLast  bool
}

const (
	wsLookahead         = `|\s+(?!\S)`
	wsLookaheadFallback = `|\s+(?!\S)|\s+`
)

func compileSplitter(expr string) (splitter, error) {
	rs := &regexSplitter{wsGroup: -1}
	for _, k := range []string{`\p{N}`, `\p{L}`, `\p{P}`, `\p{M}`, `\p{S}`, `\p{Lu}`, `\p{Ll}`, `\p{Lt}`, `\p{Lm}`, `\p{Lo}`} {
		if strings.Contains(expr, k) {
			rs.collapsed = true
		}
	}
	e := expr
	if rs.collapsed {
		for _, r := range e {
			if r >= 0x80 {
				return nil, fmt.Errorf("%w regex %q: Unicode categories and non-ASCII characters together", ErrUnsupported, expr)
			}
		}
		// Llama 4 / Tekken spell "a letter that is not a-z" with lookaheads.
		e = strings.ReplaceAll(e, `((?=[\p{L}])([^a-z]))`, `[\x{E002}A-Z]`)
		e = strings.ReplaceAll(e, `((?=[\p{L}])([^A-Z]))`, `[\x{E002}a-z]`)
	}
	switch {
	case strings.HasSuffix(e, wsLookaheadFallback):
		e = strings.TrimSuffix(e, wsLookaheadFallback) + `|(?P<ws>\s+)`
	case strings.HasSuffix(e, wsLookahead):
		e = strings.TrimSuffix(e, wsLookahead) + `|(?P<ws>\s+)`
		rs.wsLast = true
	}
	if strings.Contains(e, "(?=") || strings.Contains(e, "(?!") || strings.Contains(e, "(?<=") || strings.Contains(e, "(?<!") {
		return nil, fmt.Errorf("%w regex %q: lookaround", ErrUnsupported, expr)
	}
	var b strings.Builder
	inside := false
	for i := 0; i < len(e); i++ {
		c := e[i]
		switch {
		case c == '[' && (i == 0 || e[i-1] != '\\'):
			inside = true
		case inside && c == ']' && e[i-1] != '\\':
			inside = false
		case c == '\\' && i+1 < len(e):
			switch e[i+1] {
			case 'p':
				j := strings.IndexByte(e[i:], '}')
				cls, ok := "", false
				if j > 0 {
					cls, ok = categoryClass(e[i : i+j+1])
				}
				if !ok || !rs.collapsed {
					return nil, fmt.Errorf("%w regex %q: class %.10s", ErrUnsupported, expr, e[i:])
				}
				if inside {
					b.WriteString(cls)
				} else {
					b.WriteString("[" + cls + "]")
				}
				i += j
				continue
			case 's':
				// std::regex's \s (C locale): ASCII white space only;
				// other white space was mapped to \v beforehand.
				if inside {
					b.WriteString(`\t\n\v\f\r `)
				} else {
					b.WriteString(`[\t\n\v\f\r ]`)
				}
				i++
				continue
			case 'S', 'd', 'D', 'w', 'W', 'b', 'B':
				return nil, fmt.Errorf("%w regex %q: escape \\%c", ErrUnsupported, expr, e[i+1])
			}
			b.WriteString(e[i : i+2])
			i++
			continue
		}
		b.WriteByte(c)
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", expr, err)
	}
	rs.re = re
	if idx := re.SubexpIndex("ws"); idx >= 0 {
		rs.wsGroup = idx
	}
	return rs.split, nil
}

// standIn is the code point the regex sees for r.
func (rs *regexSplitter) standIn(r rune) rune {
	if r < 0x80 {
		return r
	}
	if isSpace(r) {
		return '\v'
	}
	if !rs.collapsed {
		return r
	}
	switch classOf(r) {
	case classNumber:
		return standInNumber
	case classLetter:
		return standInLetter
	case classPunct:
		return standInPunct
	case classMark:
		return standInMark
	case classSymbol:
		return standInSymbol
	}
	return standInOther
}

func (rs *regexSplitter) split(cps []rune, lens []int) []int {
	out := make([]int, 0, len(lens))
	var buf []byte
	var offs []int // byte offset of each code point of the piece, then the end
	start := 0
	for _, n := range lens {
		piece := cps[start : start+n]
		start += n
		buf, offs = buf[:0], offs[:0]
		for _, r := range piece {
			offs = append(offs, len(buf))
			buf = utf8.AppendRune(buf, rs.standIn(r))
		}
		offs = append(offs, len(buf))
		text := string(buf)
		cp := func(b int) int { return sort.SearchInts(offs, b) }

		done := 0 // code points emitted so far
		for pos := 0; pos < len(text); {
			loc := rs.re.FindStringSubmatchIndex(text[pos:])
			if loc == nil {
				break
			}
			ms, me := pos+loc[0], pos+loc[1]
			if rs.wsGroup >= 0 && loc[2*rs.wsGroup] >= 0 && me < len(text) {
				// \s+(?!\S): the run is followed by a non-space.
				if k := cp(me) - cp(ms); k > 1 {
					me = offs[cp(me)-1]
				} else if rs.wsLast {
					pos = offs[cp(ms)+1] // no match here; search on
					continue
				}
			}
			if me == ms { // an empty match: step over one code point
				if ms >= len(text) {
					break
				}
				pos = offs[cp(ms)+1]
				continue
			}
			a, z := cp(ms), cp(me)
			if a > done {
				out = append(out, a-done)
			}
			out = append(out, z-a)
			done = z
			pos = me
		}
		if done < n {
			out = append(out, n-done)
		}
	}
	return out
}
