//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
)

//go:embed ropekv.wgsl
var ropeKVWGSL string

// ropeKVParams mirrors Params in ropekv.wgsl (64 + 1024 bytes).
type ropeKVParams struct {
	M, Heads, KVHeads, HeadDim uint32
	QOff, QStride              uint32
	KOff, KStride              uint32
	VOff, VStride              uint32
	Capacity, Dim, Neox        uint32
	Scale                      float32
	Slots, SlotRows            uint32
	InvFreq                    [ropeMaxFreqs]float32
}

// QKVRows says where M tokens' q, k and v rows lie in one buffer: row t
// of q starts at f32 index QOff + t·QStride, its Heads heads of HeadDim
// values one after another; k and v (KVHeads heads each) likewise. One
// stacked matmul output has QOff 0, KOff Heads·HeadDim, VOff KOff +
// KVHeads·HeadDim and all three strides the row's width; three separate
// blocks have each their own offset and stride.
//
// With Slots.N > 0 the rows are one token each of different sequences,
// each with its own position and cache (KVSlots).
type QKVRows struct {
	M, Heads, KVHeads, HeadDim int
	QOff, QStride              int
	KOff, KStride              int
	VOff, VStride              int
	Slots                      KVSlots
}

// KVSlots lays the KV caches of up to N sequences one after another in
// one K and one V buffer, Stride bytes apart (each cache KVCacheBytes's
// layout), so that one RoPEKV and one Attention serve a decode step of
// several sequences. Ops built with N > 0 read a table from the position
// buffer instead of pos0: per row t, the u32 pair (position, slot), and
// row t uses the cache of that slot at that position. Rows naming a slot
// ≥ N are skipped. The zero KVSlots is one cache, rows at pos0+t.
type KVSlots struct {
	N      int
	Stride uint64 // ≥ the cache's bytes, a whole number of head rows
}

// check validates the slots against one cache of the given shape and the
// K and V buffers; it returns the stride in head rows and the bytes the
// position buffer must hold for m rows.
func (s KVSlots) check(kvHeads, capacity, headDim int, f16 bool, m int, kc, vc BufferRange) (rows uint64, posBytes uint64, err error) {
	cache := KVCacheBytes(kvHeads, capacity, headDim, f16)
	if s.N == 0 {
		if kc.size() < cache || vc.size() < cache {
			return 0, 0, fmt.Errorf("caches %d and %d bytes, want %d", kc.size(), vc.size(), cache)
		}
		return 0, 4, nil
	}
	row := KVCacheBytes(1, 1, headDim, f16)
	need := uint64(s.N-1)*s.Stride + cache
	switch {
	case s.N < 0 || s.Stride < cache || s.Stride%row != 0:
		return 0, 0, fmt.Errorf("%d KV slots %d bytes apart: want a stride ≥ %d bytes, a multiple of %d", s.N, s.Stride, cache, row)
	case s.Stride/row > 1<<31:
		return 0, 0, fmt.Errorf("KV slot stride %d bytes: too large", s.Stride)
	case kc.size() < need || vc.size() < need:
		return 0, 0, fmt.Errorf("caches %d and %d bytes, want %d for %d slots", kc.size(), vc.size(), need, s.N)
	}
	return s.Stride / row, uint64(8 * m), nil
}

// span is a block of rows: the first at f32 index off, one every stride,
// width values each.
type span struct{ off, stride, width, rows int }

func (s span) end() int { return s.off + (s.rows-1)*s.stride + s.width }

// apart reports whether two blocks of rows share no value: their spans do
// not meet, or they interleave at one stride in disjoint columns.
func (s span) apart(o span) bool {
	if s.end() <= o.off || o.end() <= s.off {
		return true
	}
	if s.stride != o.stride || s.stride == 0 {
		return false
	}
	d := o.off - s.off
	if d < 0 {
		s, o, d = o, s, -d
	}
	d %= s.stride
	return d >= s.width && d+o.width <= s.stride
}

func (r QKVRows) check() error {
	if r.M <= 0 || r.Heads <= 0 || r.KVHeads <= 0 || r.HeadDim <= 0 || r.QOff < 0 || r.KOff < 0 || r.VOff < 0 ||
		r.QStride < r.Heads*r.HeadDim || r.KStride < r.KVHeads*r.HeadDim || r.VStride < r.KVHeads*r.HeadDim {
		return fmt.Errorf("kernels: ropekv: bad rows %+v", r)
	}
	q, k, v := r.spans()
	if !q.apart(k) || !q.apart(v) {
		return fmt.Errorf("kernels: ropekv: q's values overlap k's or v's in %+v", r)
	}
	return nil
}

func (r QKVRows) spans() (q, k, v span) {
	return span{r.QOff, r.QStride, r.Heads * r.HeadDim, r.M},
		span{r.KOff, r.KStride, r.KVHeads * r.HeadDim, r.M},
		span{r.VOff, r.VStride, r.KVHeads * r.HeadDim, r.M}
}

