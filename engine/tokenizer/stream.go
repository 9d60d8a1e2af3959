package tokenizer

import "unicode/utf8"

// StreamDecoder decodes tokens one at a time, as they are generated. It
// returns text only in whole UTF-8 characters, holding back the first bytes
// of a character that byte-fallback tokens are still spelling out. For ids
// whose Decode is valid UTF-8, the concatenation of everything Push and
// Flush return equals Decode of all the ids; bytes that can never form a
// character come out as U+FFFD.
//
// A StreamDecoder is not safe for concurrent use.
type StreamDecoder struct {
	tk      *Tokenizer
	pending []byte
	started bool // a non-empty piece has been seen (the space prefix is gone)
}

// NewStreamDecoder returns a decoder for a new text: with a SentencePiece
// space prefix, its first piece loses one leading space, as in Decode.
func (tk *Tokenizer) NewStreamDecoder() *StreamDecoder {
	return &StreamDecoder{tk: tk}
}

// NewContinuationDecoder returns a decoder for tokens that continue
// earlier text (a prompt shown before them): no leading space is removed,
// so "The little dog" + "▁was" reads "The little dog was".
func (tk *Tokenizer) NewContinuationDecoder() *StreamDecoder {
	return &StreamDecoder{tk: tk, started: true}
}

// Push adds one token and returns the text it completes, possibly "".
func (d *StreamDecoder) Push(id int) string {
	p := d.tk.decodedPiece(id)
	if p == "" {
		return ""
	}
	if !d.started {
		d.started = true
		if d.tk.addSpacePrefix && p[0] == ' ' {
			p = p[1:]
		}
	}
	d.pending = append(d.pending, p...)
	return d.drain(false)
}

// Flush returns whatever is held back, with U+FFFD for an unfinished
// character, and resets the decoder's buffer.
func (d *StreamDecoder) Flush() string {
	return d.drain(true)
}

// drain returns the complete characters of pending and keeps the rest;
// with final, it keeps nothing.
func (d *StreamDecoder) drain(final bool) string {
	b := d.pending
	out := make([]byte, 0, len(b))
	i := 0
	for i < len(b) {
		if !final && !utf8.FullRune(b[i:]) {
			break // a character still being spelled out
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
			i += max(n, 1)
			continue
		}
		out = append(out, b[i:i+n]...)
		i += n
	}
	d.pending = append(d.pending[:0], b[i:]...)
	return string(out)
}
