package chat

import (
	"errors"
	"fmt"
	"strings"

	"github.com/doppler-llm/doppler/engine/tokenizer"
)

// Tokens renders a conversation as the prompt that makes the model write
// the assistant's next turn, and tokenizes it (special tokens in the
// rendered text are parsed; BOS is added unless the template wrote it).
// Roles are system, developer (taken as system), user and assistant.
//
// A model without a chat template gets a plain transcript: the system
// messages first, each followed by a blank line, then "User: …" and
// "Assistant: …" lines, ending with "Assistant:" for the model to continue.
func Tokens(tk *tokenizer.Tokenizer, template string, msgs []Message) ([]int, error) {
	if len(msgs) == 0 {
		return nil, errors.New("no messages")
	}
	norm := make([]Message, len(msgs))
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		case "developer":
			m.Role = "system"
		default:
			return nil, fmt.Errorf("message %d: role %q (want system, user or assistant)", i, m.Role)
		}
		norm[i] = m
	}
	if template == "" {
		return tk.Tokenize(plainTranscript(norm), true, false), nil
	}
	opts := Options{AddGenerationPrompt: true, BOS: tk.TokenPiece(tk.BOS()), EOS: tk.TokenPiece(tk.EOS())}
	text, err := Render(template, norm, opts)
	if err != nil {
		return nil, err
	}
	addSpecial := opts.BOS == "" || !strings.HasPrefix(text, opts.BOS)
	return tk.Tokenize(text, addSpecial, true), nil
}

// plainTranscript is the documented fallback for models without a chat
// template.
func plainTranscript(msgs []Message) string {
	var sb strings.Builder
	for _, m := range msgs {
		switch m.Role {
		case "system":
			sb.WriteString(m.Content)
			sb.WriteString("\n\n")
		case "user":
			sb.WriteString("User: " + m.Content + "\n")
		case "assistant":
			sb.WriteString("Assistant: " + m.Content + "\n")
		}
	}
	sb.WriteString("Assistant:")
	return sb.String()
}
