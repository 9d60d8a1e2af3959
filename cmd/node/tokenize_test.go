package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/engine/chat"
	"github.com/doppler-llm/doppler/engine/tokenizer"
	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/testmodel"
	"github.com/doppler-llm/doppler/internal/vocabtest"
	"github.com/doppler-llm/doppler/rdrr"
)

// runCLI runs the doppler command line in-process and returns its stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func vocabGGUFs(t *testing.T) []string {
	t.Helper()
	outs := testenv.Glob(t, "vocab/*.gguf.out")
	for i, o := range outs {
		outs[i] = strings.TrimSuffix(o, ".out")
	}
	return outs
}

func TestTokenizeGoldens(t *testing.T) {
	for _, path := range vocabGGUFs(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			texts, lines := vocabtest.Cases(t, path)
			for i, text := range texts {
				got, err := runCLI(t, "tokenize", "-m", path, "--no-special", "--", text)
				if err != nil {
					t.Fatalf("case %d %q: %v", i, text, err)
				}
				want := strings.Join(strings.Fields(lines[i]), " ") + "\n"
				if got != want {
					t.Errorf("case %d %q:\n got %q\nwant %q", i, text, got, want)
				}
			}
		})
	}
}

func TestTokenizeFlagOrder(t *testing.T) {
	path := testenv.Path(t, "vocab/ggml-vocab-llama-spm.gguf")
	a, err := runCLI(t, "tokenize", "Hello world", "-m", path, "--no-special")
	if err != nil {
		t.Fatal(err)
	}
	b, err := runCLI(t, "tokenize", "--no-special", "-m", path, "Hello world")
	if err != nil {
		t.Fatal(err)
	}
	if a != b || a != "15043 3186\n" {
		t.Errorf("flags after args: %q, before: %q, want %q", a, b, "15043 3186\n")
	}
	// Default: BOS added (SentencePiece), special tokens parsed.
	c, err := runCLI(t, "tokenize", "-m", path, "Hello world")
	if err != nil {
		t.Fatal(err)
	}
	if c != "1 15043 3186\n" {
		t.Errorf("default: got %q, want %q", c, "1 15043 3186\n")
	}
	d, err := runCLI(t, "tokenize", "-m", path, "--", "-1 <s>")
	if err != nil {
		t.Fatal(err)
	}
	e, err := runCLI(t, "tokenize", "-m", path, "--no-special", "--", "-1 <s>")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d, "1 ") || !strings.HasSuffix(d, " 1\n") || strings.HasSuffix(e, " 1\n") {
		t.Errorf("\"-1 <s>\": default %q (want BOS and a parsed <s> = 1), --no-special %q (want <s> as text)", d, e)
	}
}

func TestTokenizeDecode(t *testing.T) {
	for _, path := range vocabGGUFs(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			for _, text := range []string{"Hello world", "Hello, world! 3.14 — ok?", "  two  spaces\tand a tab"} {
				ids, err := runCLI(t, "tokenize", "-m", path, "--no-special", text)
				if err != nil {
					t.Fatal(err)
				}
				// Space-separated output feeds straight back in, and so do commas.
				for _, list := range []string{strings.TrimSpace(ids), strings.ReplaceAll(strings.TrimSpace(ids), " ", ",")} {
					got, err := runCLI(t, "tokenize", "-m", path, "--decode", list)
					if err != nil {
						t.Fatal(err)
					}
					want := text + "\n"
					if strings.Contains(path, "bert") {
						// WordPiece lowercases and drops spacing.
						if got == "" {
							t.Errorf("%q: empty decode", text)
						}
						continue
					}
					if got != want {
						t.Errorf("%q → %s → %q, want %q", text, list, got, want)
					}
				}
			}
		})
	}
}

