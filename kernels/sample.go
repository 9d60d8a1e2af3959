//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"math"
)

//go:embed sample.wgsl
var sampleWGSL string

// SampleParams configures [Device.Sample] and [SampleRef], with llama.cpp's
// meanings: Temp ≤ 0 is greedy; TopK ≤ 0 or ≥ n, TopP ≥ 1 and MinP ≤ 0
// turn their filter off; RepPenalty 1 or RepLastN 0 turn the repetition
// penalty off, RepLastN < 0 means the whole history ring.
type SampleParams struct {
	Temp       float32
	TopK       int
	TopP, MinP float32
	RepPenalty float32
	RepLastN   int
}

// SampleMaxRepLastN bounds the penalty window (the GPU keeps the penalized
// ids in a 1024-slot hash in workgroup memory).
const SampleMaxRepLastN = 512

// SampleStateBytes is the size of the state range Sample reads.
const SampleStateBytes = 16

// sampleParams mirrors Params in sample.wgsl (48 bytes).
type sampleParams struct {
	N, TopK, HistCap, LastN uint32
	TopP, LogMinP, InvTemp  float32
	Pen, InvPen             float32
	Greedy, MinPOn, _       uint32 // _: padding
}

// penaltyWindow resolves RepLastN against a history of hist ids (the ring
// capacity on the GPU, the slice length on the CPU); 0 means off.
func (p SampleParams) penaltyWindow(hist int) int {
	if p.RepPenalty == 1 || p.RepLastN == 0 || hist == 0 {
		return 0
	}
	if p.RepLastN < 0 {
		return hist
	}
	return min(p.RepLastN, hist)
}

func (p SampleParams) gpuParams(n, histCap int) (sampleParams, error) {
	if n <= 0 || n >= 1<<31 {
		return sampleParams{}, fmt.Errorf("kernels: sample: bad n=%d", n)
	}
	if !(p.RepPenalty > 0) || math.IsInf(float64(p.RepPenalty), 0) || p.TopP != p.TopP || p.MinP != p.MinP || p.Temp != p.Temp {
		return sampleParams{}, fmt.Errorf("kernels: sample: bad params %+v", p)
	}
	sp := sampleParams{N: uint32(n), TopP: 1, Pen: p.RepPenalty, InvPen: 1 / p.RepPenalty, HistCap: uint32(max(histCap, 1))}
	if p.Temp <= 0 {
		sp.Greedy = 1
	} else {
		sp.InvTemp = 1 / p.Temp
	}
	if p.TopK > 0 && p.TopK < n {
		sp.TopK = uint32(p.TopK)
	}
	if p.TopP < 1 {
		sp.TopP = max(p.TopP, 0)
	}
	if p.MinP > 0 {
		sp.MinPOn = 1
		sp.LogMinP = float32(math.Log(float64(min(p.MinP, 1))))
	}
	win := p.penaltyWindow(histCap)
	if p.RepPenalty != 1 && p.RepLastN > histCap {
		return sampleParams{}, fmt.Errorf("kernels: sample: RepLastN %d exceeds the history ring of %d ids", p.RepLastN, histCap)
	}
	if win > SampleMaxRepLastN {
		return sampleParams{}, fmt.Errorf("kernels: sample: penalty window %d exceeds %d", win, SampleMaxRepLastN)
	}
	sp.LastN = uint32(win)
	return sp, nil
}

// Sample builds the sampling of one token from n float32 logits on the
// GPU, written as a u32 at out; it returns one op (one workgroup). The
// semantics are exactly [SampleRef]'s (see sample.wgsl for the rules).
//
// state (SampleStateBytes, read-only, written by the engine per token):
//
//	word 0: f32 u, uniform in [0, 1) (e.g. (rand>>8) * 2^-24)
//	word 1: u32 count, the number of ids ever appended to the history ring
//	word 2, 3: reserved (0)
//
// history is a ring of u32 token ids of capacity cap = history size / 4:
// id number j (0-based, in generation order) lives at history[j % cap], so
// the most recent is history[(count-1) % cap]. The penalty applies once to
// each distinct id among the last min(RepLastN, count) ids; RepLastN must
// not exceed cap (and SampleMaxRepLastN). history may be a zero BufferRange
// when the penalty is off. out must be a different buffer from the others.
//
// The params are baked into the op: build another op (cheap, the pipeline
// is cached) to change them.
func (d *Device) Sample(logits, state, history, out BufferRange, n int, p SampleParams) ([]*Op, error) {
	histCap := 0
	if history.Buf != nil {
		histCap = int(history.size() / 4)
	} else if p.penaltyWindow(1) != 0 {
		return nil, fmt.Errorf("kernels: sample: repetition penalty without a history buffer")
	}
	sp, err := p.gpuParams(n, histCap)
	if err != nil {
		return nil, err
	}
	if logits.size() < uint64(n)*4 || state.size() < SampleStateBytes || out.size() < 4 {
		return nil, fmt.Errorf("kernels: sample of %d: logits %d, state %d, out %d bytes are too small", n, logits.size(), state.size(), out.size())
	}
	if history.Buf == nil {
		history = state
	}
	pl, err := d.Pipeline("sample", sampleWGSL, "main", []Binding{Uniform, ReadOnly, ReadOnly, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	params, _ := binary.Append(nil, binary.LittleEndian, sp)
	op, err := d.NewOp(pl, params, [3]uint32{1, 1, 1}, logits, state, history, out)
	if err != nil {
		return nil, err
	}
	return []*Op{op}, nil
}
