package rdrr

import (
	"errors"
	"fmt"
)

// Config is a model's architecture and hyperparameters, independent of
// where the model came from. Tensor names follow GGUF's conventions
// (token_embd.weight, blk.N.attn_q.weight, …) whatever the source.
type Config struct {
	// Architecture names the model family: llama, mistral, gemma3, qwen3,
	// mixtral, gpt-oss.
	Architecture  string `json:"architecture"`
	ContextLength int    `json:"context_length"`
	HiddenSize    int    `json:"hidden_size"`
	Layers        int    `json:"layers"`
	Heads         int    `json:"heads"`
	KVHeads       int    `json:"kv_heads"`
	HeadDim       int    `json:"head_dim"`
	// ValueDim is the value head size when it differs from HeadDim.
	ValueDim  int `json:"value_dim,omitempty"`
	FFN       int `json:"ffn"`
	VocabSize int `json:"vocab_size"`

	NormEps float64 `json:"norm_eps"`
	// NormAddOne: RMSNorm multiplies by (1 + w) (Gemma).
	NormAddOne bool `json:"norm_add_one,omitempty"`

	Rope RoPE `json:"rope"`
	// RopeLocal, when set, is the RoPE of sliding-window layers (Gemma 3).
	RopeLocal *RoPE `json:"rope_local,omitempty"`

	// SlidingWindow is the window of sliding layers (a query at i sees
	// keys j with i-W < j ≤ i); 0 when no layer slides.
	SlidingWindow int `json:"sliding_window,omitempty"`
	// LayerTypes gives "sliding" or "full" per layer; empty means every
	// layer is sliding when SlidingWindow > 0, else full.
	LayerTypes []string `json:"layer_types,omitempty"`

	Experts     int `json:"experts,omitempty"`
	ExpertsUsed int `json:"experts_used,omitempty"`
	ExpertFFN   int `json:"expert_ffn,omitempty"`
	// ExpertGating: "softmax" (softmax over all experts, take top-k,
	// renormalise: Mixtral) or "topk_softmax" (softmax over the top-k
	// logits only: GPT-OSS).
	ExpertGating string `json:"expert_gating,omitempty"`

	// Activation of the gated FFN: "silu", "gelu_tanh", or "swiglu_oai"
	// (GPT-OSS's clamped variant).
	Activation     string `json:"activation"`
	TiedEmbeddings bool   `json:"tied_embeddings,omitempty"`
	// EmbedScale multiplies the token embeddings (Gemma: √hidden); 0 means 1.
	EmbedScale float64 `json:"embed_scale,omitempty"`
	// AttnScale is the attention score scale; 0 means 1/√HeadDim.
	AttnScale float64 `json:"attn_scale,omitempty"`
	// Softcaps (Gemma 2); 0 = off.
	AttnSoftcap  float64 `json:"attn_softcap,omitempty"`
	FinalSoftcap float64 `json:"final_softcap,omitempty"`
	// AttnSinks: per-head sink logits (GPT-OSS), tensor blk.N.attn_sinks.weight.
	AttnSinks bool `json:"attn_sinks,omitempty"`
	// QKNorm: per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3).
	QKNorm bool `json:"qk_norm,omitempty"`
}

// RoPE describes rotary position embeddings.
type RoPE struct {
	Theta float64 `json:"theta"`
	// Dim is the number of rotated dimensions of each head (≤ HeadDim).
	Dim int `json:"dim"`
	// Style: "normal" rotates adjacent pairs (2i, 2i+1) as GGUF llama
	// weights expect; "neox" rotates halves (i, i+Dim/2) as HF weights do.
	Style   string       `json:"style"`
	Scaling *RoPEScaling `json:"scaling,omitempty"`
}

// RoPEScaling is a context-extension scheme.
type RoPEScaling struct {
	// Type: "linear", "llama3" or "yarn".
	Type          string  `json:"type"`
	Factor        float64 `json:"factor"`
	OriginalCtx   int     `json:"original_context,omitempty"`
	LowFreqFactor float64 `json:"low_freq_factor,omitempty"`  // llama3
	HighFreqFact  float64 `json:"high_freq_factor,omitempty"` // llama3
	BetaFast      float64 `json:"beta_fast,omitempty"`        // yarn
	BetaSlow      float64 `json:"beta_slow,omitempty"`        // yarn
	// AttnFactor multiplies cos and sin (yarn's attention scaling); 0 =
	// the default for the type.
	AttnFactor float64 `json:"attn_factor,omitempty"`
	// Truncate: yarn rounds its correction range to whole dimensions.
	Truncate bool `json:"truncate,omitempty"`
}

// LayerSliding reports whether layer l uses sliding-window attention.
func (c *Config) LayerSliding(l int) bool {
	if c.SlidingWindow <= 0 {
		return false
	}
	if len(c.LayerTypes) == 0 {
		return true
	}
	return c.LayerTypes[l] == "sliding"
}

// Validate checks the values a model cannot run without.
func (c *Config) Validate() error {
	switch {
	case c.Architecture == "":
		return errors.New("architecture is empty")
	case c.Layers <= 0 || c.HiddenSize <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.HeadDim <= 0:
		return fmt.Errorf("layers %d, hidden %d, heads %d, kv heads %d, head dim %d must all be positive",
			c.Layers, c.HiddenSize, c.Heads, c.KVHeads, c.HeadDim)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("%d heads are not a multiple of %d KV heads", c.Heads, c.KVHeads)
	case c.VocabSize <= 0:
		return fmt.Errorf("vocab size %d", c.VocabSize)
	case len(c.LayerTypes) != 0 && len(c.LayerTypes) != c.Layers:
		return fmt.Errorf("%d layer types for %d layers", len(c.LayerTypes), c.Layers)
	case c.Experts < 0 || c.ExpertsUsed < 0 || c.ExpertsUsed > c.Experts:
		return fmt.Errorf("%d experts, %d used", c.Experts, c.ExpertsUsed)
	case c.Experts > 0 && c.ExpertsUsed == 0:
		return fmt.Errorf("%d experts but experts_used is missing", c.Experts)
	case c.Rope.Dim < 0 || c.Rope.Dim > c.HeadDim || c.Rope.Dim%2 != 0:
		return fmt.Errorf("rope dim %d for head dim %d", c.Rope.Dim, c.HeadDim)
	}
	for _, t := range c.LayerTypes {
		if t != "sliding" && t != "full" {
			return fmt.Errorf("layer type %q (want sliding or full)", t)
		}
	}
	return nil
}
