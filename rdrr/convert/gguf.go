package convert

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/gguf"
)

type ggufSource struct {
	f *gguf.File
}

func openGGUF(path string) (*ggufSource, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	for _, t := range f.Tensors {
		if !t.DType.Valid() {
			f.Close()
			return nil, fmt.Errorf("%s: tensor %s: %w (ggml type %d)", path, t.Name, gguf.ErrUnknownType, t.GGML)
		}
	}
	return &ggufSource{f: f}, nil
}

func (s *ggufSource) Close() error { return s.f.Close() }

func (s *ggufSource) info() rdrr.Info {
	return sourceInfo("gguf", s.f.Path)
}

func (s *ggufSource) tokenizer() (*rdrr.Tokenizer, error) { return TokenizerFromGGUF(s.f) }

func (s *ggufSource) tensors() []srcTensor {
	out := make([]srcTensor, 0, len(s.f.Tensors))
	gptOSS := s.f.Architecture() == "gpt-oss"
	for i := range s.f.Tensors {
		t := &s.f.Tensors[i]
		name := t.Name
		if gptOSS {
			// GPT-OSS's "post attention" norm is its pre-FFN norm: give it
			// the name every other family uses for that job.
			name = strings.Replace(name, ".post_attention_norm.", ".ffn_norm.", 1)
		}
		shape := make([]int64, len(t.Dims))
		for j, d := range t.Dims {
			shape[len(t.Dims)-1-j] = int64(d)
		}
		out = append(out, srcTensor{
			name:   name,
			dtype:  t.DType,
			shape:  shape,
			size:   int64(t.Size),
			expert: strings.Contains(t.Name, "_exps.") && len(shape) >= 2,
			open:   func() (io.Reader, error) { return s.f.TensorReader(t) },
		})
	}
	return out
}

// f32 turns a GGUF float32 into the float64 with the same shortest decimal
// form, so 1e-5 is written as 1e-05 and not 9.999999747378752e-06.
func f32(v float64) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', -1, 32), 64)
	return r
}

// ggufArch maps GGUF architecture names to DOPPLER's.
var ggufArch = map[string]string{
	"llama":   "llama",
	"mistral": "mistral",
	"gemma3":  "gemma3",
	"qwen3":   "qwen3",
	"gpt-oss": "gpt-oss",
}

func (s *ggufSource) config() (rdrr.Config, error) {
	f := s.f
	arch := f.Architecture()
	if arch == "" {
		return rdrr.Config{}, fmt.Errorf("general.architecture is missing")
	}
	name, ok := ggufArch[arch]
	if !ok {
		return rdrr.Config{}, fmt.Errorf("unsupported architecture %q", arch)
	}
	key := func(k string) string { return arch + "." + k }
	geti := func(k string, def int) int {
		if v, ok := f.Int(key(k)); ok {
			return int(v)
		}
		return def
	}
	getf := func(k string, def float64) float64 {
		if v, ok := f.Float(key(k)); ok {
			return f32(v)
		}
		return def
	}
	c := rdrr.Config{
		Architecture:  name,
		ContextLength: geti("context_length", 0),
		HiddenSize:    geti("embedding_length", 0),
		Layers:        geti("block_count", 0),
		Heads:         geti("attention.head_count", 0),
		FFN:           geti("feed_forward_length", 0),
		NormEps:       getf("attention.layer_norm_rms_epsilon", 1e-5),
		Experts:       geti("expert_count", 0),
		ExpertsUsed:   geti("expert_used_count", 0),
		ExpertFFN:     geti("expert_feed_forward_length", 0),
		SlidingWindow: geti("attention.sliding_window", 0),
		Activation:    "silu",
	}
	for _, k := range []string{"embedding_length", "block_count", "attention.head_count"} {
		if _, ok := f.Int(key(k)); !ok {
			return rdrr.Config{}, fmt.Errorf("metadata %s is missing", key(k))
		}
	}
	c.KVHeads = geti("attention.head_count_kv", c.Heads)
	if c.Heads > 0 {
		c.HeadDim = geti("attention.key_length", c.HiddenSize/c.Heads)
	}
	if v := geti("attention.value_length", c.HeadDim); v != c.HeadDim {
		c.ValueDim = v
	}
	emb, ok := f.Tensor("token_embd.weight")
	if !ok || len(emb.Dims) != 2 {
		return rdrr.Config{}, fmt.Errorf("tensor token_embd.weight is missing")
	}
	c.VocabSize = int(emb.Dims[1])
	_, hasOutput := f.Tensor("output.weight")
	c.TiedEmbeddings = !hasOutput
	c.Rope = rdrr.RoPE{
		Theta: getf("rope.freq_base", 10000),
		Dim:   geti("rope.dimension_count", c.HeadDim),
		Style: "normal",
	}
	switch typ, _ := f.String(key("rope.scaling.type")); typ {
	case "", "none":
	case "linear", "yarn":
		c.Rope.Scaling = &rdrr.RoPEScaling{
			Type:        typ,
			Factor:      getf("rope.scaling.factor", 1),
			OriginalCtx: geti("rope.scaling.original_context_length", 0),
		}
		if typ == "yarn" {
			c.Rope.Scaling.BetaFast = getf("rope.scaling.yarn_beta_fast", 32)
			c.Rope.Scaling.BetaSlow = getf("rope.scaling.yarn_beta_slow", 1)
			c.Rope.Scaling.AttnFactor = getf("rope.scaling.yarn_attn_factor", 0)
			c.Rope.Scaling.Truncate = true // llama.cpp floors/ceils the correction range
		}
	default:
		return rdrr.Config{}, fmt.Errorf("unsupported rope scaling type %q", typ)
	}
	switch name {
	case "llama", "mistral":
		if c.Experts > 0 {
			c.Architecture = "mixtral"
			c.ExpertGating = "softmax"
		}
		if c.SlidingWindow > 0 {
			c.Architecture = "mistral"
		}
	case "qwen3":
		c.Rope.Style = "neox"
		c.QKNorm = true
	case "gemma3":
		c.Rope.Style = "neox"
		c.QKNorm = true
		c.Activation = "gelu_tanh"
		c.EmbedScale = f32(math.Sqrt(float64(c.HiddenSize)))
		c.NormEps = getf("attention.layer_norm_rms_epsilon", 1e-6)
		// llama.cpp's converter stores Gemma norms as 1 + w already.
		c.LayerTypes = make([]string, c.Layers)
		for l := range c.LayerTypes {
			c.LayerTypes[l] = "sliding"
			if (l+1)%6 == 0 {
				c.LayerTypes[l] = "full"
			}
		}
		local := c.Rope
		local.Theta = 10000
		local.Scaling = nil
		c.RopeLocal = &local
	case "gpt-oss":
		c.Rope.Style = "neox"
		c.Activation = "swiglu_oai"
		c.AttnSinks = true
		c.ExpertGating = "topk_softmax"
		c.LayerTypes = make([]string, c.Layers)
		for l := range c.LayerTypes {
			c.LayerTypes[l] = "full"
			if l%2 == 0 {
				c.LayerTypes[l] = "sliding"
			}
		}
	}
	if c.Experts > 0 && c.ExpertFFN == 0 {
		c.ExpertFFN = c.FFN
	}
	if err := c.Validate(); err != nil {
		return rdrr.Config{}, err
	}
	return c, nil
}

// ConfigFromGGUF reads a model config from GGUF metadata.
func ConfigFromGGUF(f *gguf.File) (rdrr.Config, error) { return (&ggufSource{f: f}).config() }
