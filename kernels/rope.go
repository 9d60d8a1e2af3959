//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
)

//go:embed rope.wgsl
var ropeWGSL string

// ropeMaxFreqs is how many inverse frequencies the params uniform holds
// (RoPEParams.Dim ≤ 2·ropeMaxFreqs).
const ropeMaxFreqs = 256

// ropeParams mirrors Params in rope.wgsl (32 + 1024 bytes).
type ropeParams struct {
	M, Heads, HeadDim, Stride uint32
	Dim, Neox                 uint32
	Scale                     float32
	_                         uint32
	InvFreq                   [ropeMaxFreqs]float32
}

// RoPEParams configures RoPE.
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

// RoPE builds an Op rotating x in place: m tokens, each row holding heads
// heads of headDim values at x[t*stride + h*headDim]; token t is at
// position pos0+t where pos0 is the u32 in pos (read at run time, so the
// op is built once and replayed). The inverse frequencies live in the
// op's params uniform. x and pos must be different buffers.
func (d *Device) RoPE(x, pos BufferRange, m, heads, headDim, stride int, p RoPEParams) (*Op, error) {
	if m <= 0 || heads <= 0 || headDim <= 0 || stride < heads*headDim {
		return nil, fmt.Errorf("kernels: rope: bad shape m=%d heads=%d headDim=%d stride=%d", m, heads, headDim, stride)
	}
	if err := p.check(headDim); err != nil {
		return nil, err
	}
	need := (uint64(m-1)*uint64(stride) + uint64(heads*headDim)) * 4
	if x.size() < need || pos.size() < 4 {
		return nil, fmt.Errorf("kernels: rope: x %d bytes (want %d), pos %d bytes (want 4)", x.size(), need, pos.size())
	}
	pipe, err := d.Pipeline("rope", ropeWGSL, "main", []Binding{Uniform, Storage, ReadOnly})
	if err != nil {
		return nil, err
	}
	var neox uint32
	if p.Neox {
		neox = 1
	}
	prm := ropeParams{M: uint32(m), Heads: uint32(heads), HeadDim: uint32(headDim), Stride: uint32(stride),
		Dim: uint32(p.Dim), Neox: neox, Scale: p.scale()}
	copy(prm.InvFreq[:], p.InvFreq)
	params, _ := binary.Append(nil, binary.LittleEndian, prm)
	n := m * heads * p.Dim / 2
	return d.NewOp(pipe, params, d.grid((n+63)/64), x, pos)
}
