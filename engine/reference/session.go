//go:build cgo || js

package reference

import (
	"errors"
	"fmt"
	"math"

	"github.com/doppler-llm/doppler/kernels"
)

// Session is one sequence's state: the KV cache and its position.
type Session struct {
	m   *Model
	pos int
	// kc, vc: per layer, the cache as the kernels hold it, decoded:
	// [kvHeads][context][headDim], rounded through f16 unless KVF32.
	kc, vc [][]float32
}

// NewSession returns an empty session.
func (m *Model) NewSession() *Session {
	c := m.cfg
	s := &Session{m: m}
	for range c.Layers {
		s.kc = append(s.kc, make([]float32, c.KVHeads*m.opts.Context*c.HeadDim))
		s.vc = append(s.vc, make([]float32, c.KVHeads*m.opts.Context*c.HeadDim))
	}
	return s
}

// Pos is the number of tokens in the KV cache.
func (s *Session) Pos() int { return s.pos }

// Forward runs ids through the model as one batch, as the engine's
// prefill does, and returns the logits of the last.
func (s *Session) Forward(ids []int) ([]float32, error) {
	all, err := s.forward(ids, false)
	if err != nil {
		return nil, err
	}
	return all[len(all)-1], nil
}

// ForwardAll runs ids as one batch and returns the logits of every
// position.
func (s *Session) ForwardAll(ids []int) ([][]float32, error) { return s.forward(ids, true) }

