//go:build cgo || js

package kernels

import (
	"fmt"
	"slices"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// MatMulRef is the scalar reference for MatMul: out[t][r] = sum_c
// W[r][c]·x[t][c] + bias[r] (bias may be nil) + acc[t][r] (acc may be nil),
// with W the rows × cols matrix of dtype dt stored in wdata, decoded by
// quant.Dequantize, and float64 accumulation. x is [m][cols]; the result is
// [m][rows].
func MatMulRef(dt quant.DType, wdata []byte, rows, cols int, x []float32, m int, bias []float32, acc []float32) []float32 {
	return matmulRef(dt, wdata, rows, cols, x, m, bias, acc, false)
}

// MatMulCoopRef is the scalar reference for MatMul on cooperative
// matrices (matmul_coop.wgsl): MatMulRef with every decoded weight value
// and every x value (clamped to ±65504) rounded to f16 first, as the
// kernel feeds them to the f16 × f16 → f32 products.
func MatMulCoopRef(dt quant.DType, wdata []byte, rows, cols int, x []float32, m int, bias []float32, acc []float32) []float32 {
	return matmulRef(dt, wdata, rows, cols, x, m, bias, acc, true)
}

// roundF16 is v rounded to the nearest f16 (clamped to its finite range).
func roundF16(v float32) float32 {
	return quant.F16ToF32(quant.F32ToF16(min(max(v, -65504), 65504)))
}

func matmulRef(dt quant.DType, wdata []byte, rows, cols int, x []float32, m int, bias []float32, acc []float32, f16 bool) []float32 {
	if f16 {
		x = slices.Clone(x)
		for i, v := range x {
			x[i] = roundF16(v)
		}
	}
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
		if f16 {
			for c, v := range wr {
				wr[c] = roundF16(v)
			}
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
