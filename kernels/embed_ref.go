//go:build cgo || js

package kernels

import "github.com/doppler-llm/doppler/rdrr/quant"

// EmbedRef is the scalar reference for Embed: table is the raw bytes of a
// rows × dim matrix of dtype dt; ids outside [0, rows) give zero rows.
func EmbedRef(dt quant.DType, table []byte, rows, dim int, ids []uint32, scale float32) ([]float32, error) {
	rb, err := dt.RowBytes(dim)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(ids)*dim)
	for t, id := range ids {
		if int(id) >= rows {
			continue
		}
		row := out[t*dim : (t+1)*dim]
		if err := quant.Dequantize(dt, table[int(id)*rb:(int(id)+1)*rb], row); err != nil {
			return nil, err
		}
		for i := range row {
			row[i] = float32(float64(row[i]) * float64(scale))
		}
	}
	return out, nil
}
