package prefilltest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// Reference is a swarm.PrefillLoader of a small pure-Go model with the
// engine's KV cache contract: the cache has the shape the manifest gives
// (layers × K,V × KV heads × positions × head_dim, 2-byte elements for
// f16, 4 for f32), ExportKV and ImportKV move it in the engine's layout,
// and the logits of a position are a function of every cached position up
// to it. So a KV cache a peer computed and this node imported gives the
// logits of a local prefill exactly, and a tampered one does not — what
// offload's check relies on — without a GPU. It reads no weights: the
// "model" is hashes of (token, position, cache row).
func Reference(_ context.Context, m *rdrr.Model, o swarm.PrefillLoad) (swarm.PrefillSession, error) {
	c := m.Manifest.Config
	if c.Layers <= 0 || c.KVHeads <= 0 || c.HeadDim <= 0 || c.VocabSize <= 0 {
		return nil, fmt.Errorf("reference model: config needs layers, KV heads, head dim and vocabulary (have %d, %d, %d, %d)",
			c.Layers, c.KVHeads, c.HeadDim, c.VocabSize)
	}
	ctxLen := o.Context
	if ctxLen <= 0 {
		ctxLen = min(c.ContextLength, 4096)
	}
	if c.ContextLength > 0 {
		ctxLen = min(ctxLen, c.ContextLength)
	}
	if ctxLen <= 0 {
		return nil, errors.New("reference model: no context length")
	}
	elem := 2
	if o.KVF32 {
		elem = 4
	}
	blocks := c.Layers * 2 * c.KVHeads
	w := make([]int8, c.VocabSize*blocks*c.HeadDim)
	for i := range w {
		w[i] = int8(mix(uint64(i), 7, 7, 7)%3) - 1
	}
	return &refSession{blocks: blocks, dim: c.HeadDim, vocab: c.VocabSize, elem: elem, ctxLen: ctxLen,
		cache: make([]int32, blocks*ctxLen*c.HeadDim), proj: w}, nil
}

// refSession is Reference's session. cache holds, per block, ctxLen rows
// of dim values; the stored element is the value's low elem bytes (values
// fit in 11 bits, so a 2-byte cache loses nothing). proj is the logits'
// projection, vocab rows of blocks×dim weights in {-1, 0, 1}.
type refSession struct {
	blocks, dim, vocab int
	elem               int
	ctxLen             int
	cache              []int32
	proj               []int8
	pos                int
}

func (s *refSession) Context() int      { return s.ctxLen }
func (s *refSession) Pos() int          { return s.pos }
func (s *refSession) Reset()            { s.pos = 0 }
func (s *refSession) KVF16() bool       { return s.elem == 2 }
func (s *refSession) KVBytes(n int) int { return s.blocks * n * s.dim * s.elem }
func (s *refSession) Close()            { s.cache = nil }

// Forward caches ids at the next positions and returns the logits of the
// last.
func (s *refSession) Forward(ids []int) ([]float32, error) {
	if s.cache == nil {
		return nil, errors.New("reference model: session closed")
	}
	if len(ids) == 0 {
		return nil, errors.New("reference model: no tokens")
	}
	if s.pos+len(ids) > s.ctxLen {
		return nil, fmt.Errorf("reference model: %d tokens after %d exceed the %d-token cache", len(ids), s.pos, s.ctxLen)
	}
	for _, id := range ids {
		if id < 0 || id >= s.vocab {
			return nil, fmt.Errorf("reference model: token %d outside the %d-token vocabulary", id, s.vocab)
		}
		for b := range s.blocks {
			row := s.cache[(b*s.ctxLen+s.pos)*s.dim:][:s.dim]
			for d := range row {
				row[d] = int32(mix(uint64(id), uint64(s.pos), uint64(b), uint64(d))%2048) - 1024
			}
		}
		s.pos++
	}
	return s.logits(), nil
}

// logits of position pos-1: a fixed ±1/0 projection of the cache rows
// 0..pos-1, each weighted by its position.
func (s *refSession) logits() []float32 {
	sum := make([]int64, s.blocks*s.dim)
	for b := range s.blocks {
		for p := range s.pos {
			row := s.cache[(b*s.ctxLen+p)*s.dim:][:s.dim]
			for d, v := range row {
				sum[b*s.dim+d] += int64(v) * int64(p+1)
			}
		}
	}
	out := make([]float32, s.vocab)
	for v := range out {
		var acc int64
		for i, w := range s.proj[v*len(sum):][:len(sum)] {
			acc += sum[i] * int64(w)
		}
		out[v] = float32(acc) / float32(1<<10)
	}
	return out
}

// ExportKV returns positions [0, n) in the engine's layout.
func (s *refSession) ExportKV(n int) ([]byte, error) {
	if n <= 0 || n > s.pos {
		return nil, fmt.Errorf("reference model: export of %d positions from a cache holding %d", n, s.pos)
	}
	out := make([]byte, 0, s.KVBytes(n))
	for b := range s.blocks {
		for _, v := range s.cache[b*s.ctxLen*s.dim:][:n*s.dim] {
			if s.elem == 2 {
				out = binary.LittleEndian.AppendUint16(out, uint16(int16(v)))
			} else {
				out = binary.LittleEndian.AppendUint32(out, uint32(v))
			}
		}
	}
	return out, nil
}

// ImportKV replaces the cache with positions [0, n) from data.
func (s *refSession) ImportKV(n int, data []byte) error {
	if n <= 0 || n > s.ctxLen {
		return fmt.Errorf("reference model: import of %d positions into a %d-token cache", n, s.ctxLen)
	}
	if len(data) != s.KVBytes(n) {
		return fmt.Errorf("reference model: %d KV bytes for %d positions, want %d", len(data), n, s.KVBytes(n))
	}
	for b := range s.blocks {
		dst := s.cache[b*s.ctxLen*s.dim:][:n*s.dim]
		for i := range dst {
			if s.elem == 2 {
				dst[i] = int32(int16(binary.LittleEndian.Uint16(data)))
			} else {
				dst[i] = int32(binary.LittleEndian.Uint32(data))
			}
			data = data[s.elem:]
		}
	}
	s.pos = n
	return nil
}

// mix hashes four numbers (splitmix64 steps).
func mix(a, b, c, d uint64) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, x := range [4]uint64{a, b, c, d} {
		h ^= x + 0x9e3779b97f4a7c15 + h<<6 + h>>2
		h ^= h >> 30
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 27
		h *= 0x94d049bb133111eb
		h ^= h >> 31
	}
	return h
}