func TestTokenizeErrors(t *testing.T) {
	spm := testenv.Path(t, "vocab/ggml-vocab-llama-spm.gguf")
	dir := t.TempDir()
	t.Setenv("DOPPLER_MODEL", "")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no model", []string{"tokenize", "hi"}, "no model"},
		{"missing file", []string{"tokenize", "-m", filepath.Join(dir, "nope.gguf"), "hi"}, "nope.gguf"},
		{"not a model dir", []string{"tokenize", "-m", dir, "hi"}, "tokenizer.json"},
		{"no text", []string{"tokenize", "-m", spm}, "exactly one TEXT"},
		{"two texts", []string{"tokenize", "-m", spm, "a", "b"}, "exactly one TEXT"},
		{"decode and text", []string{"tokenize", "-m", spm, "--decode", "1", "a"}, "no TEXT"},
		{"bad id", []string{"tokenize", "-m", spm, "--decode", "1,x"}, `bad token id "x"`},
		{"id out of range", []string{"tokenize", "-m", spm, "--decode", "1,99999999"}, "outside"},
		{"empty decode", []string{"tokenize", "-m", spm, "--decode", ""}, "no token ids"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runCLI(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	t.Run("gguf without tokenizer", func(t *testing.T) {
		noTok := filepath.Join(t.TempDir(), "notok.gguf")
		if err := os.WriteFile(noTok, minimalGGUF(), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := runCLI(t, "tokenize", "-m", noTok, "hi")
		if err == nil || !strings.Contains(err.Error(), noTok) || !strings.Contains(err.Error(), "no tokenizer") {
			t.Errorf("error %v, want one naming %s and saying it has no tokenizer", err, noTok)
		}
	})
	t.Run("DOPPLER_MODEL", func(t *testing.T) {
		t.Setenv("DOPPLER_MODEL", spm)
		got, err := runCLI(t, "tokenize", "--no-special", "Hello world")
		if err != nil || got != "15043 3186\n" {
			t.Errorf("got %q, %v", got, err)
		}
	})
}

// minimalGGUF is a GGUF v3 file with no tensors and one metadata key,
// general.architecture = "llama": no tokenizer.
func minimalGGUF() []byte {
	var b bytes.Buffer
	str := func(s string) {
		binary.Write(&b, binary.LittleEndian, uint64(len(s)))
		b.WriteString(s)
	}
	b.WriteString("GGUF")
	binary.Write(&b, binary.LittleEndian, uint32(3)) // version
	binary.Write(&b, binary.LittleEndian, uint64(0)) // tensors
	binary.Write(&b, binary.LittleEndian, uint64(1)) // metadata keys
	str("general.architecture")
	binary.Write(&b, binary.LittleEndian, uint32(8)) // GGUF_TYPE_STRING
	str("llama")
	return b.Bytes()
}

// TestTokenizeRDRR: an RDRR directory tokenizes like the GGUF it came
// from; one converted without a tokenizer fails naming its manifest.
func TestTokenizeRDRR(t *testing.T) {
	src := testenv.Path(t, "models/stories260K.gguf")
	dir := testmodel.Convert(t, src, rdrr.WriterOptions{})
	for _, args := range [][]string{{"Once upon a time"}, {"--no-special", "Once upon a time"}, {"--decode", "1,403,407,261"}} {
		want, err := runCLI(t, append([]string{"tokenize", "-m", src}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		got, err := runCLI(t, append([]string{"tokenize", "-m", dir}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%v: RDRR %q, GGUF %q", args, got, want)
		}
	}

	hf := testenv.Path(t, "hf/llama")
	noTok := testmodel.Convert(t, hf, rdrr.WriterOptions{})
	_, err := runCLI(t, "tokenize", "-m", noTok, "hi")
	if want := filepath.Join(noTok, rdrr.ManifestFile); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "no tokenizer") {
		t.Errorf("error %v, want one naming %s and saying it has no tokenizer", err, want)
	}
}

// TestTokenizeHF reads an HF tokenizer.json directly: a byte-level BPE
// vocabulary of single bytes with one merge.
func TestTokenizeHF(t *testing.T) {
	dir := t.TempDir()
	tj := `{"model": {"type": "BPE", "vocab": {"h": 0, "i": 1, "Ġ": 2, "hi": 3, "<s>": 4}, "merges": ["h i"]},
		"added_tokens": [{"id": 4, "content": "<s>", "special": true}],
		"pre_tokenizer": {"type": "ByteLevel"}}`
	tc := `{"bos_token": "<s>", "add_bos_token": true}`
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(tj), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(tc), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"hi hi"}, "4 3 2 3\n"},
		{[]string{"--no-special", "hi hi"}, "3 2 3\n"},
		{[]string{"--decode", "4 3 2 1"}, "hi i\n"},
	} {
		got, err := runCLI(t, append([]string{"tokenize", "-m", dir}, c.args...)...)
		if err != nil || got != c.want {
			t.Errorf("%v: got %q, %v; want %q", c.args, got, err, c.want)
		}
	}
}

// TestChatTokens: --chat's prompt formatting and tokenization.
func TestChatTokens(t *testing.T) {
	v, err := readTokenizerForTest(t, "vocab/ggml-vocab-llama-spm.gguf")
	if err != nil {
		t.Fatal(err)
	}
	const withBOS = `{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}`
	gemma, err := os.ReadFile(testenv.Path(t, "vocab/chat-templates/google-gemma-2-2b-it.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, template, system, prompt string
		want                           []int
	}{
		// The template writes <s> and </s>: parsed as BOS/EOS, no second BOS.
		{"template writes BOS", withBOS, "Be brief.", "Hi",
			v.Tokenize("<s>[system] Be brief.</s>[user] Hi</s>[assistant]", false, true)},
		// No BOS in the template: the tokenizer adds it (SentencePiece does).
		{"tokenizer adds BOS", `{{ messages[0].content }}`, "", "Hi", v.Tokenize("Hi", true, true)},
		// Gemma refuses the system role: merged into the user turn.
		{"gemma system merged", string(gemma), "Be brief.", "Hi",
			v.Tokenize("<s><start_of_turn>user\nBe brief.\nHi<end_of_turn>\n<start_of_turn>model\n", false, true)},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := chatTokens(v, c.template, c.system, c.prompt)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
			if len(got) < 2 || got[0] != v.BOS() || got[1] == v.BOS() {
				t.Errorf("want exactly one leading BOS: %v", got)
			}
		})
	}
	if _, err := chatTokens(v, "", "", "Hi"); !errors.Is(err, chat.ErrNoTemplate) {
		t.Errorf("no template: %v, want chat.ErrNoTemplate", err)
	}
}

func readTokenizerForTest(t *testing.T, rel string) (*tokenizer.Tokenizer, error) {
	t.Helper()
	return openTokenizer(testenv.Path(t, rel))
}

// TestRunChat runs `doppler run --chat` on stories260K with a chat
// template written into its manifest, and without one.
func TestRunChat(t *testing.T) {
	src := testenv.Path(t, "models/stories260K.gguf")
	dir := testmodel.Convert(t, src, rdrr.WriterOptions{})
	args := []string{"run", "-m", dir, "-p", "Once upon a time", "--temp", "0", "-n", "2", "--json", "--chat"}
	if _, err := runCLI(t, args...); err == nil || !strings.Contains(err.Error(), "no chat template") {
		t.Fatalf("model without a chat template: %v", err)
	}
	for _, a := range [][]string{
		{"run", "-m", dir, "-p", "hi", "--system", "s"},
		{"run", "-m", dir, "--prompt-tokens", "1,2", "--chat"},
	} {
		if _, err := runCLI(t, a...); err == nil || !strings.Contains(err.Error(), "--chat") {
			t.Errorf("%v: %v, want an error about --chat", a, err)
		}
	}

	mf := filepath.Join(dir, rdrr.ManifestFile)
	b, err := os.ReadFile(mf)
	if err != nil {
		t.Fatal(err)
	}
	man, err := rdrr.ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	man.Tokenizer.ChatTemplate = `{{ bos_token }}{% for m in messages %}{{ m.content }}{% if not loop.last %} {% endif %}{% endfor %}`
	if b, err = man.Encode(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mf, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var plain, chatted struct {
		PromptTokens []int `json:"prompt_tokens"`
	}
	out, err := runCLI(t, "run", "-m", dir, "-p", "Once upon a time there was", "--temp", "0", "-n", "2", "--json")
	if err != nil || json.Unmarshal([]byte(out), &plain) != nil {
		t.Fatalf("plain: %v\n%s", err, out)
	}
	out, err = runCLI(t, "run", "-m", dir, "-p", "there was", "--system", "Once upon a time", "--temp", "0", "-n", "2", "--json", "--chat")
	if err != nil || json.Unmarshal([]byte(out), &chatted) != nil {
		t.Fatalf("--chat: %v\n%s", err, out)
	}
	// The template writes BOS, so --chat adds none: the same ids as the
	// plain prompt, which gets BOS from the tokenizer.
	if !slices.Equal(plain.PromptTokens, chatted.PromptTokens) || plain.PromptTokens[0] != 1 {
		t.Errorf("--chat prompt %v, plain %v", chatted.PromptTokens, plain.PromptTokens)
	}
}
