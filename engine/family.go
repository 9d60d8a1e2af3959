//go:build cgo || js

package engine

// family states what an architecture adds to the shared pre-norm
// transformer block (RMSNorm → attention → residual, RMSNorm → gated FFN →
// residual). Hyperparameters — sliding windows, RoPE scaling, q/k norms,
// norm conventions, embedding scale, attention sinks — come from the
// manifest's config; a family names only the extra tensors it needs.
type family struct {
	// sandwich: a second norm after attention and after the FFN, applied
	// to the block's output before the residual add (Gemma 3).
	sandwich bool
	// attnBias: q, k, v and o projections have biases (GPT-OSS).
	attnBias bool
	// moe: the FFN is a mixture of experts.
	moe bool
}

// families are the architectures the engine runs.
var families = map[string]family{
	"llama":   {},
	"mistral": {}, // sliding-window attention (config.sliding_window)
	"qwen3":   {}, // per-head q/k RMSNorm (config.qk_norm)
	"gemma3":  {sandwich: true},
	"mixtral": {moe: true},                 // softmax gating over all experts (config.expert_gating)
	"gpt-oss": {moe: true, attnBias: true}, // sinks, YaRN, alternating windows, clamped SwiGLU (config)
}

func supportedArchitectures() []string {
	return []string{"llama", "mistral", "qwen3", "gemma3", "mixtral", "gpt-oss"}
}
