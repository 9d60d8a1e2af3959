//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
)

//go:embed kvstore.wgsl
var kvstoreWGSL string

// kvstoreParams mirrors Params in kvstore.wgsl (32 bytes).
type kvstoreParams struct {
	M, KVHeads, HeadDim, Capacity, Stride uint32
	_                                     [3]uint32
}

// KVCacheBytes is the size of one layer's K (or V) cache: layout
// [kvHeads][capacity][headDim] of f32, or of f16 packed in pairs.
func KVCacheBytes(kvHeads, capacity, headDim int, f16 bool) uint64 {
	n := uint64(kvHeads) * uint64(capacity) * uint64(headDim)
	if f16 {
		return n * 2
	}
	return n * 4
}

// KVStore builds an Op copying m token rows of src (kvHeads×headDim f32
// values at src[t*stride]) into cache at positions pos0..pos0+m-1, pos0
// being the u32 in pos; position p goes to slot p % capacity (a ring).
// With m > capacity only the last capacity tokens land. f16 caches hold
// packed pairs (headDim even). cache must be its own buffer.
func (d *Device) KVStore(src, cache, pos BufferRange, m, kvHeads, headDim, capacity, stride int, f16 bool) (*Op, error) {
	if m <= 0 || kvHeads <= 0 || headDim <= 0 || capacity <= 0 || stride < kvHeads*headDim || (f16 && headDim%2 != 0) {
		return nil, fmt.Errorf("kernels: kvstore: bad shape m=%d kvHeads=%d headDim=%d capacity=%d stride=%d f16=%v", m, kvHeads, headDim, capacity, stride, f16)
	}
	need := (uint64(m-1)*uint64(stride) + uint64(kvHeads*headDim)) * 4
	if src.size() < need || cache.size() < KVCacheBytes(kvHeads, capacity, headDim, f16) || pos.size() < 4 {
		return nil, fmt.Errorf("kernels: kvstore: src %d bytes (want %d), cache %d (want %d), pos %d (want 4)",
			src.size(), need, cache.size(), KVCacheBytes(kvHeads, capacity, headDim, f16), pos.size())
	}
	var f uint32
	key := "kvstore/f32"
	if f16 {
		f, key = 1, "kvstore/f16"
	}
	wgsl, err := setConst(kvstoreWGSL, "F16", f)
	if err != nil {
		return nil, err
	}
	pipe, err := d.Pipeline(key, wgsl, "main", []Binding{Uniform, ReadOnly, Storage, ReadOnly})
	if err != nil {
		return nil, err
	}
	params, _ := binary.Append(nil, binary.LittleEndian, kvstoreParams{M: uint32(m), KVHeads: uint32(kvHeads),
		HeadDim: uint32(headDim), Capacity: uint32(capacity), Stride: uint32(stride)})
	words := m * kvHeads * headDim
	if f16 {
		words /= 2
	}
	return d.NewOp(pipe, params, d.grid((words+63)/64), src, cache, pos)
}
