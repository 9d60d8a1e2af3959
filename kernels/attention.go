package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
)

//go:embed attention_decode.wgsl
var attentionDecodeWGSL string

//go:embed attention_prefill.wgsl
var attentionPrefillWGSL string

// AttnMaxHeadDim is the largest head dimension Attention supports.
const AttnMaxHeadDim = 256

// attentionParams mirrors Params in attention_{decode,prefill}.wgsl (48 bytes).
type attentionParams struct {
	Heads, KVHeads, Capacity, QStride uint32
	Window, HasSinks, M               uint32
	_                                 uint32
	Scale, Softcap                    float32
	_                                 [2]uint32
}

// AttnOpts configures Attention.
type AttnOpts struct {
	Scale   float32     // score scale (1/sqrt(headDim) typically; caller passes it)
	Window  int         // 0 = full causal; else query at position i sees keys j with i-Window < j <= i
	Sinks   BufferRange // optional f32 [heads]: per-head sink logit appended to the softmax denominator (GPT-OSS); Buf nil = none
	Softcap float32     // 0 = off; else scores = softcap*tanh(scores/softcap) (Gemma 2)
	F16     bool        // cache dtype
	QStride int         // elements between tokens in q (0 = heads*headDim)
}

// attnPrefillTile is the query/key tile of the prefill kernel for a head
// dimension: 16×16 (256 threads) up to 128, else 8×8.
func attnPrefillTile(headDim int) int {
	if headDim <= 128 {
		return 16
	}
	return 8
}

// attnPrefillShared is the prefill kernel's workgroup memory in bytes.
func attnPrefillShared(headDim, tile int) int {
	return 4 * (tile*headDim + tile*(headDim+1) + tile*headDim + tile*tile + 3*tile)
}

// Attention builds an Op computing, for query tokens t < m (position
// pos0+t, pos0 the u32 in pos, read at run time), softmax attention over
// cache positions max(0, pos0+t-Window+1) .. pos0+t:
//
//	out[t][h*headDim + i] = Σ_j softmax_j(s_j) · V[j][i],  s_j = Scale·q[t][h]·K[j]
//
// with query head h reading kv head h/(heads/kvHeads), K/V from the
// [kvHeads][capacity][headDim] caches (position j at slot j % capacity;
// the KVStore of this batch must run earlier in the same pass). q holds m
// rows at QStride; out gets m rows of heads×headDim. m == 1 uses the
// decode kernel (a workgroup per head), m > 1 the tiled prefill kernel.
//
// A ring cache must hold every key the batch needs: capacity ≥ pos0+m
// for full attention, capacity ≥ Window+m-1 with a window (checked).
// out must be its own buffer; the others may share read-only buffers.
func (d *Device) Attention(q, kCache, vCache, out, pos BufferRange, m, heads, kvHeads, headDim, capacity int, o AttnOpts) (*Op, error) {
	qStride := o.QStride
	if qStride == 0 {
		qStride = heads * headDim
	}
	switch {
	case m <= 0 || heads <= 0 || kvHeads <= 0 || heads%kvHeads != 0 || headDim <= 0 || capacity <= 0 || o.Window < 0:
		return nil, fmt.Errorf("kernels: attention: bad shape m=%d heads=%d kvHeads=%d headDim=%d capacity=%d window=%d", m, heads, kvHeads, headDim, capacity, o.Window)
	case headDim > AttnMaxHeadDim || (o.F16 && headDim%2 != 0):
		return nil, fmt.Errorf("kernels: attention: headDim %d unsupported (≤ %d, even for f16)", headDim, AttnMaxHeadDim)
	case qStride < heads*headDim:
		return nil, fmt.Errorf("kernels: attention: QStride %d < heads*headDim %d", qStride, heads*headDim)
	case o.Window > 0 && capacity < o.Window+m-1:
		return nil, fmt.Errorf("kernels: attention: a %d-slot cache cannot hold the %d keys a batch of %d with window %d needs", capacity, o.Window+m-1, m, o.Window)
	case o.Softcap < 0:
		return nil, fmt.Errorf("kernels: attention: softcap %g < 0", o.Softcap)
	}
	cacheBytes := KVCacheBytes(kvHeads, capacity, headDim, o.F16)
	qNeed := (uint64(m-1)*uint64(qStride) + uint64(heads*headDim)) * 4
	outNeed := uint64(m*heads*headDim) * 4
	if q.size() < qNeed || kCache.size() < cacheBytes || vCache.size() < cacheBytes || out.size() < outNeed || pos.size() < 4 {
		return nil, fmt.Errorf("kernels: attention: q %d bytes (want %d), caches %d/%d (want %d), out %d (want %d), pos %d (want 4)",
			q.size(), qNeed, kCache.size(), vCache.size(), cacheBytes, out.size(), outNeed, pos.size())
	}
	sinks := o.Sinks
	var hasSinks uint32
	if sinks.Buf != nil {
		if sinks.size() < uint64(heads)*4 {
			return nil, fmt.Errorf("kernels: attention: sinks %d bytes, want %d", sinks.size(), heads*4)
		}
		hasSinks = 1
	} else {
		sinks = pos // an unread placeholder binding
	}
	var f16 uint32
	dt := "f32"
	if o.F16 {
		f16, dt = 1, "f16"
	}
	src, key, groups := attentionDecodeWGSL, fmt.Sprintf("attention/decode/hd%d/%s", headDim, dt), [3]uint32{uint32(heads), uint32(m), 1}
	if tile := attnPrefillTile(headDim); m > 1 && attnPrefillShared(headDim, tile) <= d.limits.MaxWorkgroupStorage {
		var err error
		if src, err = setConst(attentionPrefillWGSL, "BQ", uint32(tile)); err != nil {
			return nil, err
		}
		if src, err = setConst(src, "BK", uint32(tile)); err != nil {
			return nil, err
		}
		key = fmt.Sprintf("attention/prefill/t%d/hd%d/%s", tile, headDim, dt)
		groups = [3]uint32{uint32((m + tile - 1) / tile), uint32(heads), 1}
	}
	src, err := setConst(src, "HD", uint32(headDim))
	if err == nil {
		src, err = setConst(src, "F16", f16)
	}
	if err != nil {
		return nil, err
	}
	pipe, err := d.Pipeline(key, src, "main", []Binding{Uniform, ReadOnly, ReadOnly, ReadOnly, Storage, ReadOnly, ReadOnly})
	if err != nil {
		return nil, err
	}
	params, _ := binary.Append(nil, binary.LittleEndian, attentionParams{
		Heads: uint32(heads), KVHeads: uint32(kvHeads), Capacity: uint32(capacity), QStride: uint32(qStride),
		Window: uint32(o.Window), HasSinks: hasSinks, M: uint32(m), Scale: o.Scale, Softcap: o.Softcap,
	})
	return d.NewOp(pipe, params, groups, q, kCache, vCache, out, pos, sinks)
}
