//go:build cgo || js

package reference

import (
	"context"
	"fmt"

	"github.com/doppler-llm/doppler/engine/internal/ropeparams"
	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

// Options controls Load.
type Options struct {
	// Context is the KV-cache length in tokens (0: min(model context, 4096)).
	Context int
	// KVF32 keeps the KV cache in f32 (default: f16, as the engine's).
	KVF32 bool
	// LlamaCPU rounds activations as llama.cpp's CPU backend does (default:
	// none, as the engine's kernels).
	LlamaCPU LlamaCPU
	// Q8X rounds a one-token matmul's input as the engine does with its
	// Options.Q8X (kernels.QuantizeQ8Ref) where the weight takes it.
	Q8X bool
}

// LlamaCPU selects the activation roundings of llama.cpp's CPU backend.
type LlamaCPU struct {
	// MatMul quantizes each matmul's input row to its weight's vec_dot
	// type: Q8_0 blocks for Q8_0, Q4_0, Q5_0 and MXFP4 weights, Q8_K for
	// Q4_K and Q6_K, f16 for F16, bf16 for BF16; F32 weights take f32.
	MatMul bool
	// Attention rounds inside attention as llama.cpp does over an f16 KV
	// cache (default: not at all).
	Attention Attention
}

// Attention names how llama.cpp's CPU backend computes attention.
type Attention int

const (
	// AttnExact rounds nothing (the kernels' arithmetic).
	AttnExact Attention = iota
	// AttnMulMat is llama.cpp without flash attention: ggml's mul_mat
	// rounds q to f16 before q·k and the softmax probabilities to f16
	// before they weight v.
	AttnMulMat
	// AttnFlash is ggml-cpu's flash-attention kernel: q rounded to f16 and
	// the running weighted sum of v kept in f16.
	AttnFlash
)

// Model is a model's weights in host memory.
type Model struct {
	cfg       rdrr.Config
	opts      Options
	embed     *matrix
	output    *matrix
	outNorm   []float32
	layers    []layer
	rope      kernels.RoPEParams
	ropeLocal kernels.RoPEParams
	act       kernels.Act
	gating    kernels.Gating
}

// matrix is a weight as stored: rows × cols of dtype dt (experts of them
// back to back for an expert tensor).
type matrix struct {
	name       string
	dt         quant.DType
	rows, cols int
	experts    int
	data       []byte
}

type layer struct {
	attnNorm, ffnNorm         []float32
	qNorm, kNorm              []float32
	postAttnNorm, postFFNNorm []float32
	q, k, v, o                *matrix
	qBias, kBias, vBias       []float32
	oBias                     []float32
	sinks                     []float32
	gate, up, down            *matrix // dense FFN, or the experts' [E][…]
	gateBias, upBias          []float32
	downBias                  []float32
	router                    *matrix
	routerBias                []float32
}

// Load reads a model's weights into memory.
func Load(ctx context.Context, m *rdrr.Model, opts Options) (*Model, error) {
	cfg := m.Manifest.Config
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	if opts.Context <= 0 {
		opts.Context = 4096
		if cfg.ContextLength > 0 {
			opts.Context = min(cfg.ContextLength, 4096)
		}
	}
	fam, ok := families[cfg.Architecture]
	if !ok {
		return nil, fmt.Errorf("reference: unsupported architecture %q", cfg.Architecture)
	}
	md := &Model{cfg: cfg, opts: opts, act: kernels.SiLU, gating: kernels.GatingSoftmax}
	switch cfg.Activation {
	case "silu", "":
	case "gelu_tanh":
		md.act = kernels.GELUTanh
	case "swiglu_oai":
		md.act = kernels.SwiGLUOAI
	default:
		return nil, fmt.Errorf("reference: unknown activation %q", cfg.Activation)
	}
	switch cfg.ExpertGating {
	case "softmax", "":
	case "topk_softmax":
		md.gating = kernels.GatingTopKSoftmax
	default:
		return nil, fmt.Errorf("reference: unknown expert gating %q", cfg.ExpertGating)
	}
	var err error
	if md.rope, err = ropeparams.Params(cfg.Rope); err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	md.ropeLocal = md.rope
	if cfg.RopeLocal != nil {
		if md.ropeLocal, err = ropeparams.Params(*cfg.RopeLocal); err != nil {
			return nil, fmt.Errorf("reference: %w", err)
		}
	}
	r := &reader{ctx: ctx, m: m}
	md.embed = r.matrix("token_embd.weight", 0, cfg.VocabSize, cfg.HiddenSize)
	md.outNorm = r.vector("output_norm.weight", cfg.HiddenSize)
	if _, ok := m.Tensor("output.weight"); ok && !cfg.TiedEmbeddings {
		md.output = r.matrix("output.weight", 0, cfg.VocabSize, cfg.HiddenSize)
	} else {
		md.output = md.embed
	}
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	moe := cfg.Experts > 0
	for i := range cfg.Layers {
		p := func(s string) string { return fmt.Sprintf("blk.%d.%s", i, s) }
		has := func(s string) bool { _, ok := m.Tensor(p(s)); return ok }
		var ly layer
		ly.attnNorm = r.vector(p("attn_norm.weight"), cfg.HiddenSize)
		ly.ffnNorm = r.vector(p("ffn_norm.weight"), cfg.HiddenSize)
		if cfg.QKNorm {
			ly.qNorm = r.vector(p("attn_q_norm.weight"), cfg.HeadDim)
			ly.kNorm = r.vector(p("attn_k_norm.weight"), cfg.HeadDim)
		}
		if fam.sandwich {
			ly.postAttnNorm = r.vector(p("post_attention_norm.weight"), cfg.HiddenSize)
			ly.postFFNNorm = r.vector(p("post_ffw_norm.weight"), cfg.HiddenSize)
		}
		if cfg.AttnSinks {
			ly.sinks = r.vector(p("attn_sinks.weight"), cfg.Heads)
		}
		ly.q = r.matrix(p("attn_q.weight"), 0, qDim, cfg.HiddenSize)
		ly.k = r.matrix(p("attn_k.weight"), 0, kvDim, cfg.HiddenSize)
		ly.v = r.matrix(p("attn_v.weight"), 0, kvDim, cfg.HiddenSize)
		ly.o = r.matrix(p("attn_output.weight"), 0, cfg.HiddenSize, qDim)
		if fam.attnBias {
			ly.qBias = r.vector(p("attn_q.bias"), qDim)
			ly.kBias = r.vector(p("attn_k.bias"), kvDim)
			ly.vBias = r.vector(p("attn_v.bias"), kvDim)
		}
		if fam.attnBias {
			ly.oBias = r.vector(p("attn_output.bias"), cfg.HiddenSize)
		}
		if moe {
			E, ffn := cfg.Experts, cfg.ExpertFFN
			ly.router = r.matrix(p("ffn_gate_inp.weight"), 0, E, cfg.HiddenSize)
			if has("ffn_gate_inp.bias") {
				ly.routerBias = r.vector(p("ffn_gate_inp.bias"), E)
			}
			ly.gate = r.matrix(p("ffn_gate_exps.weight"), E, ffn, cfg.HiddenSize)
			ly.up = r.matrix(p("ffn_up_exps.weight"), E, ffn, cfg.HiddenSize)
			ly.down = r.matrix(p("ffn_down_exps.weight"), E, cfg.HiddenSize, ffn)
			if has("ffn_gate_exps.bias") {
				ly.gateBias = r.vector(p("ffn_gate_exps.bias"), E, ffn)
				ly.upBias = r.vector(p("ffn_up_exps.bias"), E, ffn)
				ly.downBias = r.vector(p("ffn_down_exps.bias"), E, cfg.HiddenSize)
			}
		} else {
			ly.gate = r.matrix(p("ffn_gate.weight"), 0, cfg.FFN, cfg.HiddenSize)
			ly.up = r.matrix(p("ffn_up.weight"), 0, cfg.FFN, cfg.HiddenSize)
			ly.down = r.matrix(p("ffn_down.weight"), 0, cfg.HiddenSize, cfg.FFN)
		}
		md.layers = append(md.layers, ly)
	}
	if r.err != nil {
		return nil, fmt.Errorf("reference: %w", r.err)
	}
	return md, nil
}

// Config is the model's configuration.
func (m *Model) Config() rdrr.Config { return m.cfg }

// reader reads tensors, keeping the first error.
type reader struct {
	ctx context.Context
	m   *rdrr.Model
	err error
}

func (r *reader) read(name string, shape ...int) (*rdrr.Tensor, []byte) {
	if r.err != nil {
		return nil, nil
	}
	t, ok := r.m.Tensor(name)
	if !ok {
		r.err = fmt.Errorf("tensor %s is missing", name)
		return nil, nil
	}
	want := make([]int64, len(shape))
	for i, s := range shape {
		want[i] = int64(s)
	}
	if fmt.Sprint(t.Shape) != fmt.Sprint(want) {
		r.err = fmt.Errorf("tensor %s has shape %v, want %v", name, t.Shape, want)
		return nil, nil
	}
	b, err := r.m.ReadTensor(r.ctx, name)
	if err != nil {
		r.err = err
		return nil, nil
	}
	return t, b
}

// vector reads a tensor of any dtype as f32.
func (r *reader) vector(name string, shape ...int) []float32 {
	t, b := r.read(name, shape...)
	if t == nil {
		return nil
	}
	n := 1
	for _, s := range shape {
		n *= s
	}
	f := make([]float32, n)
	if err := quant.Dequantize(t.DType, b, f); err != nil {
		r.err = fmt.Errorf("tensor %s: %w", name, err)
	}
	return f
}

// matrix reads a weight as stored; experts > 0 reads an expert tensor
// [experts][rows][cols].
func (r *reader) matrix(name string, experts, rows, cols int) *matrix {
	shape := []int{rows, cols}
	if experts > 0 {
		shape = []int{experts, rows, cols}
	}
	t, b := r.read(name, shape...)
	if t == nil {
		return nil
	}
	return &matrix{name: name, dt: t.DType, rows: rows, cols: cols, experts: experts, data: b}
}

// families maps each architecture the engine runs to what it adds to the
// shared block, as the engine's family table does.
var families = map[string]struct{ sandwich, attnBias bool }{
	"llama": {}, "mistral": {}, "qwen3": {}, "mixtral": {},
	"gemma3":  {sandwich: true},
	"gpt-oss": {attnBias: true},
}
