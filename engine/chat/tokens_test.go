package chat

import (
	"strings"
	"testing"
)

// TestPlainTranscript: the fallback for models without a template.
func TestPlainTranscript(t *testing.T) {
	for _, c := range []struct {
		name string
		msgs []Message
		want string
	}{
		{"one user", []Message{{"user", "Hi"}}, "User: Hi\nAssistant:"},
		{"system first", []Message{{"system", "Be brief."}, {"user", "Hi"}}, "Be brief.\n\nUser: Hi\nAssistant:"},
		{"turns", []Message{{"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}},
			"User: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"},
	} {
		if got := plainTranscript(c.msgs); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// TestTokensRefuses: no messages, or a role Tokens does not know.
func TestTokensRefuses(t *testing.T) {
	for _, c := range []struct {
		msgs []Message
		want string
	}{
		{nil, "no messages"},
		{[]Message{{"user", "Hi"}, {"tool", "42"}}, `message 1: role "tool"`},
	} {
		if _, err := Tokens(nil, "", c.msgs); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.msgs, err, c.want)
		}
	}
}
