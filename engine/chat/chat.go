// Package chat renders a model's chat template: the Jinja template that HF
// tokenizer_config.json and GGUF tokenizer.chat_template carry, which turns
// a conversation into the prompt text the model was trained on.
//
// Templates see what transformers' apply_chat_template gives them:
// messages (a list of {role, content}), add_generation_prompt, bos_token
// and eos_token, with Jinja2's trim_blocks and lstrip_blocks on, and the
// helpers raise_exception and strftime_now, loop controls ({% break %},
// {% continue %}), namespace(), filters such as trim and tojson (HF's
// spacing: ", " and ": ") and Python string and dict methods (.strip(),
// .startswith(), .split(), .get(), .items(), …).
//
// The engine is github.com/ardanlabs/jinja, a pure-Go Jinja written for
// chat templates. Over four conversations it renders all 17 templates of
// the shared test set (Llama 3.x, Qwen2.5, Gemma 2, DeepSeek-R1, Phi-3.5,
// Mistral Nemo, Command R, Hermes, Functionary) byte for byte as Python's
// Jinja2 3.1 does with transformers' settings; Firefunction v2, which
// Jinja2 refuses without its extra functions and datetime variables, is
// the exception (see below). It has no dependencies and no file loader (a
// template from a model file cannot include local files).
//
// Templates that refuse a system message (Gemma's raise_exception('System
// role not supported')) are rendered again with the system text merged
// into the next user message, as llama.cpp (minja's system-role polyfill)
// does.
//
// Known differences from Python's Jinja2:
//   - Undefined variables are lenient in every position: a template that
//     concatenates one (Firefunction v2's functions and datetime) renders
//     it as "" where Jinja2 raises.
//   - The engine's whitespace control reaches across expressions: a
//     block tag's trim_blocks, lstrip_blocks or "-" strips white space
//     beyond an adjacent {{ … }} ("{% for %}{{ x }}\n{% endfor %}" loses
//     its newlines), and it takes the first literal text for the start of a
//     line wherever it is. Render puts an invisible marker between adjacent
//     tags and at the start, which stops both, and deletes it from the
//     output (see separateTags). The marker shows only where a template
//     inspects captured text ({% set x %}{{ y }}{% endset %} makes x hold
//     it: x == "" is false even when y is empty).
//   - The format filter ("%s"|format(x)) is missing, and strftime_now
//     knows only the common directives (%Y %m %d %H %M %S %B %b %A %a %p %I
//     %Z %%).
package chat

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ardanlabs/jinja"
)

// ErrNoTemplate is returned by Render for an empty template: the model
// carries no chat template.
var ErrNoTemplate = errors.New("no chat template")

// Message is one turn of a conversation.
type Message struct {
	Role    string // "system", "user", "assistant", …
	Content string
}

// Options are the template's other inputs.
type Options struct {
	// AddGenerationPrompt ends the prompt with the header of an assistant
	// turn, so that the model writes the reply.
	AddGenerationPrompt bool
	// BOS and EOS are the texts of the tokenizer's BOS and EOS tokens
	// (bos_token, eos_token); "" when the tokenizer has none.
	BOS, EOS string
}

// Render renders template over msgs. When the template fails and msgs hold
// a system message, it is rendered again with system messages merged into
// the following user message (see MergeSystem).
func Render(template string, msgs []Message, opts Options) (string, error) {
	if template == "" {
		return "", ErrNoTemplate
	}
	src, mark := separateTags(template), marker
	if src == template || containsMarker(template, msgs, opts) {
		src, mark = template, ""
	}
	t, err := compile(src)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	out, err := render(t, msgs, opts)
	if err != nil && hasSystem(msgs) {
		var err2 error
		if out, err2 = render(t, MergeSystem(msgs), opts); err2 != nil {
			return "", fmt.Errorf("chat template: %w (and with the system message merged into the user message: %v)", err, err2)
		}
	} else if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	if mark != "" {
		out = strings.ReplaceAll(out, mark, "")
	}
	return out, nil
}

// marker is the text separateTags puts between adjacent tags.
const marker = "\x02"

// separateTags puts marker between every two adjacent tags ({{ }}, {% %},
// {# #}) and before a tag that starts the template, so that every tag has
// text on both sides: the engine's whitespace control then stops where
// Jinja2's does. Tags are found the way the engine's scanner finds them
// (closers inside quoted strings of {{ }} and {% %} do not count). An
// unterminated tag leaves the template unchanged, for the engine to report.
func separateTags(src string) string {
	var b strings.Builder
	last := -1 // end of the previous tag
	for i := 0; i+1 < len(src); {
		c := src[i+1]
		if src[i] != '{' || (c != '{' && c != '%' && c != '#') {
			i++
			continue
		}
		closer := map[byte]string{'{': "}}", '%': "%}", '#': "#}"}[c]
		j := i + 2
		for ; j+1 < len(src); j++ {
			if c != '#' && (src[j] == '\'' || src[j] == '"') {
				q := src[j]
				for j++; j < len(src) && src[j] != q; j++ {
					if src[j] == '\\' {
						j++
					}
				}
				continue
			}
			if src[j] == closer[0] && src[j+1] == closer[1] {
				break
			}
		}
		if j+1 >= len(src) {
			return src
		}
		if i == last || i == 0 {
			b.WriteString(marker)
		}
		b.WriteString(src[max(last, 0):i])
		b.WriteString(src[i : j+2])
		last, i = j+2, j+2
	}
	if last < 0 {
		return src
	}
	b.WriteString(src[last:])
	return b.String()
}

func containsMarker(template string, msgs []Message, opts Options) bool {
	if strings.Contains(template, marker) || strings.Contains(opts.BOS, marker) || strings.Contains(opts.EOS, marker) {
		return true
	}
	for _, m := range msgs {
		if strings.Contains(m.Role, marker) || strings.Contains(m.Content, marker) {
			return true
		}
	}
	return false
}

// MergeSystem folds system messages into the next user message, for
// templates without a system role, the way llama.cpp does: consecutive
// system texts are joined by "\n" and put before the user text with a
// "\n"; system text followed by a non-user message, or by nothing, becomes
// a user message of its own.
func MergeSystem(msgs []Message) []Message {
	out := make([]Message, 0, len(msgs))
	pending := ""
	for _, m := range msgs {
		switch {
		case m.Role == "system":
			if pending != "" {
				pending += "\n"
			}
			pending += m.Content
			continue
		case pending != "" && m.Role == "user":
			if m.Content != "" {
				m.Content = pending + "\n" + m.Content
			} else {
				m.Content = pending
			}
			pending = ""
		case pending != "":
			out = append(out, Message{Role: "user", Content: pending})
			pending = ""
		}
		out = append(out, m)
	}
	if pending != "" {
		out = append(out, Message{Role: "user", Content: pending})
	}
	return out
}

func hasSystem(msgs []Message) bool {
	for _, m := range msgs {
		if m.Role == "system" {
			return true
		}
	}
	return false
}

// compile and render turn a panic inside the engine (the template comes
// from a model file, not from us) into an error.
func compile(src string) (t *jinja.Template, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic while compiling: %v", p)
		}
	}()
	return jinja.Compile(src)
}

func render(t *jinja.Template, msgs []Message, opts Options) (out string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic while rendering: %v", p)
		}
	}()
	ms := make([]any, len(msgs))
	for i, m := range msgs {
		ms[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	return t.Render(map[string]any{
		"messages":              ms,
		"add_generation_prompt": opts.AddGenerationPrompt,
		"bos_token":             opts.BOS,
		"eos_token":             opts.EOS,
	})
}
