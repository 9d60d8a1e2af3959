//go:build cgo || js

package engine

import (
	"context"
	"strings"

	"github.com/doppler-llm/doppler/engine/tokenizer"
)

// TextOptions controls GenerateText: Generate's options plus what turns
// tokens into text.
type TextOptions struct {
	GenerateOptions
	// Tokenizer decodes the tokens (required).
	Tokenizer *tokenizer.Tokenizer
	// IgnoreEOS keeps generating past end-of-generation tokens.
	IgnoreEOS bool
	// Stops end the text before the first of them; the text never holds a
	// stop string, nor, as OnText sees it, a part of one.
	Stops []string
	// OnText receives the text as it is generated; an error stops the
	// generation with that error.
	OnText func(text string) error
}

// TextResult is GenerateText's outcome.
type TextResult struct {
	*Result
	// Text is the generated text, up to the first stop string.
	Text string
	// Finish is OpenAI's finish reason: "stop" (an end-of-generation
	// token or a stop string) or "length" (MaxTokens, or the context is
	// full); "" when interrupted.
	Finish string
}

// GenerateText runs Generate and decodes its tokens as they come
// (complete UTF-8 only), cutting the text at the first stop string. The
// command line, the chat and the HTTP API all generate text through it.
// Tokens that continue a prompt decode as llama.cpp prints them.
func (s *Session) GenerateText(ctx context.Context, prompt []int, o TextOptions) (*TextResult, error) {
	stream := o.Tokenizer.NewStreamDecoder()
	filter := stopFilter{stops: o.Stops}
	var text strings.Builder
	stopped := false
	emit := func(piece string) error {
		text.WriteString(piece)
		if piece == "" || o.OnText == nil {
			return nil
		}
		return o.OnText(piece)
	}
	g := o.GenerateOptions
	if !o.IgnoreEOS {
		g.StopAtEOG = o.Tokenizer.IsEOG
	}
	next := g.OnToken
	g.OnToken = func(id int) error {
		if next != nil {
			if err := next(id); err != nil {
				return err
			}
		}
		piece, stop := filter.push(stream.Push(id))
		stopped = stop
		return emit(piece)
	}
	g.StopText = func(int) bool { return stopped }
	res, err := s.Generate(ctx, prompt, g)
	out := &TextResult{Result: res}
	if err != nil {
		return out, err
	}
	if !stopped {
		piece, _ := filter.push(stream.Flush())
		if err := emit(piece + filter.flush()); err != nil {
			return out, err
		}
	}
	out.Text = text.String()
	switch res.Reason {
	case "length", "context":
		out.Finish = "length"
	case "eos", "stop":
		out.Finish = "stop"
	}
	return out, nil
}
