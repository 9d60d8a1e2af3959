//go:build cgo || js

package engine

import (
	"errors"
	"fmt"

	"github.com/doppler-llm/doppler/kernels"
)

// KV state transfer, for prefill offload: a peer prefills a prompt and
// sends its KV cache; the node imports it and decodes locally.
//
// Layout of an exported cache (the bytes as the GPU stores them, f16 or
// f32): for each layer, K then V, for each KV head, positions 0..n-1, each
// head_dim values.

// KVBytes is the size of an exported cache of n positions.
func (s *Session) KVBytes(n int) int {
	c := s.m.Config
	return c.Layers * 2 * c.KVHeads * n * c.HeadDim * s.kvElem()
}

func (s *Session) kvElem() int {
	if s.m.opts.KVF32 {
		return 4
	}
	return 2
}

// KVF16 reports whether the cache stores f16 (else f32).
func (s *Session) KVF16() bool { return !s.m.opts.KVF32 }

// ExportKV returns the KV cache of positions [0, n).
func (s *Session) ExportKV(n int) ([]byte, error) {
	if n <= 0 || n > s.pos {
		return nil, fmt.Errorf("export of %d positions from a cache holding %d", n, s.pos)
	}
	c := s.m.Config
	row := uint64(c.HeadDim * s.kvElem())
	out := make([]byte, 0, s.KVBytes(n))
	for l := 0; l < c.Layers; l++ {
		for _, r := range []kernels.BufferRange{s.kc[l], s.vc[l]} {
			for h := 0; h < c.KVHeads; h++ {
				b, err := s.dev.Read(r.Buf, r.Offset+uint64(h*s.ctxLen)*row, uint64(n)*row)
				if err != nil {
					return nil, err
				}
				out = append(out, b...)
			}
		}
	}
	return out, nil
}

// ImportKV replaces the cache with positions [0, n) from data (as
// ExportKV writes it, same KV dtype) and sets the position to n.
func (s *Session) ImportKV(n int, data []byte) error {
	if n <= 0 || n > s.ctxLen {
		return fmt.Errorf("import of %d positions into a %d-token cache", n, s.ctxLen)
	}
	if len(data) != s.KVBytes(n) {
		return errors.New("KV data has the wrong size for this model, position count and KV dtype")
	}
	c := s.m.Config
	row := uint64(c.HeadDim * s.kvElem())
	off := 0
	for l := 0; l < c.Layers; l++ {
		for _, r := range []kernels.BufferRange{s.kc[l], s.vc[l]} {
			for h := 0; h < c.KVHeads; h++ {
				size := n * int(row)
				if err := s.dev.Write(r.Buf, r.Offset+uint64(h*s.ctxLen)*row, data[off:off+size]); err != nil {
					return err
				}
				off += size
			}
		}
	}
	s.pos = n
	return nil
}
