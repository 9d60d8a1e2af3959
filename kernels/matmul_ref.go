//go:build cgo || js

package kernels

import (
	"fmt"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// MatMulRef is the scalar reference for MatMul: out[t][r] = sum_c
// W[r][c]·x[t][c] + bias[r] (bias may be nil) + acc[t][r] (acc may be nil),
// with W the rows × cols matrix of dtype dt stored in wdata, decoded by
// quant.Dequantize, and float64 accumulation. x is [m][cols]; the result is
// [m][rows].
func MatMulRef(dt quant.DType, wdata []byte, rows, cols int, x []float32, m int, bias []float32, acc []float32) []float32 {
	rb, err := dt.RowBytes(cols)
	if err != nil {
		panic(fmt.Sprintf("MatMulRef: %v", err))
	}
	out := make([]float32, m*rows)
	wr := make([]float32, cols)
	for r := range rows {
		if err := quant.Dequantize(dt, wdata[r*rb:(r+1)*rb], wr); err != nil {
			panic(fmt.Sprintf("MatMulRef: row %d: %v", r, err))
		}
		for t := range m {
			xt := x[t*cols : (t+1)*cols]
			var s float64
			for c, v := range wr {
				s += float64(v) * float64(xt[c])
			}
			if bias != nil {
				s += float64(bias[r])
			}
			if acc != nil {
				s += float64(acc[t*rows+r])
			}
			out[t*rows+r] = float32(s)
		}
	}
	return out
}
