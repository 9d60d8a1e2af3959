package chat

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
)

// conversation is the 3-message conversation every template renders.
var conversation = []Message{
	{Role: "system", Content: "You are a helpful assistant."},
	{Role: "user", Content: "Hello!"},
	{Role: "assistant", Content: "Hi! How can I help?"},
}

func readTemplate(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(testenv.Path(t, "vocab/chat-templates/"+name+".jinja"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRenderAll renders every shared template; Gemma's refuses the system
// role and is rendered with it merged into the user message.
func TestRenderAll(t *testing.T) {
	files := testenv.Glob(t, "vocab/chat-templates/*.jinja")
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".jinja"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Render(string(b), conversation, Options{AddGenerationPrompt: true, BOS: "<s>", EOS: "</s>"})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range conversation[1:] {
				if !strings.Contains(out, m.Content) {
					t.Errorf("output lacks %s message %q:\n%s", m.Role, m.Content, out)
				}
			}
		})
	}
}

// TestRenderExact checks well-known templates against the prompt their
// template text spells out (also what Python's Jinja2 renders with
// transformers' settings).
func TestRenderExact(t *testing.T) {
	const llama3 = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
		"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
		"You are a helpful assistant.<|eot_id|>" +
		"<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>" +
		"<|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|>" +
		"<|start_header_id|>assistant<|end_header_id|>\n\n"
	for _, c := range []struct {
		template string
		msgs     []Message
		opts     Options
		want     string
	}{
		{"meta-llama-Llama-3.3-70B-Instruct", conversation, Options{AddGenerationPrompt: true, BOS: "<|begin_of_text|>", EOS: "<|eot_id|>"}, llama3},
		{"meta-llama-Llama-3.1-8B-Instruct", conversation, Options{AddGenerationPrompt: true, BOS: "<|begin_of_text|>", EOS: "<|eot_id|>"}, llama3},
		{"meta-llama-Llama-3.3-70B-Instruct", []Message{{Role: "user", Content: "  Hello!\n"}}, Options{BOS: "<|begin_of_text|>"},
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
				"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"},
		{"Qwen-Qwen2.5-7B-Instruct", conversation, Options{AddGenerationPrompt: true, EOS: "<|im_end|>"},
			"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
				"<|im_start|>user\nHello!<|im_end|>\n" +
				"<|im_start|>assistant\nHi! How can I help?<|im_end|>\n" +
				"<|im_start|>assistant\n"},
		{"Qwen-Qwen2.5-7B-Instruct", []Message{{Role: "user", Content: "Hello!"}}, Options{AddGenerationPrompt: true},
			"<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
				"<|im_start|>user\nHello!<|im_end|>\n" +
				"<|im_start|>assistant\n"},
		// Gemma raises on the system role: it is merged into the user turn.
		{"google-gemma-2-2b-it", conversation, Options{AddGenerationPrompt: true, BOS: "<bos>", EOS: "<eos>"},
			"<bos><start_of_turn>user\nYou are a helpful assistant.\nHello!<end_of_turn>\n" +
				"<start_of_turn>model\nHi! How can I help?<end_of_turn>\n" +
				"<start_of_turn>model\n"},
		{"google-gemma-2-2b-it", []Message{{Role: "user", Content: " Hello! "}}, Options{AddGenerationPrompt: false, BOS: "<bos>"},
			"<bos><start_of_turn>user\nHello!<end_of_turn>\n"},
		{"microsoft-Phi-3.5-mini-instruct", conversation, Options{AddGenerationPrompt: false, EOS: "<|endoftext|>"},
			"<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello!<|end|>\n" +
				"<|assistant|>\nHi! How can I help?<|end|>\n<|endoftext|>"},
		{"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", conversation, Options{AddGenerationPrompt: true, BOS: "<｜begin▁of▁sentence｜>"},
			"<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Hello!" +
				"<｜Assistant｜>Hi! How can I help?<｜end▁of▁sentence｜><｜Assistant｜><think>\n"},
	} {
		t.Run(c.template, func(t *testing.T) {
			got, err := Render(readTemplate(t, c.template), c.msgs, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got\n%q\nwant\n%q", got, c.want)
			}
		})
	}
}

// TestStrftimeNow: Llama 3.2 dates its system header with strftime_now.
func TestStrftimeNow(t *testing.T) {
	before := time.Now().Format("02 Jan 2006")
	got, err := Render(readTemplate(t, "meta-llama-Llama-3.2-3B-Instruct"), conversation, Options{AddGenerationPrompt: true})
	after := time.Now().Format("02 Jan 2006")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "Today Date: "+before+"\n") && !strings.Contains(got, "Today Date: "+after+"\n") {
		t.Errorf("want today's date (%s) in\n%s", after, got)
	}
}

