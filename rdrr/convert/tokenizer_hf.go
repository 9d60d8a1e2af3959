package convert

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/doppler-llm/doppler/rdrr"
)

// TokenizerFromHF reads an HF tokenizer.json (and tokenizer_config.json
// when present) from dir. Byte-level BPE vocabularies become GGUF's "gpt2"
// model; SentencePiece-style BPE with byte fallback becomes "llama" with
// scores ranked by merge order, as llama.cpp's converter does.
func TokenizerFromHF(dir string) (*rdrr.Tokenizer, error) {
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	var tj struct {
		Model struct {
			Type         string          `json:"type"`
			Vocab        map[string]int  `json:"vocab"`
			Merges       json.RawMessage `json:"merges"`
			ByteFallback bool            `json:"byte_fallback"`
		} `json:"model"`
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		return nil, err
	}
	if tj.Model.Type != "BPE" {
		return nil, fmt.Errorf("unsupported tokenizer model type %q (want BPE)", tj.Model.Type)
	}
	n := 0
	for _, id := range tj.Model.Vocab {
		n = max(n, id+1)
	}
	for _, a := range tj.AddedTokens {
		n = max(n, a.ID+1)
	}
	t := &rdrr.Tokenizer{Tokens: make([]string, n), Types: make([]int32, n), BOS: -1, EOS: -1, UNK: -1, PAD: -1}
	for i := range t.Tokens {
		t.Tokens[i] = fmt.Sprintf("[PAD%d]", i)
		t.Types[i] = rdrr.TokenUnused
	}
	for s, id := range tj.Model.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("token %q has id %d", s, id)
		}
		t.Tokens[id], t.Types[id] = s, rdrr.TokenNormal
	}
	for _, a := range tj.AddedTokens {
		t.Tokens[a.ID] = a.Content
		t.Types[a.ID] = rdrr.TokenUserDefined
		if a.Special {
			t.Types[a.ID] = rdrr.TokenControl
		}
	}
	var merges []string
	var asStrings []string
	if err := json.Unmarshal(tj.Model.Merges, &asStrings); err == nil {
		merges = asStrings
	} else {
		var pairs [][2]string
		if err := json.Unmarshal(tj.Model.Merges, &pairs); err != nil {
			return nil, fmt.Errorf("merges: %v", err)
		}
		for _, p := range pairs {
			merges = append(merges, p[0]+" "+p[1])
		}
	}
	if strings.Contains(string(tj.PreTokenizer), "ByteLevel") || !tj.Model.ByteFallback {
		t.Model, t.Pre, t.Merges = "gpt2", "default", merges
	} else {
		// SentencePiece-style: score each token by the rank of the merge
		// that makes it (earlier merges score higher).
		t.Model, t.AddSpacePrefix, t.AddBOS = "llama", true, true
		t.Scores = make([]float32, n)
		for i, m := range merges {
			if id, ok := tj.Model.Vocab[strings.ReplaceAll(m, " ", "")]; ok && t.Scores[id] == 0 {
				t.Scores[id] = -float32(i + 1)
			}
		}
		for i, s := range t.Tokens {
			if len(s) == 6 && strings.HasPrefix(s, "<0x") && strings.HasSuffix(s, ">") {
				t.Types[i] = rdrr.TokenByte
			}
		}
	}
	var cfg struct {
		BOS          any    `json:"bos_token"`
		EOS          any    `json:"eos_token"`
		UNK          any    `json:"unk_token"`
		PAD          any    `json:"pad_token"`
		AddBOS       *bool  `json:"add_bos_token"`
		AddEOS       *bool  `json:"add_eos_token"`
		ChatTemplate string `json:"chat_template"`
	}
	if cb, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json")); err == nil {
		if err := json.Unmarshal(cb, &cfg); err != nil {
			return nil, fmt.Errorf("tokenizer_config.json: %v", err)
		}
	}
	find := func(v any) int {
		s, _ := v.(string)
		if m, ok := v.(map[string]any); ok {
			s, _ = m["content"].(string)
		}
		for i, tok := range t.Tokens {
			if s != "" && tok == s {
				return i
			}
		}
		return -1
	}
	t.BOS, t.EOS, t.UNK, t.PAD = find(cfg.BOS), find(cfg.EOS), find(cfg.UNK), find(cfg.PAD)
	if cfg.AddBOS != nil {
		t.AddBOS = *cfg.AddBOS
	}
	if cfg.AddEOS != nil {
		t.AddEOS = *cfg.AddEOS
	}
	t.ChatTemplate = cfg.ChatTemplate
	return t, nil
}
