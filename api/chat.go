//go:build cgo || js

package api

import (
	"github.com/doppler-llm/doppler/engine/chat"
	"github.com/doppler-llm/doppler/engine/tokenizer"
)

// Message is one turn of a conversation.
type Message = chat.Message

// ChatTokens is [chat.Tokens]: a conversation rendered with the model's
// chat template (a plain "User:/Assistant:" transcript when it has none)
// and tokenized, ending where the assistant's next turn begins.
func ChatTokens(tk *tokenizer.Tokenizer, template string, msgs []Message) ([]int, error) {
	return chat.Tokens(tk, template, msgs)
}
