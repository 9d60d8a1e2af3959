//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
)

//go:embed embed.wgsl
var embedWGSL string

// embedParams mirrors Params in embed.wgsl (32 bytes).
type embedParams struct {
	M, Dim, Row0, Rows uint32
	Vocab, ZeroOOB     uint32
	RowBytes           uint32
	Scale              float32
}

// Embed builds the gather of m embedding rows:
// out[t][:] = dequant(table row ids[t]) * scale for t < m, where ids holds
// m u32 token ids and out m × table.Cols float32 values. table may have any
// dtype of rdrr/quant and any number of Parts: Embed returns ONE OP PER
// PART (record them all, in any order, in one pass); the op of a part
// writes the rows of the ids that fall in it, and the op of part 0 also
// writes zeros for ids ≥ table.Rows. ids and out are read per element, so
// repeated and unordered ids are fine. out must be its own buffer.
func (d *Device) Embed(table *Weight, ids, out BufferRange, m int, scale float32) ([]*Op, error) {
	if table == nil || len(table.Parts) == 0 {
		return nil, fmt.Errorf("kernels: embed: no table")
	}
	dim := table.Cols
	if m <= 0 || dim <= 0 || uint64(m)*uint64(dim) >= math.MaxUint32 {
		return nil, fmt.Errorf("kernels: embed %s: bad shape m=%d dim=%d", table.Name, m, dim)
	}
	if ids.size() < uint64(m)*4 || out.size() < uint64(m)*uint64(dim)*4 {
		return nil, fmt.Errorf("kernels: embed %s: ids %d bytes, out %d bytes too small for m=%d dim=%d", table.Name, ids.size(), out.size(), m, dim)
	}
	rb := table.RowBytes()
	if rb == 0 {
		return nil, fmt.Errorf("kernels: embed %s: %s rows of %d values are not whole blocks", table.Name, table.DType, dim)
	}
	src, err := setConst(embedWGSL, "DT", uint32(table.DType))
	if err != nil {
		return nil, err
	}
	src = helpersWGSL("tbl") + src
	p, err := d.Pipeline("embed/dt"+strconv.Itoa(int(table.DType)), src, "main", []Binding{Uniform, ReadOnly, ReadOnly, Storage})
	if err != nil {
		return nil, err
	}
	groups := d.grid((m*dim + 255) / 256)
	var ops []*Op
	for i, part := range table.Parts {
		zero := uint32(0)
		if i == 0 {
			zero = 1
		}
		params, _ := binary.Append(nil, binary.LittleEndian, embedParams{
			M: uint32(m), Dim: uint32(dim), Row0: uint32(part.Row0), Rows: uint32(part.Rows),
			Vocab: uint32(table.Rows), ZeroOOB: zero, RowBytes: uint32(rb), Scale: scale,
		})
		op, err := d.NewOp(p, params, groups, table.Range(i), ids, out)
		if err != nil {
			for _, o := range ops {
				o.Release()
			}
			return nil, err
		}
		ops = append(ops, op)
	}
	return ops, nil
}
