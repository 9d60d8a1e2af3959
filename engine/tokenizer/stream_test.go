package tokenizer

import (
	"testing"
)

// TestContinuationDecoder: tokens that continue a prompt keep their
// leading space; a new text's first piece loses it, as Decode does.
func TestContinuationDecoder(t *testing.T) {
	tk := loadTokenizer(t, "models/stories260K.gguf")
	prompt := tk.Encode("The little dog", true)
	full := tk.Encode("The little dog was happy", true)
	if len(full) <= len(prompt) {
		t.Fatalf("%v is not longer than %v", full, prompt)
	}
	rest := full[len(prompt):]
	decode := func(d *StreamDecoder) string {
		s := ""
		for _, id := range rest {
			s += d.Push(id)
		}
		return s + d.Flush()
	}
	if got := decode(tk.NewContinuationDecoder()); got != " was happy" {
		t.Errorf("continuation %q, want %q", got, " was happy")
	}
	if got := decode(tk.NewStreamDecoder()); got != "was happy" {
		t.Errorf("new text %q, want %q", got, "was happy")
	}
}
