//go:build cgo || js

package kernels

import (
	"fmt"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// Weight is a matrix of Rows × Cols values (Rows = output features, Cols =
// input features, each row contiguous) stored on the GPU in its quantized
// layout, byte for byte as in the shard. A weight larger than the device's
// maximum binding size is split by rows into Parts, each its own binding.
type Weight struct {
	Name  string
	DType quant.DType
	Rows  int
	Cols  int
	Parts []WeightPart
}

// WeightPart is a run of whole rows of a Weight.
type WeightPart struct {
	Buf    *Buffer
	Offset uint64 // byte offset of the first row in Buf
	Row0   int    // index of the first row
	Rows   int
}

// RowBytes is the size of one row.
func (w *Weight) RowBytes() int {
	n, _ := w.DType.RowBytes(w.Cols)
	return n
}

// Bytes is the size of the whole matrix.
func (w *Weight) Bytes() uint64 { return uint64(w.RowBytes()) * uint64(w.Rows) }

// Range returns the binding of part i.
func (w *Weight) Range(i int) BufferRange {
	p := w.Parts[i]
	return BufferRange{Buf: p.Buf, Offset: p.Offset, Size: round4(uint64(p.Rows) * uint64(w.RowBytes()))}
}

// UploadWeight copies a rows × cols matrix of dtype dt to the GPU, split by
// rows into buffers no larger than the device's binding limit.
func (d *Device) UploadWeight(name string, dt quant.DType, rows, cols int, data []byte) (*Weight, error) {
	rb, err := dt.RowBytes(cols)
	if err != nil {
		return nil, fmt.Errorf("weight %s: %w", name, err)
	}
	if len(data) != rb*rows {
		return nil, fmt.Errorf("weight %s: %d bytes for %s[%d, %d], want %d", name, len(data), dt, rows, cols, rb*rows)
	}
	limit := d.Limits().MaxStorageBufferBindingSize
	if m := d.Limits().MaxBufferSize; m < limit {
		limit = m
	}
	per := int(limit / uint64(rb))
	if per < 1 {
		return nil, fmt.Errorf("weight %s: one row of %d bytes exceeds the %d-byte binding limit", name, rb, limit)
	}
	w := &Weight{Name: name, DType: dt, Rows: rows, Cols: cols}
	for r0 := 0; r0 < rows; r0 += per {
		n := min(per, rows-r0)
		buf, err := d.NewBufferInit(fmt.Sprintf("%s[%d:%d]", name, r0, r0+n), data[r0*rb:(r0+n)*rb])
		if err != nil {
			w.Release()
			return nil, fmt.Errorf("weight %s: %w", name, err)
		}
		w.Parts = append(w.Parts, WeightPart{Buf: buf, Row0: r0, Rows: n})
	}
	return w, nil
}

// Release frees the weight's buffers.
func (w *Weight) Release() {
	for _, p := range w.Parts {
		p.Buf.Release()
	}
	w.Parts = nil
}