func (s *Session) forward(ids []int, all bool) ([][]float32, error) {
	md, c := s.m, s.m.cfg
	m := len(ids)
	if m == 0 {
		return nil, errors.New("reference: no tokens")
	}
	if s.pos+m > md.opts.Context {
		return nil, fmt.Errorf("reference: %d tokens in the cache + %d new > %d", s.pos, m, md.opts.Context)
	}
	u := make([]uint32, m)
	for i, id := range ids {
		if id < 0 || id >= c.VocabSize {
			return nil, fmt.Errorf("reference: token id %d outside the %d-token vocabulary", id, c.VocabSize)
		}
		u[i] = uint32(id)
	}
	scale := float32(1)
	if c.EmbedScale != 0 {
		scale = float32(c.EmbedScale)
	}
	x, err := kernels.EmbedRef(md.embed.dt, md.embed.data, md.embed.rows, md.embed.cols, u, scale)
	if err != nil {
		return nil, fmt.Errorf("reference: embed: %w", err)
	}
	eps := float32(c.NormEps)
	hidden := c.HiddenSize
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	attnScale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	if c.AttnScale != 0 {
		attnScale = float32(c.AttnScale)
	}
	pos0 := s.pos
	ctxLen := md.opts.Context
	f16 := !md.opts.KVF32
	// residual adds a block's output (w·in + b) to x: straight, or through
	// a post norm (sandwich).
	residual := func(w *matrix, in []float32, b, post []float32) {
		if post == nil {
			x = md.matmul(w, in, m, b, x)
			return
		}
		t := md.matmul(w, in, m, b, nil)
		x = kernels.AddRef(x, kernels.RMSNormRef(t, post, m, hidden, eps, c.NormAddOne))
	}
	for l, ly := range md.layers {
		rope := md.rope
		if c.LayerSliding(l) {
			rope = md.ropeLocal
		}
		xn := kernels.RMSNormRef(x, ly.attnNorm, m, hidden, eps, c.NormAddOne)
		q := md.matmul(ly.q, xn, m, ly.qBias, nil)
		k := md.matmul(ly.k, xn, m, ly.kBias, nil)
		v := md.matmul(ly.v, xn, m, ly.vBias, nil)
		if c.QKNorm {
			q = kernels.RMSNormRef(q, ly.qNorm, m*c.Heads, c.HeadDim, eps, c.NormAddOne)
			k = kernels.RMSNormRef(k, ly.kNorm, m*c.KVHeads, c.HeadDim, eps, c.NormAddOne)
		}
		q = kernels.RoPERef(q, pos0, m, c.Heads, c.HeadDim, qDim, rope)
		k = kernels.RoPERef(k, pos0, m, c.KVHeads, c.HeadDim, kvDim, rope)
		kernels.KVStoreRef(s.kc[l], k, pos0, m, c.KVHeads, c.HeadDim, ctxLen, kvDim, f16)
		kernels.KVStoreRef(s.vc[l], v, pos0, m, c.KVHeads, c.HeadDim, ctxLen, kvDim, f16)
		window := 0
		if c.LayerSliding(l) && c.SlidingWindow < ctxLen {
			window = c.SlidingWindow
		}
		kp, vp := s.plain(l, pos0+m)
		var att []float32
		switch md.opts.LlamaCPU.Attention {
		case AttnFlash:
			att = llamaFlashAttention(q, kp, vp, ly.sinks, m, pos0, c.Heads, c.KVHeads, c.HeadDim, attnScale, window, float32(c.AttnSoftcap))
		case AttnMulMat:
			att = llamaAttention(q, kp, vp, ly.sinks, m, pos0, c.Heads, c.KVHeads, c.HeadDim, attnScale, window, float32(c.AttnSoftcap))
		default:
			att = kernels.AttentionRef(q, kp, vp, ly.sinks, m, pos0, c.Heads, c.KVHeads, c.HeadDim, attnScale, window, float32(c.AttnSoftcap))
		}
		residual(ly.o, att, ly.oBias, ly.postAttnNorm)
		xn = kernels.RMSNormRef(x, ly.ffnNorm, m, hidden, eps, c.NormAddOne)
		if ly.router != nil {
			x = md.moe(ly, xn, m, x)
			continue
		}
		gu := stack(md.matmul(ly.gate, xn, m, nil, nil), md.matmul(ly.up, xn, m, nil, nil), m, c.FFN)
		h := kernels.GatedActRef(gu, m, c.FFN, 2*c.FFN, c.FFN, md.act)
		residual(ly.down, h, nil, ly.postFFNNorm)
	}
	s.pos += m
	rows := 1
	if all {
		rows = m
	} else {
		x = x[(m-1)*hidden:]
	}
	xn := kernels.RMSNormRef(x, md.outNorm, rows, hidden, eps, c.NormAddOne)
	flat := md.matmul(md.output, xn, rows, nil, nil)
	out := make([][]float32, rows)
	for i := range out {
		out[i] = flat[i*c.VocabSize : (i+1)*c.VocabSize]
	}
	return out, nil
}

// moe is a mixture-of-experts FFN over xn, added to x: routing, each
// chosen expert's gated FFN, and their weighted sum.
func (md *Model) moe(ly layer, xn []float32, m int, x []float32) []float32 {
	c := md.cfg
	k, ffn, E := c.ExpertsUsed, c.ExpertFFN, c.Experts
	logits := md.matmul(ly.router, xn, m, ly.routerBias, nil)
	sel, wts := kernels.MoERouteRef(logits, m, E, k, md.gating)
	g := md.experts(ly.gate, xn, sel, m, k, false, ly.gateBias)
	u := md.experts(ly.up, xn, sel, m, k, false, ly.upBias)
	h := kernels.GatedActRef(stack(g, u, m*k, ffn), m*k, ffn, 2*ffn, ffn, md.act)
	y := md.experts(ly.down, h, sel, m, k, true, ly.downBias)
	return kernels.MoECombineRef(y, wts, m, k, c.HiddenSize, x)
}

// stack puts, per row, a's n values then b's: [rows][a | b].
func stack(a, b []float32, rows, n int) []float32 {
	out := make([]float32, 0, 2*rows*n)
	for r := range rows {
		out = append(out, a[r*n:(r+1)*n]...)
		out = append(out, b[r*n:(r+1)*n]...)
	}
	return out
}

