package convert

import (
	"fmt"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/gguf"
)

// TokenizerFromGGUF reads the tokenizer embedded in a GGUF file. It returns
// nil and no error when the file carries no tokenizer.
func TokenizerFromGGUF(f *gguf.File) (*rdrr.Tokenizer, error) {
	model, ok := f.String("tokenizer.ggml.model")
	if !ok {
		return nil, nil
	}
	t := &rdrr.Tokenizer{Model: model, BOS: -1, EOS: -1, UNK: -1, PAD: -1}
	t.Pre, _ = f.String("tokenizer.ggml.pre")
	t.Tokens, ok = f.Strings("tokenizer.ggml.tokens")
	if !ok || len(t.Tokens) == 0 {
		return nil, fmt.Errorf("tokenizer.ggml.tokens missing or empty")
	}
	n := len(t.Tokens)
	if s, ok := f.Float32s("tokenizer.ggml.scores"); ok {
		if len(s) != n {
			return nil, fmt.Errorf("tokenizer.ggml.scores has %d entries for %d tokens", len(s), n)
		}
		t.Scores = s
	}
	if ty, ok := f.Int32s("tokenizer.ggml.token_type"); ok {
		if len(ty) != n {
			return nil, fmt.Errorf("tokenizer.ggml.token_type has %d entries for %d tokens", len(ty), n)
		}
		t.Types = ty
	}
	t.Merges, _ = f.Strings("tokenizer.ggml.merges")
	id := func(key string) (int, error) {
		v, ok := f.Int(key)
		if !ok || v == 0xFFFFFFFF || v < 0 {
			return -1, nil
		}
		if v >= int64(n) {
			return -1, fmt.Errorf("%s = %d is outside the %d-token vocabulary", key, v, n)
		}
		return int(v), nil
	}
	var err error
	for _, p := range []struct {
		key string
		dst *int
	}{
		{"tokenizer.ggml.bos_token_id", &t.BOS},
		{"tokenizer.ggml.eos_token_id", &t.EOS},
		{"tokenizer.ggml.unknown_token_id", &t.UNK},
		{"tokenizer.ggml.padding_token_id", &t.PAD},
	} {
		if *p.dst, err = id(p.key); err != nil {
			return nil, err
		}
	}
	for _, key := range []string{"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"} {
		v, err := id(key)
		if err != nil {
			return nil, err
		}
		if v >= 0 && v != t.EOS {
			t.EOT = append(t.EOT, v)
		}
	}
	// llama.cpp's defaults: SentencePiece adds BOS and a space prefix.
	spm := model == "llama"
	t.AddBOS = spm
	if v, ok := f.Bool("tokenizer.ggml.add_bos_token"); ok {
		t.AddBOS = v
	}
	if v, ok := f.Bool("tokenizer.ggml.add_eos_token"); ok {
		t.AddEOS = v
	}
	t.AddSpacePrefix = spm
	if v, ok := f.Bool("tokenizer.ggml.add_space_prefix"); ok {
		t.AddSpacePrefix = v
	}
	t.ChatTemplate, _ = f.String("tokenizer.chat_template")
	return t, nil
}
