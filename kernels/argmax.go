//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"strconv"
)

//go:embed argmax.wgsl
var argmaxWGSL string

// argmaxParams mirrors Params in argmax.wgsl (16 bytes).
type argmaxParams struct {
	N       uint32
	_, _, _ uint32 // padding; binary.Append writes zeros
}

// Argmax builds the greedy pick: the index of the largest of n float32
// logits, written as a u32 at out (the lowest index on ties; NaNs never
// win). One workgroup; out must be a different buffer from logits.
func (d *Device) Argmax(logits, out BufferRange, n int) (*Op, error) {
	if n <= 0 || n >= math.MaxUint32/2 {
		return nil, fmt.Errorf("kernels: argmax: bad n=%d", n)
	}
	if logits.size() < uint64(n)*4 || out.size() < 4 {
		return nil, fmt.Errorf("kernels: argmax of %d: logits %d bytes, out %d bytes too small", n, logits.size(), out.size())
	}
	wg := uint32(min(1024, d.limits.MaxInvocations))
	wg = 1 << (bits.Len32(wg) - 1)
	src, err := setConst(argmaxWGSL, "WG", wg)
	if err != nil {
		return nil, err
	}
	p, err := d.Pipeline("argmax/wg"+strconv.Itoa(int(wg)), src, "main", []Binding{Uniform, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	params, _ := binary.Append(nil, binary.LittleEndian, argmaxParams{N: uint32(n)})
	return d.NewOp(p, params, [3]uint32{1, 1, 1}, logits, out)
}