func TestMergeSystem(t *testing.T) {
	sys := func(s string) Message { return Message{Role: "system", Content: s} }
	user := func(s string) Message { return Message{Role: "user", Content: s} }
	asst := func(s string) Message { return Message{Role: "assistant", Content: s} }
	for _, c := range []struct {
		name     string
		in, want []Message
	}{
		{"none", []Message{user("u"), asst("a")}, []Message{user("u"), asst("a")}},
		{"first user", []Message{sys("s"), user("u"), asst("a"), user("v")}, []Message{user("s\nu"), asst("a"), user("v")}},
		{"two systems", []Message{sys("s"), sys("t"), user("u")}, []Message{user("s\nt\nu")}},
		{"empty user", []Message{sys("s"), user("")}, []Message{user("s")}},
		{"before assistant", []Message{sys("s"), asst("a")}, []Message{user("s"), asst("a")}},
		{"alone", []Message{sys("s")}, []Message{user("s")}},
		{"later", []Message{user("u"), asst("a"), sys("s"), user("v")}, []Message{user("u"), asst("a"), user("s\nv")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := append([]Message(nil), c.in...)
			if got := MergeSystem(c.in); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
			if !reflect.DeepEqual(in, c.in) {
				t.Errorf("input changed: %q", c.in)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	if _, err := Render("", conversation, Options{}); !errors.Is(err, ErrNoTemplate) {
		t.Errorf("empty template: %v, want ErrNoTemplate", err)
	}
	if _, err := Render("{% if %}", conversation, Options{}); err == nil {
		t.Error("bad syntax: no error")
	}
	_, err := Render(`{{ raise_exception("nope") }}`, []Message{{Role: "user", Content: "u"}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("raise_exception: %v, want an error saying nope", err)
	}
	// Gemma still refuses after the merge when roles do not alternate.
	_, err = Render(readTemplate(t, "google-gemma-2-2b-it"), []Message{{Role: "system", Content: "s"}, {Role: "user", Content: "u"}, {Role: "user", Content: "v"}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "System role not supported") || !strings.Contains(err.Error(), "must alternate") {
		t.Errorf("gemma: %v, want both the system-role and the alternation errors", err)
	}
}

// TestWhitespace: trim_blocks, lstrip_blocks and "-" markers stop where
// Jinja2's do (expected outputs from Jinja2 3.1 with transformers'
// settings), including where the engine alone goes wrong.
func TestWhitespace(t *testing.T) {
	msgs := []Message{{Role: "system", Content: "Sys"}, {Role: "user", Content: "U1"}}
	for _, c := range []struct{ src, want string }{
		{"{% for m in messages %}{{ m.content }}\n{% endfor %}", "Sys\nU1\n"},
		{"a \n{{ 'x' }}{%- if true %}y{% endif %}", "a \nxy"},
		{"\n  {{ 'x' }}{% if true %}y{% endif %}", "\n  xy"},
		{"{% if true -%}{{ 'x' }}  \nz{% endif %}", "x  \nz"},
		{"{{ bos_token }}{%- if true %}\nA{% endif %}", "<s>A"},
		{"{% for i in [1,2] %}{{ i }} {% endfor %}", "1 2 "},
		{"   {% if true %}x{% endif %}", "x"},
		{"\n\n{%- if true %}x{% endif %}", "x"},
		{"{{- '\\n' }}a", "\na"},
		{"  \n {{- 'a' }}", "a"},
		{"{{ 'a' }} {% if true %}b{% endif %}", "a b"},
		{"{# c #}  {% if true %}b{% endif %}", "  b"},
		{"x{# c #}\n  {% if true %}b{% endif %}", "xb"},
		{"{% set x = 1 %}\n{{ x }}\n{% if true %}\n  y\n{% endif %}\nz", "1\n  y\nz"},
		{"{% for m in messages %}\n{{ m.role }}: {{ m.content }}\n{% endfor %}", "system: Sys\nuser: U1\n"},
		{"{{ 'a' }}\n    {% if true %}b{% endif %}", "a\nb"},
		{"{{ '}}' }}{{ \"%}\" }}{# '{{ #}{% if true %}c{% endif %}", "}}%}c"},
	} {
		got, err := Render(c.src, msgs, Options{BOS: "<s>"})
		if err != nil || got != c.want {
			t.Errorf("%q: got %q, %v; want %q", c.src, got, err, c.want)
		}
	}
}

// TestMarkerInInput: input that holds the marker is rendered without the
// work-around rather than losing bytes.
func TestMarkerInInput(t *testing.T) {
	got, err := Render("{% for m in messages %}{{ m.content }}|{% endfor %}", []Message{{Role: "user", Content: "a\x02b"}}, Options{})
	if err != nil || got != "a\x02b|" {
		t.Errorf("got %q, %v", got, err)
	}
}

func TestSeparateTags(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"a{{ x }}b", "a{{ x }}b"},
		{"{{ x }}", "\x02{{ x }}"},
		{"a{{ x }}{% if %}{# c #}b", "a{{ x }}\x02{% if %}\x02{# c #}b"},
		{"{{ '}}' }}{{ \"\\\"}}\" }}", "\x02{{ '}}' }}\x02{{ \"\\\"}}\" }}"},
		{"{# it's #}{{ x }}", "\x02{# it's #}\x02{{ x }}"},
		{"a{{ x }", "a{{ x }"},
		{"a{% if %}{{ 'x }}", "a{% if %}{{ 'x }}"},
	} {
		if got := separateTags(c.in); got != c.want {
			t.Errorf("separateTags(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
