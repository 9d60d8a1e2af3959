package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/doppler-llm/doppler/rdrr"
)

// ErrUnsupported is returned (wrapped) by New for a tokenizer model or
// pre-tokenizer this package does not implement.
var ErrUnsupported = errors.New("unsupported")

// Token attributes, as llama.cpp's llama_token_attr derives them from the
// GGUF token types and a few name-based fix-ups.
type attr uint8

const (
	attrNormal attr = 1 << iota
	attrUnknown
	attrControl
	attrUserDefined
	attrUnused
	attrByte
)

type model uint8

const (
	modelSPM model = iota
	modelBPE
	modelWPM
)

// Tokenizer encodes and decodes text for one vocabulary. Build it with New.
type Tokenizer struct {
	model  model
	tokens []string
	scores []float32
	attrs  []attr
	ids    map[string]int

	bos, eos, unk int
	eog           map[int]bool

	addBOS, addEOS, addSpacePrefix bool

	// special lists control, unknown and user-defined tokens, longest text
	// first: the order in which they are cut out of the text.
	special []int
	// pieces holds each token's decoded bytes (empty for control tokens).
	pieces []string

	spm spmData
	bpe bpeData
	wpm wpmData
}

// New builds a tokenizer for t. It fails on a tokenizer model or
// pre-tokenizer it does not implement.
func New(t *rdrr.Tokenizer) (*Tokenizer, error) {
	if t == nil {
		return nil, errors.New("tokenizer: nil vocabulary")
	}
	n := len(t.Tokens)
	if n == 0 {
		return nil, errors.New("tokenizer: empty vocabulary")
	}
	if t.Scores != nil && len(t.Scores) != n || t.Types != nil && len(t.Types) != n {
		return nil, fmt.Errorf("tokenizer: %d tokens but %d scores and %d types", n, len(t.Scores), len(t.Types))
	}
	tk := &Tokenizer{
		tokens:         slices.Clone(t.Tokens),
		scores:         slices.Clone(t.Scores),
		attrs:          make([]attr, n),
		ids:            make(map[string]int, n),
		bos:            checkID(t.BOS, n),
		eos:            checkID(t.EOS, n),
		unk:            checkID(t.UNK, n),
		eog:            map[int]bool{},
		addBOS:         t.AddBOS,
		addEOS:         t.AddEOS,
		addSpacePrefix: t.AddSpacePrefix,
	}
	switch t.Model {
	case "llama":
		tk.model = modelSPM
	case "gpt2":
		tk.model = modelBPE
		tk.addSpacePrefix = false // llama.cpp: BPE never adds a space prefix
	case "bert":
		tk.model = modelWPM
		tk.addSpacePrefix = false
	default:
		return nil, fmt.Errorf("tokenizer: %w tokenizer model %q", ErrUnsupported, t.Model)
	}
	for i, s := range tk.tokens {
		if s == "" {
			s = fmt.Sprintf("[EMPTY_%d]", i) // as llama.cpp does
			tk.tokens[i] = s
		}
		if _, dup := tk.ids[s]; dup {
			return nil, fmt.Errorf("tokenizer: duplicate token %q", s)
		}
		tk.ids[s] = i
		tk.attrs[i] = attrNormal
		if t.Types != nil {
			tk.attrs[i] = attrOfType(t.Types[i])
		}
	}
	tk.fixAttrs(t)

	var err error
	switch tk.model {
	case modelSPM:
		tk.spm = newSPM(tk)
	case modelBPE:
		tk.bpe, err = newBPE(t.Pre, t.Merges)
	case modelWPM:
		tk.wpm = newWPM(tk)
		tk.bos = tk.wpm.cls
	}
	if err != nil {
		return nil, err
	}

	for id, a := range tk.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			tk.special = append(tk.special, id)
		}
	}
	sort.SliceStable(tk.special, func(a, b int) bool {
		return len(tk.tokens[tk.special[a]]) > len(tk.tokens[tk.special[b]])
	})
	tk.pieces = make([]string, n)
	for id := range tk.pieces {
		tk.pieces[id] = tk.piece(id, false)
	}
	return tk, nil
}