// RoPEKV builds one Op that rotates the q rows in x in place (RoPE) and
// writes the rotated k rows and the v rows into the K and V caches
// (KVCacheBytes's layout, a ring of capacity slots, f16 pairs when f16),
// for tokens at positions pos0.. where pos0 is the u32 in pos (or each
// row at its own position and cache: r.Slots). The k rows
// in x are left as they were. One dispatch where rotating q and k and
// storing k and v took three or four: a decode step's layer is a chain of
// dependent dispatches, and each costs a barrier.
func (d *Device) RoPEKV(x, kc, vc, pos BufferRange, r QKVRows, capacity int, f16 bool, p RoPEParams) (*Op, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	if capacity <= 0 || (f16 && r.HeadDim%2 != 0) {
		return nil, fmt.Errorf("kernels: ropekv: capacity %d, headDim %d (f16=%v)", capacity, r.HeadDim, f16)
	}
	if err := p.check(r.HeadDim); err != nil {
		return nil, err
	}
	q, k, v := r.spans()
	need := uint64(max(q.end(), k.end(), v.end())) * 4
	slotRows, posNeed, err := r.Slots.check(r.KVHeads, capacity, r.HeadDim, f16, r.M, kc, vc)
	if err != nil {
		return nil, fmt.Errorf("kernels: ropekv: %w", err)
	}
	if x.size() < need || pos.size() < posNeed {
		return nil, fmt.Errorf("kernels: ropekv: x %d bytes (want %d), pos %d (want %d)", x.size(), need, pos.size(), posNeed)
	}
	var f uint32
	key := "ropekv/f32"
	if f16 {
		f, key = 1, "ropekv/f16"
	}
	wgsl, err := setConst(ropeKVWGSL, "F16", f)
	if err != nil {
		return nil, err
	}
	pipe, err := d.Pipeline(key, wgsl, "main", []Binding{Uniform, Storage, Storage, Storage, ReadOnly})
	if err != nil {
		return nil, err
	}
	var neox uint32
	if p.Neox {
		neox = 1
	}
	prm := ropeKVParams{M: uint32(r.M), Heads: uint32(r.Heads), KVHeads: uint32(r.KVHeads), HeadDim: uint32(r.HeadDim),
		QOff: uint32(r.QOff), QStride: uint32(r.QStride), KOff: uint32(r.KOff), KStride: uint32(r.KStride),
		VOff: uint32(r.VOff), VStride: uint32(r.VStride), Capacity: uint32(capacity), Dim: uint32(p.Dim),
		Neox: neox, Scale: p.scale(), Slots: uint32(r.Slots.N), SlotRows: uint32(slotRows)}
	copy(prm.InvFreq[:], p.InvFreq)
	params, _ := binary.Append(nil, binary.LittleEndian, prm)
	words := r.KVHeads * r.HeadDim
	if f16 {
		words /= 2
	}
	n := r.M * (r.Heads*p.Dim/2 + 2*words)
	return d.NewOp(pipe, params, d.grid((n+63)/64), x, kc, vc, pos)
}

// ropeMaxFreqs is how many inverse frequencies the params uniform holds
// (RoPEParams.Dim ≤ 2·ropeMaxFreqs).
const ropeMaxFreqs = 256

// RoPEParams configures the rotary position embedding (RoPEKV).
type RoPEParams struct {
	Dim     int       // rotated dims per head (≤ headDim, even); the rest pass through
	Neox    bool      // true: pairs (i, i+Dim/2) (HF rotate-half); false: pairs (2i, 2i+1) (GGUF llama)
	InvFreq []float32 // Dim/2 inverse frequencies, precomputed by the engine (llama3/yarn scaling folded in)
	Scale   float32   // multiplies cos and sin (yarn attention factor); 0 means 1
}

func (p RoPEParams) check(headDim int) error {
	switch {
	case p.Dim <= 0 || p.Dim%2 != 0 || p.Dim > headDim:
		return fmt.Errorf("kernels: rope: Dim %d must be even, in (0, headDim=%d]", p.Dim, headDim)
	case p.Dim > 2*ropeMaxFreqs:
		return fmt.Errorf("kernels: rope: Dim %d exceeds %d", p.Dim, 2*ropeMaxFreqs)
	case len(p.InvFreq) != p.Dim/2:
		return fmt.Errorf("kernels: rope: %d inverse frequencies for Dim %d, want %d", len(p.InvFreq), p.Dim, p.Dim/2)
	}
	return nil
}

func (p RoPEParams) scale() float32 {
	if p.Scale == 0 {
		return 1
	}
	return p.Scale
}

// KVCacheBytes is the size of one layer's K (or V) cache: layout
// [kvHeads][capacity][headDim] of f32, or of f16 packed in pairs, position
// p at slot p % capacity (RoPEKV writes it, Attention reads it).
func KVCacheBytes(kvHeads, capacity, headDim int, f16 bool) uint64 {
	n := uint64(kvHeads) * uint64(capacity) * uint64(headDim)
	if f16 {
		return n * 2
	}
	return n * 4
}