// matmul is w·x (+ bias) (+ acc) for m rows of x, with x first rounded as
// llama.cpp rounds it when that is asked for.
func (md *Model) matmul(w *matrix, x []float32, m int, bias, acc []float32) []float32 {
	switch {
	case md.opts.LlamaCPU.MatMul:
		x = roundRows(w.dt, x, m, w.cols)
	case md.opts.Q8X && m == 1 && kernels.Q8XShape(w.dt, w.cols):
		x = kernels.DequantizeQ8Ref(kernels.QuantizeQ8Ref(x, 1, w.cols), 1, w.cols)
	}
	return kernels.MatMulRef(w.dt, w.data, w.rows, w.cols, x, m, bias, acc)
}

// experts is MatMulExperts over the chosen experts (x rounded likewise).
func (md *Model) experts(w *matrix, x []float32, sel []uint32, m, k int, xPerSlot bool, bias []float32) []float32 {
	if md.opts.LlamaCPU.MatMul {
		n := m
		if xPerSlot {
			n = m * k
		}
		x = roundRows(w.dt, x, n, w.cols)
	}
	return kernels.MatMulExpertsRef(w.dt, w.data, w.experts, w.rows, w.cols, x, sel, m, k, xPerSlot, bias)
}

// plain returns layer l's cached K and V for positions [0, n) as
// AttentionRef takes them: position p at row p, [n][kvHeads·headDim].
func (s *Session) plain(l, n int) (k, v []float32) {
	c := s.m.cfg
	hd, ctxLen := c.HeadDim, s.m.opts.Context
	k = make([]float32, n*c.KVHeads*hd)
	v = make([]float32, n*c.KVHeads*hd)
	for p := range n {
		for h := range c.KVHeads {
			src := (h*ctxLen + p) * hd
			dst := (p*c.KVHeads + h) * hd
			copy(k[dst:dst+hd], s.kc[l][src:src+hd])
			copy(v[dst:dst+hd], s.vc[l][src:src+hd])
		}
	}
	return k, v
}

// KV returns the cached K and V values of positions [0, n) in the layout
// of the engine's ExportKV — for each layer, K then V, for each KV head,
// positions 0..n-1, each head_dim values — as float32 (f16 values
// decoded).
func (s *Session) KV(n int) ([]float32, error) {
	if n < 0 || n > s.pos {
		return nil, fmt.Errorf("reference: KV of %d positions from a cache holding %d", n, s.pos)
	}
	c := s.m.cfg
	hd, ctxLen := c.HeadDim, s.m.opts.Context
	out := make([]float32, 0, c.Layers*2*c.KVHeads*n*hd)
	for l := range c.Layers {
		for _, cache := range [][]float32{s.kc[l], s.vc[l]} {
			for h := range c.KVHeads {
				out = append(out, cache[h*ctxLen*hd:][:n*hd]...)
			}
		}
	}
	return out, nil
}

// SetKV replaces the cache with positions [0, n) from kv (KV's layout)
// and sets the position to n: a test can continue from the engine's own
// cache, so that an f16 rounding the two took apart (a value within an
// ulp of a rounding boundary) does not carry into later steps.
func (s *Session) SetKV(n int, kv []float32) error {
	c := s.m.cfg
	hd, ctxLen := c.HeadDim, s.m.opts.Context
	if n < 0 || n > ctxLen || len(kv) != c.Layers*2*c.KVHeads*n*hd {
		return fmt.Errorf("reference: %d KV values for %d positions", len(kv), n)
	}
	off := 0
	for l := range c.Layers {
		for _, cache := range [][]float32{s.kc[l], s.vc[l]} {
			for h := range c.KVHeads {
				copy(cache[h*ctxLen*hd:][:n*hd], kv[off:off+n*hd])
				off += n * hd
			}
		}
	}
	s.pos = n
	return nil
}