func checkID(id, n int) int {
	if id < 0 || id >= n {
		return -1
	}
	return id
}

func attrOfType(t int32) attr {
	switch t {
	case rdrr.TokenNormal:
		return attrNormal
	case rdrr.TokenUnknown:
		return attrUnknown
	case rdrr.TokenControl:
		return attrControl
	case rdrr.TokenUserDefined:
		return attrUserDefined
	case rdrr.TokenUnused:
		return attrUnused
	case rdrr.TokenByte:
		return attrByte
	}
	return 0 // undefined: decodes to nothing, like llama.cpp
}

// fixAttrs applies llama.cpp's name-based attribute fix-ups (llama_vocab
// load) and builds the end-of-generation set.
func (tk *Tokenizer) fixAttrs(t *rdrr.Tokenizer) {
	// Texts that llama.cpp treats as end-of-generation (and therefore
	// control) tokens whatever their GGUF type, and texts it marks control
	// because they look like fill-in-the-middle markers.
	eogTexts := []string{
		"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
		"<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>",
		"<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
		"<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
		"<｜end▁of▁sentence｜>", "[e~[",
	}
	controlTexts := []string{
		"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>",
		"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>",
		"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>",
		"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
		"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
		"<|file_sep|>",
	}
	for _, s := range controlTexts {
		if id, ok := tk.ids[s]; ok {
			tk.attrs[id] |= attrControl
		}
	}
	for _, s := range eogTexts {
		if id, ok := tk.ids[s]; ok {
			tk.attrs[id] |= attrControl
			tk.eog[id] = true
		}
	}
	// gpt-oss (harmony): these are rendered, not hidden.
	for _, s := range []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"} {
		if id, ok := tk.ids[s]; ok {
			tk.attrs[id] = attrUserDefined
		}
	}
	for _, id := range append([]int{tk.eos}, t.EOT...) {
		if id >= 0 && id < len(tk.tokens) {
			tk.eog[id] = true
		}
	}
	// harmony and solar-open: <|end|> ends a message, not the generation.
	has := func(s string) bool { id, ok := tk.ids[s]; return ok && tk.eog[id] }
	if has("<|end|>") && (has("<|return|>") && has("<|call|>") || has("<|calls|>") && has("<|flush|>")) {
		id := tk.ids["<|end|>"]
		delete(tk.eog, id)
		tk.attrs[id] = attrUserDefined
	}
	// gemma4: </s> is an ordinary token there.
	if has("<|tool_response>") && has("</s>") {
		id := tk.ids["</s>"]
		delete(tk.eog, id)
		tk.attrs[id] = attrNormal
	}
}

// BOS returns the beginning-of-sequence token, or -1.
func (tk *Tokenizer) BOS() int { return tk.bos }

// EOS returns the end-of-sequence token, or -1.
func (tk *Tokenizer) EOS() int { return tk.eos }

// IsEOG reports whether id ends generation: EOS, an EOT/EOM token, or a
// token whose text llama.cpp treats as end of generation (<|eot_id|>,
// <|im_end|>, <end_of_turn>, …).
func (tk *Tokenizer) IsEOG(id int) bool { return tk.eog[id] }

// VocabSize returns the number of tokens.
func (tk *Tokenizer) VocabSize() int { return len(tk.tokens) }

// Encode tokenizes text, matching every special token written in it
// (llama.cpp's parse_special=true). With addSpecial it adds BOS and EOS as
// the vocabulary asks (AddBOS, AddEOS).
func (tk *Tokenizer) Encode(text string, addSpecial bool) []int {
	return tk.Tokenize(text, addSpecial, true)
}

