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
