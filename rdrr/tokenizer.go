package rdrr

// Token types, as GGUF's tokenizer.ggml.token_type stores them.
const (
	TokenNormal      = 1
	TokenUnknown     = 2
	TokenControl     = 3
	TokenUserDefined = 4
	TokenUnused      = 5
	TokenByte        = 6
)

// Tokenizer is the tokenizer a manifest carries: everything needed to
// encode and decode text, in GGUF's vocabulary (tokenizer.ggml.*).
type Tokenizer struct {
	// Model is the tokenizer model: "llama" (SentencePiece), "gpt2"
	// (byte-level BPE), "bert" (WordPiece), … as GGUF names them.
	Model string `json:"model"`
	// Pre names the pre-tokenizer for byte-level BPE ("llama-bpe", "qwen2", …).
	Pre    string    `json:"pre,omitempty"`
	Tokens []string  `json:"tokens"`
	Scores []float32 `json:"scores,omitempty"`
	Types  []int32   `json:"types,omitempty"`
	Merges []string  `json:"merges,omitempty"`

	BOS int `json:"bos"` // -1 when absent
	EOS int `json:"eos"`
	UNK int `json:"unk"`
	PAD int `json:"pad"`
	// EOT lists further end-of-generation tokens (e.g. <|eot_id|>).
	EOT    []int `json:"eot,omitempty"`
	AddBOS bool  `json:"add_bos"`
	AddEOS bool  `json:"add_eos"`
	// AddSpacePrefix is SentencePiece's "add dummy prefix".
	AddSpacePrefix bool   `json:"add_space_prefix"`
	ChatTemplate   string `json:"chat_template,omitempty"`
}
