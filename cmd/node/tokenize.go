package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/engine/chat"
	"github.com/doppler-llm/doppler/engine/tokenizer"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
	"github.com/doppler-llm/doppler/rdrr/gguf"
)

// newTokenize is `doppler tokenize`. Its output format is a contract that
// scripts rely on: ids separated by single spaces on one line, then a
// newline; with --decode, the text and a newline.
func newTokenize() *cobra.Command {
	var (
		model     string
		noSpecial bool
		decode    string
	)
	cmd := &cobra.Command{
		Use:   "tokenize -m MODEL [--no-special] [--] TEXT",
		Short: "Print the token ids of a text (or, with --decode, the text of token ids)",
		Long: `Print the token ids of TEXT separated by single spaces on one line.

By default BOS/EOS are added as the tokenizer says and special tokens written
in the text (<|eot_id|>, <start_of_turn>, …) become their ids. --no-special
adds no BOS/EOS and treats special-token text as plain text (user-defined
tokens still match), as llama.cpp's vocabulary tests do.

--decode takes ids separated by commas or spaces and prints their text
followed by a newline; control tokens (BOS, EOS, …) decode to nothing.

MODEL is a GGUF file (a vocabulary-only GGUF works; nothing is converted),
an RDRR directory or an HF directory with tokenizer.json. Put -- before a
TEXT that starts with '-'.`,
		Example: `  doppler tokenize -m model.gguf "Hello world"
  doppler tokenize -m model.gguf --no-special -- "-1 is negative"
  doppler tokenize -m model.gguf --decode 1,15043,3186`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("decode") {
				if len(args) != 0 {
					return errors.New("--decode takes no TEXT argument")
				}
				return nil
			}
			if len(args) != 1 {
				return fmt.Errorf("want exactly one TEXT argument (quote it; put -- before a TEXT starting with '-'), got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			tk, err := openTokenizer(model)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if cmd.Flags().Changed("decode") {
				ids, err := parseTokenList(decode, tk.VocabSize())
				if err != nil {
					return fmt.Errorf("--decode: %w", err)
				}
				_, err = fmt.Fprintln(out, tk.Decode(ids))
				return err
			}
			var ids []int
			if noSpecial {
				ids = tk.Tokenize(args[0], false, false)
			} else {
				ids = tk.Tokenize(args[0], true, true)
			}
			var b strings.Builder
			for i, id := range ids {
				if i > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(strconv.Itoa(id))
			}
			b.WriteByte('\n')
			_, err = fmt.Fprint(out, b.String())
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&model, "model", "m", "", modelFlagHelp)
	f.BoolVar(&noSpecial, "no-special", false, "add no BOS/EOS and do not parse special tokens in the text")
	f.StringVar(&decode, "decode", "", "decode these token ids (comma- or space-separated) instead of tokenizing")
	return cmd
}

// openTokenizer reads the tokenizer of the model that -m (or
// $DOPPLER_MODEL) names, straight from the GGUF metadata, the RDRR manifest
// or the HF tokenizer.json, without converting anything.
func openTokenizer(path string) (*tokenizer.Tokenizer, error) {
	if path == "" {
		path = os.Getenv("DOPPLER_MODEL")
	}
	if path == "" {
		return nil, errors.New("no model: pass -m MODEL (a GGUF file, HF directory or RDRR directory) or set DOPPLER_MODEL")
	}
	t, src, err := readTokenizer(path)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("%s has no tokenizer", src)
	}
	tk, err := tokenizer.New(t)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return tk, nil
}

// readTokenizer returns the tokenizer stored at path (nil if none) and the
// file it came from, for messages.
func readTokenizer(path string) (*rdrr.Tokenizer, string, error) {
	kind, err := rdrr.Sniff(path)
	if err != nil {
		return nil, path, fmt.Errorf("model %s: %w", path, err)
	}
	if kind == rdrr.KindGGUF {
		f, err := gguf.Open(path)
		if err != nil {
			return nil, path, fmt.Errorf("%s: %w", path, err)
		}
		defer f.Close()
		t, err := convert.TokenizerFromGGUF(f)
		if err != nil {
			return nil, path, fmt.Errorf("%s: tokenizer: %w", path, err)
		}
		if t == nil {
			return nil, path, fmt.Errorf("%s has no tokenizer (no tokenizer.ggml.model key)", path)
		}
		return t, path, nil
	}
	manifest := filepath.Join(path, rdrr.ManifestFile)
	if kind == rdrr.KindRDRR {
		m, err := rdrr.OpenDir(path)
		if err != nil {
			return nil, manifest, err
		}
		return m.Manifest.Tokenizer, manifest, nil
	}
	hf := filepath.Join(path, "tokenizer.json")
	if _, err := os.Stat(hf); err != nil {
		return nil, path, fmt.Errorf("%s: neither an RDRR directory (%s) nor an HF directory with tokenizer.json", path, rdrr.ManifestFile)
	}
	t, err := convert.TokenizerFromHF(path)
	if err != nil {
		return nil, hf, fmt.Errorf("%s: %w", hf, err)
	}
	return t, hf, nil
}

// parseTokenList parses ids separated by commas and/or white space, each
// below n (the vocabulary size).
func parseTokenList(s string, n int) ([]int, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(fields) == 0 {
		return nil, errors.New("no token ids")
	}
	ids := make([]int, len(fields))
	for i, f := range fields {
		v, err := strconv.Atoi(f)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad token id %q", f)
		}
		if v >= n {
			return nil, fmt.Errorf("token id %d is outside the %d-token vocabulary", v, n)
		}
		ids[i] = v
	}
	return ids, nil
}

// chatTokens formats prompt (after an optional system message) as one user
// turn with the model's chat template, ending with the assistant's header,
// and tokenizes it with special tokens parsed. BOS is added as the
// tokenizer says unless the template already wrote it.
func chatTokens(tk *tokenizer.Tokenizer, template, system, prompt string) ([]int, error) {
	if template == "" {
		return nil, fmt.Errorf("%w (tokenizer.chat_template): run without --chat", chat.ErrNoTemplate)
	}
	var msgs []chat.Message
	if system != "" {
		msgs = append(msgs, chat.Message{Role: "system", Content: system})
	}
	msgs = append(msgs, chat.Message{Role: "user", Content: prompt})
	opts := chat.Options{AddGenerationPrompt: true, BOS: tk.TokenPiece(tk.BOS()), EOS: tk.TokenPiece(tk.EOS())}
	text, err := chat.Render(template, msgs, opts)
	if err != nil {
		return nil, err
	}
	addSpecial := opts.BOS == "" || !strings.HasPrefix(text, opts.BOS)
	return tk.Tokenize(text, addSpecial, true), nil
}
