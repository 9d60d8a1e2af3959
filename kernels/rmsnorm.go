//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"math/bits"
	"strconv"
)

//go:embed rmsnorm.wgsl
var rmsnormWGSL string

// rmsnormParams mirrors Params in rmsnorm.wgsl (16 bytes).
type rmsnormParams struct {
	Rows   uint32
	N      uint32
	Eps    float32
	AddOne uint32
}

// rmsnormWG picks the workgroup size: a power of two covering n, between
// 32 and 256 (so short rows do not pay for idle invocations and barriers).
func rmsnormWG(n, maxInvocations int) uint32 {
	wg := 1 << bits.Len(uint(max(n, 32)-1))
	return uint32(min(wg, 256, maxInvocations))
}

// RMSNorm builds an Op normalizing rows of n float32 values:
// out[r][i] = x[r][i] / sqrt(mean(x[r]²) + eps) * w[i], or * (1 + w[i])
// when addOne (Gemma). x and out hold rows*n values, w holds n. out may
// not overlap x.
func (d *Device) RMSNorm(x, w, out BufferRange, rows, n int, eps float32, addOne bool) (*Op, error) {
	if rows <= 0 || n <= 0 {
		return nil, fmt.Errorf("kernels: rmsnorm: bad shape rows=%d n=%d", rows, n)
	}
	need := uint64(rows) * uint64(n) * 4
	if x.size() < need || out.size() < need || w.size() < uint64(n)*4 {
		return nil, fmt.Errorf("kernels: rmsnorm %dx%d: x %d, w %d, out %d bytes are too small", rows, n, x.size(), w.size(), out.size())
	}
	wg := rmsnormWG(n, d.limits.MaxInvocations)
	src, err := setConst(rmsnormWGSL, "WG", wg)
	if err != nil {
		return nil, err
	}
	p, err := d.Pipeline("rmsnorm/wg"+strconv.Itoa(int(wg)), src, "main", []Binding{Uniform, ReadOnly, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	var one uint32
	if addOne {
		one = 1
	}
	params, _ := binary.Append(nil, binary.LittleEndian, rmsnormParams{Rows: uint32(rows), N: uint32(n), Eps: eps, AddOne: one})
	return d.NewOp(p, params, d.grid(rows), x, w, out)
}
