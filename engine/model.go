//go:build cgo || js

package engine

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"strings"

	"github.com/doppler-llm/doppler/engine/internal/ropeparams"
	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

// Options controls Load.
type Options struct {
	// Context is the KV-cache length in tokens; 0 = min(model context, 4096).
	Context int
	// KVF32 keeps the KV cache in f32 instead of f16.
	KVF32 bool
	// Q8X rounds the input of each decode-step matrix product whose
	// weight has an integer-dot kernel (kernels.Weight.CanQ8X: Q4_K) to
	// 8 bits in blocks of 32, as llama.cpp's GPU backends do, and runs
	// the product on packed 8-bit dot products.
	Q8X bool
	// RoPEInAttention rotates q and k and writes the KV cache inside the
	// decode attention's first dispatch (kernels.AttnOpts.RoPE) instead
	// of a RoPEKV dispatch before it: one dispatch a layer fewer. Off by
	// default: on an H100 it made the 8B shape's decode slower
	// (docs/BENCHMARKS.md, tenth session).
	RoPEInAttention bool
	// Batch is the most prompt tokens one prefill pass takes; 0 = 256.
	Batch int
	// ExpertCache keeps at most this many experts of each MoE layer on the
	// GPU, paging the rest in on demand; 0 = all resident. Below the
	// experts used per token it is raised to that, with a warning.
	ExpertCache int
	// ExpertVRAM bounds the bytes of resident experts (all layers); 0 = no bound.
	ExpertVRAM int64
	// OnRoute, when set, is told each token's experts of each MoE layer
	// (paging mode only: the choices are read back there anyway).
	OnRoute func(layer int, experts []int)
	// ExpertHints, when set, names experts to read ahead once a layer's
	// experts are known (say, the rest of a cluster the choice belongs to).
	ExpertHints func(layer int, experts []int) []ExpertRef
	// Logger receives the model's warnings and paging notes (nil: discard).
	Logger *slog.Logger
}

// Model is a model loaded onto the GPU.
type Model struct {
	Config rdrr.Config
	fam    family
	dev    *kernels.Device
	log    *slog.Logger
	opts   Options

	embed   *kernels.Weight
	outNorm *kernels.Buffer
	output  *kernels.Weight
	layers  []layer
	pager   *pager // nil when every expert is resident
	// everything uploaded, for Close
	weights   []interface{ Release() }
	buffers   []*kernels.Buffer
	rope      kernels.RoPEParams
	ropeLocal kernels.RoPEParams // sliding layers, when their RoPE differs
	bytes     uint64             // weight bytes uploaded
}

type layer struct {
	attnNorm, ffnNorm         *kernels.Buffer
	qNorm, kNorm              *kernels.Buffer // per-head, [head_dim] (qk_norm)
	postAttnNorm, postFFNNorm *kernels.Buffer // sandwich norms
	q, k, v, o                *kernels.Weight
	qBias, kBias, vBias       *kernels.Buffer
	// qkv, when set, replaces q, k and v: their rows stacked into one
	// matrix (and their biases into qkvBias), so one matmul computes all
	// three (RoPEKV finds them in one buffer either way).
	qkv     *kernels.Weight
	qkvBias *kernels.Buffer
	oBias   *kernels.Buffer
	sinks   *kernels.Buffer
	gateUp  *kernels.Weight // fused [gate; up]
	down    *kernels.Weight
	moe     *moeLayer
}

// moeLayer is a mixture-of-experts FFN: a router and, per expert, fused
// [gate; up] and down matrices (with optional biases).
type moeLayer struct {
	router       *kernels.Weight
	routerBias   *kernels.Buffer
	gateUp, down *kernels.ExpertWeight
	gateUpBias   *kernels.Buffer // [experts][2·ffn]
	downBias     *kernels.Buffer // [experts][hidden]
	gating       kernels.Gating
}

