//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
)

//go:embed add.wgsl
var addWGSL string

// addInPlaceIO is AddInPlace's IO block of add.wgsl: out (acc) is both
// the left summand and the result, bound once read_write.
const addInPlaceIO = `@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
fn lhs(i: u32) -> f32 { return out[i]; }
`

// addParams mirrors Params in add.wgsl (16 bytes).
type addParams struct {
	N       uint32
	_, _, _ uint32 // padding; binary.Append writes zeros
}

func (d *Device) addCheck(what string, n int, ranges ...BufferRange) ([]byte, [3]uint32, error) {
	if n <= 0 {
		return nil, [3]uint32{}, fmt.Errorf("kernels: %s: bad n=%d", what, n)
	}
	for _, r := range ranges {
		if r.size() < uint64(n)*4 {
			return nil, [3]uint32{}, fmt.Errorf("kernels: %s of %d values: a %d-byte range is too small", what, n, r.size())
		}
	}
	params, _ := binary.Append(nil, binary.LittleEndian, addParams{N: uint32(n)})
	return params, d.grid((n + 255) / 256), nil
}

// Add builds out = a + b over n float32 values. out must be a different
// buffer from a and b (a and b may share one).
func (d *Device) Add(a, b, out BufferRange, n int) (*Op, error) {
	params, groups, err := d.addCheck("add", n, a, b, out)
	if err != nil {
		return nil, err
	}
	p, err := d.Pipeline("add", addWGSL, "main", []Binding{Uniform, ReadOnly, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	return d.NewOp(p, params, groups, a, b, out)
}

// AddInPlace builds acc += b over n float32 values (b in another buffer).
func (d *Device) AddInPlace(acc, b BufferRange, n int) (*Op, error) {
	params, groups, err := d.addCheck("add in place", n, acc, b)
	if err != nil {
		return nil, err
	}
	src, err := setBlock(addWGSL, "IO", addInPlaceIO)
	if err != nil {
		return nil, err
	}
	p, err := d.Pipeline("add_inplace", src, "main", []Binding{Uniform, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	return d.NewOp(p, params, groups, b, acc)
}
