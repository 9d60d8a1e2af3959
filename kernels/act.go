//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
)

//go:embed act.wgsl
var actWGSL string

//go:embed act_fn.wgsl
var actFnWGSL string

// gatedActWGSL is act_fn.wgsl with ACT set to act.
func gatedActWGSL(act Act) (string, error) {
	if act > SwiGLUOAI {
		return "", fmt.Errorf("kernels: unknown activation %v", act)
	}
	return setConst(actFnWGSL, "ACT", uint32(act))
}

// Act is a gated activation of [Device.GatedAct].
type Act uint8

const (
	SiLU      Act = iota // silu(gate) * up (Llama, Qwen, Mistral, ...)
	GELUTanh             // gelu_tanh(gate) * up (Gemma)
	SwiGLUOAI            // GPT-OSS: (clamp(up, ±7) + 1) * g * sigmoid(1.702 g), g = min(gate, 7)
)

func (a Act) String() string {
	switch a {
	case SiLU:
		return "SiLU"
	case GELUTanh:
		return "GELUTanh"
	case SwiGLUOAI:
		return "SwiGLUOAI"
	}
	return "Act(" + strconv.Itoa(int(a)) + ")"
}

// actParams mirrors Params in act.wgsl (16 bytes).
type actParams struct {
	M, N, Stride, UpOff uint32
}

// GatedAct builds out[t][i] = act(x[t*stride + i]) * x[t*stride + upOffset + i]
// for t < m, i < n; out is m × n contiguous float32 and must be a
// different buffer from x. For a fused [gate|up] projection of width 2n:
// stride = 2n, upOffset = n.
func (d *Device) GatedAct(x, out BufferRange, m, n, stride, upOffset int, act Act) (*Op, error) {
	if m <= 0 || n <= 0 || stride < 0 || upOffset < 0 || uint64(m)*uint64(n) >= math.MaxUint32 || act > SwiGLUOAI {
		return nil, fmt.Errorf("kernels: gated act %v: bad shape m=%d n=%d stride=%d upOffset=%d", act, m, n, stride, upOffset)
	}
	span := uint64(max(n, upOffset+n))
	needX := (uint64(m-1)*uint64(stride) + span) * 4
	if needX >= math.MaxUint32 || x.size() < needX || out.size() < uint64(m)*uint64(n)*4 {
		return nil, fmt.Errorf("kernels: gated act %v m=%d n=%d stride=%d upOffset=%d: x %d bytes (need %d), out %d bytes too small", act, m, n, stride, upOffset, x.size(), needX, out.size())
	}
	fn, err := gatedActWGSL(act)
	if err != nil {
		return nil, err
	}
	p, err := d.Pipeline("act/"+act.String(), fn+actWGSL, "main", []Binding{Uniform, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	params, _ := binary.Append(nil, binary.LittleEndian, actParams{M: uint32(m), N: uint32(n), Stride: uint32(stride), UpOff: uint32(upOffset)})
	return d.NewOp(p, params, d.grid((m*n+255)/256), x, out)
}
