//go:build cgo || js

package kernels

import "math"

// RoPERef is the scalar reference for RoPE: it returns a rotated copy of x
// (m rows at stride, tokens at positions pos0..pos0+m-1). The angle is the
// f32 product pos·invFreq, as on the GPU; cos and sin are taken in float64.
func RoPERef(x []float32, pos0, m, heads, headDim, stride int, p RoPEParams) []float32 {
	out := append([]float32(nil), x...)
	half := p.Dim / 2
	sc := float64(p.scale())
	for t := range m {
		for h := range heads {
			base := t*stride + h*headDim
			for i := range half {
				ang := float64(float32(pos0+t) * p.InvFreq[i])
				c, s := math.Cos(ang)*sc, math.Sin(ang)*sc
				i0, i1 := base+2*i, base+2*i+1
				if p.Neox {
					i0, i1 = base+i, base+i+half
				}
				x0, x1 := float64(x[i0]), float64(x[i1])
				out[i0] = float32(x0*c - x1*s)
				out[i1] = float32(x1*c + x0*s)
			}
		}
	}
	return out
}