// Load uploads a model's weights to the GPU.
func Load(ctx context.Context, dev *kernels.Device, m *rdrr.Model, opts Options) (*Model, error) {
	cfg := m.Manifest.Config
	fam, ok := families[cfg.Architecture]
	if !ok {
		return nil, fmt.Errorf("unsupported architecture %q (supported: %s)", cfg.Architecture, strings.Join(supportedArchitectures(), ", "))
	}
	if cfg.Experts > 0 && !fam.moe {
		return nil, fmt.Errorf("architecture %q with %d experts: MoE is not supported for it", cfg.Architecture, cfg.Experts)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ExpertCache < 0 || opts.ExpertVRAM < 0 {
		return nil, fmt.Errorf("expert cache %d / VRAM %d must not be negative", opts.ExpertCache, opts.ExpertVRAM)
	}
	if opts.Batch <= 0 {
		opts.Batch = 256
	}
	if opts.Context <= 0 {
		opts.Context = 4096
		if cfg.ContextLength > 0 {
			opts.Context = min(cfg.ContextLength, 4096)
		}
	}
	md := &Model{Config: cfg, fam: fam, dev: dev, log: opts.Logger, opts: opts}
	l := &loader{ctx: ctx, m: m, dev: dev, md: md}
	slots := expertSlots(opts, cfg, bytesPerExpert(m.Manifest), func(msg string, args ...any) { opts.Logger.Warn(msg, args...) })
	l.paging = slots > 0
	var err error
	if md.rope, err = ropeparams.Params(cfg.Rope); err != nil {
		return nil, err
	}
	md.ropeLocal = md.rope
	if cfg.RopeLocal != nil {
		if md.ropeLocal, err = ropeparams.Params(*cfg.RopeLocal); err != nil {
			return nil, err
		}
	}
	if md.embed, err = l.matrix("token_embd.weight", cfg.VocabSize, cfg.HiddenSize); err != nil {
		return nil, err
	}
	if md.outNorm, err = l.vector("output_norm.weight", cfg.HiddenSize); err != nil {
		return nil, err
	}
	if _, ok := m.Tensor("output.weight"); ok && !cfg.TiedEmbeddings {
		if md.output, err = l.matrix("output.weight", cfg.VocabSize, cfg.HiddenSize); err != nil {
			return nil, err
		}
	} else {
		md.output = md.embed
	}
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	for i := 0; i < cfg.Layers; i++ {
		p := func(s string) string { return fmt.Sprintf("blk.%d.%s", i, s) }
		var ly layer
		if ly.attnNorm, err = l.vector(p("attn_norm.weight"), cfg.HiddenSize); err != nil {
			return nil, err
		}
		if ly.ffnNorm, err = l.vector(p("ffn_norm.weight"), cfg.HiddenSize); err != nil {
			return nil, err
		}
		if cfg.QKNorm {
			if ly.qNorm, err = l.vector(p("attn_q_norm.weight"), cfg.HeadDim); err != nil {
				return nil, err
			}
			if ly.kNorm, err = l.vector(p("attn_k_norm.weight"), cfg.HeadDim); err != nil {
				return nil, err
			}
		}
		if fam.sandwich {
			if ly.postAttnNorm, err = l.vector(p("post_attention_norm.weight"), cfg.HiddenSize); err != nil {
				return nil, err
			}
			if ly.postFFNNorm, err = l.vector(p("post_ffw_norm.weight"), cfg.HiddenSize); err != nil {
				return nil, err
			}
		}
		if cfg.AttnSinks {
			if ly.sinks, err = l.vector(p("attn_sinks.weight"), cfg.Heads); err != nil {
				return nil, err
			}
		}
		qkvNames := []string{p("attn_q.weight"), p("attn_k.weight"), p("attn_v.weight")}
		if md.canFuseQKV() && l.sameDType(qkvNames...) {
			if ly.qkv, err = l.fused(p("attn_qkv"), cfg.HiddenSize,
				part{qkvNames[0], qDim}, part{qkvNames[1], kvDim}, part{qkvNames[2], kvDim}); err != nil {
				return nil, err
			}
			if fam.attnBias {
				var b []byte
				for _, n := range []struct {
					name string
					n    int64
				}{{"attn_q.bias", int64(qDim)}, {"attn_k.bias", int64(kvDim)}, {"attn_v.bias", int64(kvDim)}} {
					f, err := l.f32(p(n.name), n.n)
					if err != nil {
						return nil, err
					}
					b = append(b, f...)
				}
				if ly.qkvBias, err = l.upload(p("attn_qkv.bias"), b); err != nil {
					return nil, err
				}
			}
		} else {
			if ly.q, err = l.matrix(qkvNames[0], qDim, cfg.HiddenSize); err != nil {
				return nil, err
			}
			if ly.k, err = l.matrix(qkvNames[1], kvDim, cfg.HiddenSize); err != nil {
				return nil, err
			}
			if ly.v, err = l.matrix(qkvNames[2], kvDim, cfg.HiddenSize); err != nil {
				return nil, err
			}
			if fam.attnBias {
				for _, b := range []struct {
					dst  **kernels.Buffer
					name string
					n    int
				}{{&ly.qBias, "attn_q.bias", qDim}, {&ly.kBias, "attn_k.bias", kvDim}, {&ly.vBias, "attn_v.bias", kvDim}} {
					if *b.dst, err = l.vector(p(b.name), b.n); err != nil {
						return nil, err
					}
				}
			}
		}
		if fam.attnBias {
			if ly.oBias, err = l.vector(p("attn_output.bias"), cfg.HiddenSize); err != nil {
				return nil, err
			}
		}
		if ly.o, err = l.matrix(p("attn_output.weight"), cfg.HiddenSize, qDim); err != nil {
			return nil, err
		}
		if fam.moe {
			if ly.moe, err = l.moe(i); err != nil {
				return nil, err
			}
			md.layers = append(md.layers, ly)
			continue
		}
		if ly.gateUp, err = l.fused(p("ffn_gate_up"), cfg.HiddenSize,
			part{p("ffn_gate.weight"), cfg.FFN}, part{p("ffn_up.weight"), cfg.FFN}); err != nil {
			return nil, err
		}
		if ly.down, err = l.matrix(p("ffn_down.weight"), cfg.HiddenSize, cfg.FFN); err != nil {
			return nil, err
		}
		md.layers = append(md.layers, ly)
	}
	if slots > 0 {
		if md.pager, err = newPager(ctx, md, m, slots); err != nil {
			return nil, err
		}
		opts.Logger.Info("expert paging", "resident per layer", slots, "of", cfg.Experts)
	}
	return md, nil
}

// ExpertRef names one expert of one layer.
type ExpertRef struct{ Layer, Expert int }

// bytesPerExpert is the size of one expert of one layer (all its tensors).
func bytesPerExpert(m *rdrr.Manifest) int64 {
	var n int64
	for _, t := range m.Tensors {
		if t.Experts > 0 && strings.HasPrefix(t.Name, "blk.0.") {
			n += t.Size / int64(t.Experts)
		}
	}
	return n
}

// Close frees the model's GPU memory (its sessions must be closed first).
func (m *Model) Close() {
	m.dev.Sync() // flush queued writes before buffers go (kernels.Device.Sync)
	if m.pager != nil {
		m.pager.release()
		m.pager = nil
	}
	for _, w := range m.weights {
		w.Release()
	}
	for _, b := range m.buffers {
		b.Release()
	}
	m.weights, m.buffers = nil, nil
}

// Paging returns the expert paging counters (zero without paging).
func (m *Model) Paging() PagingStats {
	if m.pager == nil {
		return PagingStats{}
	}
	return m.pager.stats
}

// canFuseQKV reports whether q, k and v can live in one stacked matrix:
// not when a per-head norm sits between the matmul and RoPE.
func (m *Model) canFuseQKV() bool { return !m.Config.QKNorm }

// WeightBytes is the size of the weights on the GPU.
func (m *Model) WeightBytes() uint64 { return m.bytes }

// Device returns the GPU the model lives on.
func (m *Model) Device() *kernels.Device { return m.dev }

type loader struct {
	paging bool // experts are paged in, not uploaded at load
	ctx    context.Context
	m      *rdrr.Model
	dev    *kernels.Device
	md     *Model
}

func (l *loader) tensor(name string, shape ...int64) (*rdrr.Tensor, []byte, error) {
	t, ok := l.m.Tensor(name)
	if !ok {
		return nil, nil, fmt.Errorf("tensor %s is missing", name)
	}
	if fmt.Sprint(t.Shape) != fmt.Sprint(shape) {
		return nil, nil, fmt.Errorf("tensor %s has shape %v, want %v", name, t.Shape, shape)
	}
	b, err := l.m.ReadTensor(l.ctx, name)
	if err != nil {
		return nil, nil, err
	}
	return t, b, nil
}

// vector uploads a 1-D tensor as f32.
func (l *loader) vector(name string, n int) (*kernels.Buffer, error) {
	t, b, err := l.tensor(name, int64(n))
	if err != nil {
		return nil, err
	}
	f := make([]float32, n)
	if err := quant.Dequantize(t.DType, b, f); err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	return l.upload(name, f32Bytes(f))
}

// f32Bytes is the little-endian encoding of f.
func f32Bytes(f []float32) []byte {
	raw := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return raw
}

// matrix uploads a 2-D weight in its stored dtype.
func (l *loader) matrix(name string, rows, cols int) (*kernels.Weight, error) {
	t, b, err := l.tensor(name, int64(rows), int64(cols))
	if err != nil {
		return nil, err
	}
	w, err := l.dev.UploadWeight(name, t.DType, rows, cols, b)
	if err != nil {
		return nil, err
	}
	l.md.weights = append(l.md.weights, w)
	l.md.bytes += w.Bytes()
	return w, nil
}

// sameDType reports whether the named tensors share one dtype.
func (l *loader) sameDType(names ...string) bool {
	var dt quant.DType
	for i, n := range names {
		t, ok := l.m.Tensor(n)
		if !ok || (i > 0 && t.DType != dt) {
			return false
		}
		dt = t.DType
	}
	return true
}

type part struct {
	name string
	rows int
}

// fused uploads several weights of one dtype with the same input size as
// one matrix (their rows stacked), so one matmul computes them all.
func (l *loader) fused(name string, cols int, parts ...part) (*kernels.Weight, error) {
	var dt quant.DType
	for i, p := range parts {
		t, ok := l.m.Tensor(p.name)
		if !ok {
			return nil, fmt.Errorf("tensor %s is missing", p.name)
		}
		if i == 0 {
			dt = t.DType
		} else if t.DType != dt {
			return nil, fmt.Errorf("tensors %s (%s) and %s (%s) must share a dtype", parts[0].name, dt, p.name, t.DType)
		}
	}
	var data []byte
	rows := 0
	for _, p := range parts {
		_, b, err := l.tensor(p.name, int64(p.rows), int64(cols))
		if err != nil {
			return nil, err
		}
		data = append(data, b...)
		rows += p.rows
	}
	w, err := l.dev.UploadWeight(name, dt, rows, cols, data)
	if err != nil {
		return nil, err
	}
	l.md.weights = append(l.md.weights, w)
	l.md.bytes += w.Bytes()
	return w, nil
}
