//go:build cgo || js

package engine

import (
	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/rdrr"
)

// qkvLayout places the q, k and v rows of up to n tokens in one buffer:
// stacked, one row of the fused [q; k; v] matmul per token (layers whose
// three matrices share a dtype), or as three blocks, q then k then v, at
// bindable offsets (the outputs of three matmuls). A model may mix both
// (Q4_K_M files often keep v in Q6_K), so the buffer is sized for either;
// one buffer lets one RoPEKV dispatch rotate q and k and fill the caches.
type qkvLayout struct {
	qDim, kvDim    int
	rowS           int // stacked: f32 per token
	qS, kS         int // blocks: f32 per token in the q block, in the k and v blocks
	kBlock, vBlock int // blocks: the f32 index where the k and v blocks start
	size           int // f32 values in the buffer
}

// newQKVLayout sizes the layout for n tokens; align is the binding offset
// alignment in f32 values.
func newQKVLayout(c rdrr.Config, n, align int) qkvLayout {
	pad := func(v int) int { return (v + align - 1) / align * align }
	l := qkvLayout{qDim: c.Heads * c.HeadDim, kvDim: c.KVHeads * c.HeadDim}
	l.rowS, l.qS, l.kS = l.qDim+2*l.kvDim, l.qDim, l.kvDim
	l.kBlock = pad(n * l.qS)
	l.vBlock = l.kBlock + pad(n*l.kS)
	l.size = max(n*l.rowS, l.vBlock+n*l.kS)
	return l
}

// rows is where m tokens from token first on lie.
func (l qkvLayout) rows(c rdrr.Config, stacked bool, m, first int) kernels.QKVRows {
	r := kernels.QKVRows{M: m, Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim}
	if stacked {
		r.QOff, r.QStride = first*l.rowS, l.rowS
		r.KOff, r.KStride = r.QOff+l.qDim, l.rowS
		r.VOff, r.VStride = r.KOff+l.kvDim, l.rowS
		return r
	}
	r.QOff, r.QStride = first*l.qS, l.qS
	r.KOff, r.KStride = l.kBlock+first*l.kS, l.kS
	r.VOff, r.VStride = l.vBlock+first*l.kS, l.kS
	return r
}

// at is buf from f32 index off on.
func at(buf *kernels.Buffer, off int) kernels.BufferRange {
	return kernels.BufferRange{Buf: buf, Offset: uint64(off) * 4}
}

// matmulFn is MatMul (a session) or MatMulBatch (a batch step) over the
// pass's tokens of the normed activations, into out, with an optional
// bias.
type matmulFn func(w *kernels.Weight, out kernels.BufferRange, bias *kernels.Buffer) ([]*kernels.Op, error)

// qkvOps builds the ops that fill qkv (laid out by rows) with n tokens'
// q, k and v of layer ly: one matmul where the layer fuses the three,
// else three, q and k first into qRaw and kRaw when per-head norms
// (QKNorm) follow.
func (m *Model) qkvOps(ly *layer, mm matmulFn, qkv, qRaw, kRaw *kernels.Buffer, rows kernels.QKVRows, n int) ([]*kernels.Op, error) {
	if ly.qkv != nil {
		return mm(ly.qkv, whole(qkv), ly.qkvBias)
	}
	c := m.Config
	q, k := at(qkv, rows.QOff), at(qkv, rows.KOff)
	if c.QKNorm {
		q, k = whole(qRaw), whole(kRaw)
	}
	var ops []*kernels.Op
	for _, p := range []struct {
		w    *kernels.Weight
		out  kernels.BufferRange
		bias *kernels.Buffer
	}{{ly.q, q, ly.qBias}, {ly.k, k, ly.kBias}, {ly.v, at(qkv, rows.VOff), ly.vBias}} {
		o, err := mm(p.w, p.out, p.bias)
		if err != nil {
			releaseOps(ops)
			return nil, err
		}
		ops = append(ops, o...)
	}
	if !c.QKNorm {
		return ops, nil
	}
	for _, p := range []struct {
		raw, norm *kernels.Buffer
		off, rows int
	}{{qRaw, ly.qNorm, rows.QOff, n * c.Heads}, {kRaw, ly.kNorm, rows.KOff, n * c.KVHeads}} {
		op, err := m.dev.RMSNorm(whole(p.raw), whole(p.norm), at(qkv, p.off), p.rows, c.HeadDim, float32(c.NormEps), c.NormAddOne)
		if err != nil {
			releaseOps(ops)
			return nil, err
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// qkvWeights are the layer's q, k and v products: one stacked weight or
// three.
func (ly *layer) qkvWeights() []*kernels.Weight {
	if ly.qkv != nil {
		return []*kernels.Weight{ly.qkv}
	}
	return []*kernels.Weight{ly.q, ly.k, ly.v}
}