// Tokenize is llama_tokenize: with parseSpecial=false only user-defined
// tokens written in the text are matched as tokens; control tokens such as
// <s> are tokenized as plain text.
func (tk *Tokenizer) Tokenize(text string, addSpecial, parseSpecial bool) []int {
	var out []int
	frags := tk.partition(text, parseSpecial)
	if addSpecial && (tk.addBOS || tk.model == modelWPM) && tk.bos >= 0 {
		out = append(out, tk.bos) // WordPiece: always [CLS]
	}
	prevSpecial := true
	for _, f := range frags {
		if f.token >= 0 {
			out = append(out, f.token)
			prevSpecial = true
			continue
		}
		switch tk.model {
		case modelSPM:
			s := f.text
			if tk.addSpacePrefix && prevSpecial {
				s = " " + s
			}
			out = tk.encodeSPM(out, strings.ReplaceAll(s, " ", spaceMark))
		case modelBPE:
			out = tk.encodeBPE(out, f.text)
		case modelWPM:
			out = tk.encodeWPM(out, f.text)
		}
		prevSpecial = false
	}
	if addSpecial && tk.model == modelWPM {
		if tk.wpm.sep >= 0 {
			out = append(out, tk.wpm.sep)
		}
	} else if addSpecial && tk.addEOS && tk.eos >= 0 {
		out = append(out, tk.eos)
	}
	return out
}

// fragment is a run of raw text (token < 0) or one special token.
type fragment struct {
	text  string
	token int
}

// partition cuts special tokens out of text, longest token text first, as
// llama.cpp's tokenizer_st_partition does.
func (tk *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	if text == "" {
		return nil
	}
	frags := []fragment{{text: text, token: -1}}
	for _, id := range tk.special {
		a := tk.attrs[id]
		if !parseSpecial && a&(attrControl|attrUnknown) != 0 {
			continue
		}
		tok := tk.tokens[id]
		var next []fragment
		changed := false
		for _, f := range frags {
			if f.token >= 0 || !strings.Contains(f.text, tok) {
				next = append(next, f)
				continue
			}
			changed = true
			s := f.text
			for {
				i := strings.Index(s, tok)
				if i < 0 {
					if s != "" {
						next = append(next, fragment{text: s, token: -1})
					}
					break
				}
				if i > 0 {
					next = append(next, fragment{text: s[:i], token: -1})
				}
				next = append(next, fragment{token: id})
				s = s[i+len(tok):]
			}
		}
		if changed {
			frags = next
		}
	}
	return frags
}

// piece is llama.cpp's token_to_piece without lstrip; special renders
// control and unknown tokens as their text.
func (tk *Tokenizer) piece(id int, special bool) string {
	a := tk.attrs[id]
	text := tk.tokens[id]
	switch {
	case a&(attrControl|attrUnknown) != 0:
		if special {
			return text
		}
		return ""
	case a&attrUserDefined != 0:
		return text
	case a&attrNormal != 0:
		switch tk.model {
		case modelSPM, modelWPM:
			return strings.ReplaceAll(text, spaceMark, " ")
		case modelBPE:
			return tk.bpe.decodeText(text)
		default:
			return text
		}
	case a&attrByte != 0:
		if b, ok := parseByteToken(text); ok {
			return string([]byte{b})
		}
		return ""
	}
	return ""
}

// TokenPiece returns the bytes token id stands for: byte tokens give their
// byte, U+2581 and GPT-2's byte alphabet are undone, and control tokens
// give their text (<s>, <|eot_id|>). An id outside the vocabulary gives "".
func (tk *Tokenizer) TokenPiece(id int) string {
	if id < 0 || id >= len(tk.tokens) {
		return ""
	}
	return tk.piece(id, true)
}

// Decode turns ids back into text: control and unknown tokens are dropped,
// byte tokens give their bytes, and with a SentencePiece space prefix the
// first piece loses one leading space. The result is the raw bytes, which
// may be invalid UTF-8 if ids split a character.
func (tk *Tokenizer) Decode(ids []int) string {
	var b strings.Builder
	strip := tk.addSpacePrefix
	for _, id := range ids {
		p := tk.decodedPiece(id)
		if p == "" {
			continue
		}
		if strip && p[0] == ' ' {
			p = p[1:]
		}
		strip = false
		b.WriteString(p)
	}
	return b.String()
}

func (tk *Tokenizer) decodedPiece(id int) string {
	if id < 0 || id >= len(tk.pieces) {
		return ""
	}
	return tk.pieces[id]
}

func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || !strings.HasPrefix(s, "<0x") || s[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range []byte(s[3:5]) {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}
