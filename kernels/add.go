package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
)

//go:embed add.wgsl
var addWGSL string

//go:embed add_inplace.wgsl
var addInPlaceWGSL string

// addParams mirrors Params in add.wgsl and add_inplace.wgsl (16 bytes).
type addParams struct {
	N          uint32
	_, _, _pad uint32
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
	p, err := d.Pipeline("add_inplace", addInPlaceWGSL, "main", []Binding{Uniform, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	return d.NewOp(p, params, groups, b, acc)
}
