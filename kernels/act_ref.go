//go:build cgo || js

package kernels

import "math"

// ActRef is the scalar reference for one gated activation, in float64.
func ActRef(act Act, gate, up float32) float32 {
	g, u := float64(gate), float64(up)
	switch act {
	case SiLU:
		return float32(g / (1 + math.Exp(-g)) * u)
	case GELUTanh:
		return float32(0.5 * g * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(g+0.044715*g*g*g))) * u)
	case SwiGLUOAI:
		g = min(g, 7)
		u = max(-7, min(u, 7))
		return float32((u + 1) * g / (1 + math.Exp(-1.702*g)))
	}
	panic("kernels: unknown Act")
}

// GatedActRef is the scalar reference for GatedAct.
func GatedActRef(x []float32, m, n, stride, upOffset int, act Act) []float32 {
	out := make([]float32, m*n)
	for t := range m {
		for i := range n {
			out[t*n+i] = ActRef(act, x[t*stride+i], x[t*stride+upOffset+i])
		}
	}
	return out
}
