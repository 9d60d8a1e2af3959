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
	return d.rmsnorm(x, w, out, BufferRange{}, rows, n, eps, addOne)
}

// rmsnormQ8Body is rmsnorm.wgsl's Q8 block for RMSNormQ8: each invocation
// also rounds blocks of 32 of the normed row to 8 bits, from the values
// it computes exactly as out's.
const rmsnormQ8Body = `    for (var b = lid; b < n / 32u; b += WG) {
        var v: array<vec4<f32>, 8>;
        for (var i = 0u; i < 8u; i++) {
            let c = b * 32u + 4u * i;
            v[i] = vec4<f32>(x[base + c] * scale * (w[c] + one), x[base + c + 1u] * scale * (w[c + 1u] + one),
                             x[base + c + 2u] * scale * (w[c + 2u] + one), x[base + c + 3u] * scale * (w[c + 3u] + one));
        }
        q8block(&v, row * (n / 4u + n / 32u + n / 16u), n, b);
    }
`

// RMSNormQ8 is RMSNorm that also writes the normed rows rounded to 8 bits
// into outQ (QuantizeQ8's layout and bytes, rows·Q8RowBytes(n)): the
// input of the next integer-dot products without a dispatch of its own.
// n must be a multiple of 128.
func (d *Device) RMSNormQ8(x, w, out, outQ BufferRange, rows, n int, eps float32, addOne bool) (*Op, error) {
	if n%128 != 0 || outQ.Buf == nil {
		return nil, fmt.Errorf("kernels: rmsnorm q8: n=%d must be a multiple of 128, with an 8-bit output", n)
	}
	return d.rmsnorm(x, w, out, outQ, rows, n, eps, addOne)
}

// rmsnorm is RMSNorm, and RMSNormQ8 when outQ is set.
func (d *Device) rmsnorm(x, w, out, outQ BufferRange, rows, n int, eps float32, addOne bool) (*Op, error) {
	q8 := outQ.Buf != nil
	if rows <= 0 || n <= 0 {
		return nil, fmt.Errorf("kernels: rmsnorm: bad shape rows=%d n=%d", rows, n)
	}
	need := uint64(rows) * uint64(n) * 4
	if x.size() < need || out.size() < need || w.size() < uint64(n)*4 || (q8 && outQ.size() < uint64(rows)*Q8RowBytes(n)) {
		return nil, fmt.Errorf("kernels: rmsnorm %dx%d: x %d, w %d, out %d, 8-bit out %d bytes are too small", rows, n, x.size(), w.size(), out.size(), outQ.size())
	}
	wg := rmsnormWG(n, d.limits.MaxInvocations)
	src, err := setConst(rmsnormWGSL, "WG", wg)
	if err != nil {
		return nil, err
	}
	key := "rmsnorm/wg" + strconv.Itoa(int(wg))
	layout := []Binding{Uniform, ReadOnly, ReadOnly, Storage}
	bufs := []BufferRange{x, w, out}
	if q8 {
		helpers, _, ok := takeBlock(quant8WGSL, "Q8BLOCK")
		if !ok {
			return nil, fmt.Errorf("kernels: no Q8BLOCK in quant8.wgsl")
		}
		if src, err = setBlock(src, "Q8", rmsnormQ8Body); err != nil {
			return nil, err
		}
		src += "\n@group(0) @binding(4) var<storage, read_write> q8out: array<u32>;\n" + helpers
		key += "/q8"
		layout = append(layout, Storage)
		bufs = append(bufs, outQ)
	}
	p, err := d.Pipeline(key, src, "main", layout)
	if err != nil {
		return nil, err
	}
	var one uint32
	if addOne {
		one = 1
	}
	params, _ := binary.Append(nil, binary.LittleEndian, rmsnormParams{Rows: uint32(rows), N: uint32(n), Eps: eps, AddOne: one})
	return d.NewOp(p, params, d.grid(rows), bufs...)
}
