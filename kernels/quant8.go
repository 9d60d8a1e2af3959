//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
)

//go:embed quant8.wgsl
var quant8WGSL string

// Q8RowBytes is the size of one row of n activations rounded to 8 bits
// (QuantizeQ8): n int8, a scale per 32 and a sum per 16.
func Q8RowBytes(n int) uint64 { return uint64(n) + uint64(n/32)*4 + uint64(n/16)*4 }

// QuantizeQ8 builds an Op rounding m rows of n float32 activations to 8
// bits in blocks of 32 (the layout in quant8.wgsl), the input of the
// integer-dot matrix-vector kernels (MatMulOpts.Q8X). n must be a
// multiple of 128; out holds m·Q8RowBytes(n) bytes.
func (d *Device) QuantizeQ8(x, out BufferRange, m, n int) (*Op, error) {
	if m <= 0 || n <= 0 || n%128 != 0 {
		return nil, fmt.Errorf("kernels: quantize q8: bad shape m=%d n=%d (n must be a multiple of 128)", m, n)
	}
	if x.size() < uint64(m*n*4) || out.size() < uint64(m)*Q8RowBytes(n) {
		return nil, fmt.Errorf("kernels: quantize q8 %dx%d: x %d bytes, out %d bytes are too small", m, n, x.size(), out.size())
	}
	p, err := d.Pipeline("quant8", quant8WGSL, "main", []Binding{Uniform, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	blocks := m * n / 32
	params := binary.LittleEndian.AppendUint32(nil, uint32(blocks))
	params = binary.LittleEndian.AppendUint32(params, uint32(n))
	return d.NewOp(p, params, d.grid((blocks+63)/64), x, out)
}
