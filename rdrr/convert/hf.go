package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/quant"
	"github.com/doppler-llm/doppler/rdrr/safetensors"
)

// hfSource reads an HF transformers checkpoint directory: config.json,
// *.safetensors, and optionally tokenizer.json.
type hfSource struct {
	dir   string
	raw   map[string]any
	cfg   rdrr.Config
	files []*safetensors.File
	ts    []srcTensor
}

func openHF(dir string) (*hfSource, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("%s: not a GGUF file or an HF model directory: %w", dir, err)
	}
	s := &hfSource{dir: dir}
	if err := json.Unmarshal(b, &s.raw); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	if s.cfg, err = hfConfig(s.raw); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s: no *.safetensors files", dir)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f, err := safetensors.Open(p)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.files = append(s.files, f)
	}
	if s.ts, err = s.mapTensors(); err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return s, nil
}

func (s *hfSource) Close() error {
	for _, f := range s.files {
		f.Close()
	}
	return nil
}

func (s *hfSource) info() rdrr.Info {
	return sourceInfo("safetensors", s.dir)
}

func (s *hfSource) config() (rdrr.Config, error) { return s.cfg, nil }

func (s *hfSource) tokenizer() (*rdrr.Tokenizer, error) {
	p := filepath.Join(s.dir, "tokenizer.json")
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	t, err := TokenizerFromHF(s.dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return t, nil
}

func (s *hfSource) tensors() []srcTensor { return s.ts }

// hfName maps HF tensor names (inside model.layers.N) to GGUF-style names.
var hfLayerNames = map[string]string{
	"input_layernorm.weight":            "attn_norm.weight",
	"self_attn.q_proj.weight":           "attn_q.weight",
	"self_attn.q_proj.bias":             "attn_q.bias",
	"self_attn.k_proj.weight":           "attn_k.weight",
	"self_attn.k_proj.bias":             "attn_k.bias",
	"self_attn.v_proj.weight":           "attn_v.weight",
	"self_attn.v_proj.bias":             "attn_v.bias",
	"self_attn.o_proj.weight":           "attn_output.weight",
	"self_attn.o_proj.bias":             "attn_output.bias",
	"self_attn.q_norm.weight":           "attn_q_norm.weight",
	"self_attn.k_norm.weight":           "attn_k_norm.weight",
	"self_attn.sinks":                   "attn_sinks.weight",
	"mlp.gate_proj.weight":              "ffn_gate.weight",
	"mlp.up_proj.weight":                "ffn_up.weight",
	"mlp.down_proj.weight":              "ffn_down.weight",
	"pre_feedforward_layernorm.weight":  "ffn_norm.weight",
	"post_feedforward_layernorm.weight": "post_ffw_norm.weight",
	"block_sparse_moe.gate.weight":      "ffn_gate_inp.weight",
	"mlp.router.weight":                 "ffn_gate_inp.weight",
	"mlp.router.bias":                   "ffn_gate_inp.bias",
}

var (
	reLayer  = regexp.MustCompile(`^model\.layers\.(\d+)\.(.+)$`)
	reExpert = regexp.MustCompile(`^block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$`)
)

var mixtralExpertNames = map[string]string{"w1": "ffn_gate_exps.weight", "w3": "ffn_up_exps.weight", "w2": "ffn_down_exps.weight"}

func (s *hfSource) mapTensors() ([]srcTensor, error) {
	type hfT struct {
		f *safetensors.File
		t *safetensors.Tensor
	}
	all := map[string]hfT{}
	var order []string
	for _, f := range s.files {
		for i := range f.Tensors {
			t := &f.Tensors[i]
			if _, dup := all[t.Name]; dup {
				return nil, fmt.Errorf("tensor %s appears in two files", t.Name)
			}
			all[t.Name] = hfT{f, t}
			order = append(order, t.Name)
		}
	}
	var out []srcTensor
	plain := func(name string, h hfT) error {
		dt, err := hfDType(h.t)
		if err != nil {
			return err
		}
		f, t := h.f, h.t
		out = append(out, srcTensor{name: name, dtype: dt, shape: t.Shape, size: t.Size,
			open: func() (io.Reader, error) { return f.Reader(t), nil }})
		return nil
	}
	// Mixtral's per-expert tensors are fused here, expert outermost.
	fused := map[string][]hfT{}
	for _, name := range order {
		h := all[name]
		switch name {
		case "model.embed_tokens.weight":
			if err := plain("token_embd.weight", h); err != nil {
				return nil, err
			}
			continue
		case "model.norm.weight":
			if err := plain("output_norm.weight", h); err != nil {
				return nil, err
			}
			continue
		case "lm_head.weight":
			if err := plain("output.weight", h); err != nil {
				return nil, err
			}
			continue
		}
		m := reLayer.FindStringSubmatch(name)
		if m == nil {
			return nil, fmt.Errorf("tensor %s: unknown name", name)
		}
		l, rest := m[1], m[2]
		if rest == "post_attention_layernorm.weight" {
			// Llama-style models call their pre-FFN norm so; Gemma 3 has a
			// real post-attention norm.
			gguf := "ffn_norm.weight"
			if s.cfg.Architecture == "gemma3" {
				gguf = "post_attention_norm.weight"
			}
			if err := plain("blk."+l+"."+gguf, all[name]); err != nil {
				return nil, err
			}
			continue
		}
		if g, ok := hfLayerNames[rest]; ok {
			if err := plain("blk."+l+"."+g, h); err != nil {
				return nil, err
			}
			continue
		}
		if em := reExpert.FindStringSubmatch(rest); em != nil {
			key := "blk." + l + "." + mixtralExpertNames[em[2]]
			e, _ := strconv.Atoi(em[1])
			for len(fused[key]) <= e {
				fused[key] = append(fused[key], hfT{})
			}
			fused[key][e] = h
			continue
		}
		if strings.HasPrefix(rest, "mlp.experts.") {
			ts, err := gptOSSExperts(l, rest, h.f, h.t)
			if err != nil {
				return nil, err
			}
			out = append(out, ts...)
			continue
		}
		return nil, fmt.Errorf("tensor %s: unknown name", name)
	}
	keys := make([]string, 0, len(fused))
	for k := range fused {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		parts := fused[key]
		if len(parts) != s.cfg.Experts {
			return nil, fmt.Errorf("tensor %s: %d experts in the checkpoint, config says %d", key, len(parts), s.cfg.Experts)
		}
		first := parts[0].t
		if first == nil {
			return nil, fmt.Errorf("tensor %s: expert 0 missing", key)
		}
		dt, err := hfDType(first)
		if err != nil {
			return nil, err
		}
		for e, p := range parts {
			if p.t == nil || p.t.DType != first.DType || fmt.Sprint(p.t.Shape) != fmt.Sprint(first.Shape) {
				return nil, fmt.Errorf("tensor %s: expert %d missing or shaped differently", key, e)
			}
		}

		out = append(out, srcTensor{
			name: key, dtype: dt, expert: true,
			shape: append([]int64{int64(len(parts))}, first.Shape...),
			size:  first.Size * int64(len(parts)),
			open: func() (io.Reader, error) {
				rs := make([]io.Reader, len(parts))
				for i, p := range parts {
					rs[i] = p.f.Reader(p.t)
				}
				return io.MultiReader(rs...), nil
			},
		})
	}
	return out, nil
}

func hfDType(t *safetensors.Tensor) (quant.DType, error) {
	switch t.DType {
	case "F32":
		return quant.F32, nil
	case "F16":
		return quant.F16, nil
	case "BF16":
		return quant.BF16, nil
	}
	return quant.Invalid, fmt.Errorf("tensor %s: unsupported dtype %s", t.Name, t.DType)
}

// gptOSSExperts turns GPT-OSS's fused expert tensors into GGUF-style
// per-role expert tensors, [out, in] per expert:
// gate_up_proj [E, in, 2I] (gate and up interleaved by column) becomes
// ffn_gate_exps and ffn_up_exps [E, I, in]; down_proj [E, I, out] becomes
// ffn_down_exps [E, out, I]; the biases split likewise.
func gptOSSExperts(layer, rest string, f *safetensors.File, t *safetensors.Tensor) ([]srcTensor, error) {
	dt, err := hfDType(t)
	if err != nil {
		return nil, err
	}
	es := int64(dt.BlockBytes())
	name := func(s string) string { return "blk." + layer + "." + s }
	load := func() ([]byte, error) { return f.Read(t) }
	mk := func(n string, shape []int64, fn func(b []byte) []byte) srcTensor {
		size := es
		for _, d := range shape {
			size *= d
		}
		return srcTensor{name: name(n), dtype: dt, shape: shape, size: size, expert: true,
			open: func() (io.Reader, error) {
				b, err := load()
				if err != nil {
					return nil, err
				}
				return bytes.NewReader(fn(b)), nil
			}}
	}
	sh := t.Shape
	switch rest {
	case "mlp.experts.gate_up_proj":
		if len(sh) != 3 || sh[2]%2 != 0 {
			return nil, fmt.Errorf("tensor %s: shape %v, want [E, in, 2I]", t.Name, sh)
		}
		E, in, I := sh[0], sh[1], sh[2]/2
		pick := func(par int64) func([]byte) []byte {
			return func(b []byte) []byte {
				out := make([]byte, 0, E*I*in*es)
				for e := int64(0); e < E; e++ {
					for o := int64(0); o < I; o++ {
						for i := int64(0); i < in; i++ {
							at := ((e*in+i)*2*I + 2*o + par) * es
							out = append(out, b[at:at+es]...)
						}
					}
				}
				return out
			}
		}
		return []srcTensor{
			mk("ffn_gate_exps.weight", []int64{E, I, in}, pick(0)),
			mk("ffn_up_exps.weight", []int64{E, I, in}, pick(1)),
		}, nil
	case "mlp.experts.gate_up_proj_bias":
		if len(sh) != 2 || sh[1]%2 != 0 {
			return nil, fmt.Errorf("tensor %s: shape %v, want [E, 2I]", t.Name, sh)
		}
		E, I := sh[0], sh[1]/2
		pick := func(par int64) func([]byte) []byte {
			return func(b []byte) []byte {
				out := make([]byte, 0, E*I*es)
				for k := int64(0); k < E*I; k++ {
					at := (2*k + par) * es
					out = append(out, b[at:at+es]...)
				}
				return out
			}
		}
		return []srcTensor{
			mk("ffn_gate_exps.bias", []int64{E, I}, pick(0)),
			mk("ffn_up_exps.bias", []int64{E, I}, pick(1)),
		}, nil
	case "mlp.experts.down_proj":
		if len(sh) != 3 {
			return nil, fmt.Errorf("tensor %s: shape %v, want [E, I, out]", t.Name, sh)
		}
		E, I, O := sh[0], sh[1], sh[2]
		return []srcTensor{mk("ffn_down_exps.weight", []int64{E, O, I}, func(b []byte) []byte {
			out := make([]byte, 0, E*I*O*es)
			for e := int64(0); e < E; e++ {
				for o := int64(0); o < O; o++ {
					for i := int64(0); i < I; i++ {
						at := ((e*I+i)*O + o) * es
						out = append(out, b[at:at+es]...)
					}
				}
			}
			return out
		})}, nil
	case "mlp.experts.down_proj_bias":
		return []srcTensor{mk("ffn_down_exps.bias", sh, func(b []byte) []byte { return b })}, nil
	}
	return nil, fmt.Errorf("tensor %s: unknown expert tensor", t.Name)
}

// hfArch maps HF model_type to DOPPLER's architecture names.
var hfArch = map[string]string{
	"llama": "llama", "mistral": "mistral", "gemma3": "gemma3", "gemma3_text": "gemma3",
	"qwen3": "qwen3", "mixtral": "mixtral", "gpt_oss": "gpt-oss",
}

// hfConfig reads an HF config.json into a Config. It accepts both the
// transformers 5 spelling (rope_parameters, layer_types) and the older one
// (rope_theta, rope_scaling, rope_local_base_freq).
func hfConfig(raw map[string]any) (rdrr.Config, error) {
	if tc, ok := raw["text_config"].(map[string]any); ok {
		raw = tc
	}
	mt, _ := raw["model_type"].(string)
	arch, ok := hfArch[mt]
	if !ok {
		return rdrr.Config{}, fmt.Errorf("unsupported model_type %q", mt)
	}
	num := func(k string) (float64, bool) {
		v, ok := raw[k].(float64)
		return v, ok
	}
	geti := func(k string, def int) int {
		if v, ok := num(k); ok {
			return int(v)
		}
		return def
	}
	getf := func(k string, def float64) float64 {
		if v, ok := num(k); ok {
			return v
		}
		return def
	}
	for _, k := range []string{"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"} {
		if _, ok := num(k); !ok {
			return rdrr.Config{}, fmt.Errorf("%s is missing", k)
		}
	}
	c := rdrr.Config{
		Architecture:  arch,
		ContextLength: geti("max_position_embeddings", 0),
		HiddenSize:    geti("hidden_size", 0),
		Layers:        geti("num_hidden_layers", 0),
		Heads:         geti("num_attention_heads", 0),
		FFN:           geti("intermediate_size", 0),
		VocabSize:     geti("vocab_size", 0),
		NormEps:       getf("rms_norm_eps", 1e-6),
		Activation:    "silu",
	}
	c.KVHeads = geti("num_key_value_heads", c.Heads)
	c.HeadDim = geti("head_dim", c.HiddenSize/c.Heads)
	tied, ok := raw["tie_word_embeddings"].(bool)
	c.TiedEmbeddings = tied || (!ok && arch == "gemma3")
	if v, ok := num("sliding_window"); ok && (raw["use_sliding_window"] != false) {
		c.SlidingWindow = int(v)
	}
	if lt, ok := raw["layer_types"].([]any); ok && c.SlidingWindow > 0 {
		for _, v := range lt {
			s, _ := v.(string)
			switch s {
			case "sliding_attention":
				c.LayerTypes = append(c.LayerTypes, "sliding")
			case "full_attention":
				c.LayerTypes = append(c.LayerTypes, "full")
			default:
				return rdrr.Config{}, fmt.Errorf("layer_types: unknown %q", s)
			}
		}
	}
	var err error
	rp, _ := raw["rope_parameters"].(map[string]any)
	global, local := rp, map[string]any(nil)
	if fa, ok := rp["full_attention"].(map[string]any); ok {
		global = fa
		local, _ = rp["sliding_attention"].(map[string]any)
	}
	if global == nil {
		// Older spelling: rope_theta + rope_scaling.
		global = map[string]any{"rope_theta": getf("rope_theta", 10000)}
		if sc, ok := raw["rope_scaling"].(map[string]any); ok {
			for k, v := range sc {
				global[k] = v
			}
		}
		if lb, ok := num("rope_local_base_freq"); ok {
			local = map[string]any{"rope_theta": lb}
		}
	}
	if c.Rope, err = hfRoPE(global, c.HeadDim); err != nil {
		return rdrr.Config{}, err
	}
	if local != nil {
		r, err := hfRoPE(local, c.HeadDim)
		if err != nil {
			return rdrr.Config{}, err
		}
		c.RopeLocal = &r
	}
	if act, _ := raw["hidden_activation"].(string); act == "gelu_pytorch_tanh" {
		c.Activation = "gelu_tanh"
	}
	switch arch {
	case "gemma3":
		c.Activation = "gelu_tanh"
		c.NormAddOne = true
		c.QKNorm = true
		c.EmbedScale = float64(float32(math.Sqrt(float64(c.HiddenSize))))
		if q, ok := num("query_pre_attn_scalar"); ok {
			c.AttnScale = 1 / math.Sqrt(q)
		}
		c.AttnSoftcap = getf("attn_logit_softcapping", 0)
		c.FinalSoftcap = getf("final_logit_softcapping", 0)
		if c.SlidingWindow > 0 && len(c.LayerTypes) == 0 {
			p := geti("sliding_window_pattern", 6)
			for l := 0; l < c.Layers; l++ {
				if (l+1)%p == 0 {
					c.LayerTypes = append(c.LayerTypes, "full")
				} else {
					c.LayerTypes = append(c.LayerTypes, "sliding")
				}
			}
		}
	case "qwen3":
		c.QKNorm = true
	case "mixtral":
		c.Experts = geti("num_local_experts", 0)
		c.ExpertsUsed = geti("num_experts_per_tok", 0)
		c.ExpertFFN = c.FFN
		c.ExpertGating = "softmax"
	case "gpt-oss":
		c.Experts = geti("num_local_experts", geti("num_experts", 0))
		c.ExpertsUsed = geti("num_experts_per_tok", geti("experts_per_token", 0))
		c.ExpertFFN = c.FFN
		c.ExpertGating = "topk_softmax"
		c.Activation = "swiglu_oai"
		c.AttnSinks = true
	}
	if c.Experts > 0 && c.ExpertsUsed == 0 {
		return rdrr.Config{}, fmt.Errorf("num_experts_per_tok is missing")
	}
	if err := c.Validate(); err != nil {
		return rdrr.Config{}, err
	}
	return c, nil
}

func hfRoPE(p map[string]any, headDim int) (rdrr.RoPE, error) {
	f := func(k string, def float64) float64 {
		if v, ok := p[k].(float64); ok {
			return v
		}
		return def
	}
	r := rdrr.RoPE{Theta: f("rope_theta", 10000), Dim: int(float64(headDim) * f("partial_rotary_factor", 1)), Style: "neox"}
	typ, _ := p["rope_type"].(string)
	if typ == "" {
		typ, _ = p["type"].(string)
	}
	switch typ {
	case "", "default":
	case "linear":
		r.Scaling = &rdrr.RoPEScaling{Type: "linear", Factor: f("factor", 1)}
	case "llama3":
		r.Scaling = &rdrr.RoPEScaling{Type: "llama3", Factor: f("factor", 8), LowFreqFactor: f("low_freq_factor", 1),
			HighFreqFact: f("high_freq_factor", 4), OriginalCtx: int(f("original_max_position_embeddings", 8192))}
	case "yarn":
		tr, ok := p["truncate"].(bool)
		r.Scaling = &rdrr.RoPEScaling{Type: "yarn", Factor: f("factor", 1), OriginalCtx: int(f("original_max_position_embeddings", 0)),
			BetaFast: f("beta_fast", 32), BetaSlow: f("beta_slow", 1), AttnFactor: f("attention_factor", 0), Truncate: tr || !ok}
	default:
		return rdrr.RoPE{}, fmt.Errorf("unsupported rope_type %q", typ)
	}
	return r, nil
}
