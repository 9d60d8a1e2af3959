//go:build cgo || js

package kernels

import "math"

// RMSNormRef is the scalar reference for RMSNorm, accumulating in float64.
func RMSNormRef(x, w []float32, rows, n int, eps float32, addOne bool) []float32 {
	out := make([]float32, rows*n)
	for r := range rows {
		row := x[r*n : (r+1)*n]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		scale := 1 / math.Sqrt(ss/float64(n)+float64(eps))
		for i, v := range row {
			g := float64(w[i])
			if addOne {
				g++
			}
			out[r*n+i] = float32(float64(v) * scale * g)
		}
	}
	return out
}
