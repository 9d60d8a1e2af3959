//go:build cgo || js

package kernels

import "math"

// AttentionRef is the scalar reference for Attention over plain K/V
// arrays: q holds m rows of heads×headDim values (queries at positions
// pos0..pos0+m-1), k and v hold pos0+m rows of kvHeads×headDim values
// (position p at row p). Query head h reads kv head h/(heads/kvHeads);
// query i sees keys j ≤ i, and with window > 0 only i-window < j. sinks,
// when non-nil, holds a logit per head that joins the softmax max and
// denominator but contributes no value. softcap > 0 applies
// softcap·tanh(s/softcap) to the scaled scores. Accumulates in float64.
func AttentionRef(q, k, v, sinks []float32, m, pos0, heads, kvHeads, headDim int, scale float32, window int, softcap float32) []float32 {
	out := make([]float32, m*heads*headDim)
	group := heads / kvHeads
	kvw := kvHeads * headDim
	for t := range m {
		i := pos0 + t
		lo := 0
		if window > 0 {
			lo = max(0, i-window+1)
		}
		for h := range heads {
			kh := h / group
			qr := q[(t*heads+h)*headDim : (t*heads+h+1)*headDim]
			s := make([]float64, i+1-lo)
			mx := math.Inf(-1)
			if sinks != nil {
				mx = float64(sinks[h])
			}
			for j := lo; j <= i; j++ {
				var dot float64
				for d := range headDim {
					dot += float64(qr[d]) * float64(k[j*kvw+kh*headDim+d])
				}
				dot *= float64(scale)
				if softcap > 0 {
					dot = float64(softcap) * math.Tanh(dot/float64(softcap))
				}
				s[j-lo] = dot
				mx = max(mx, dot)
			}
			var den float64
			if sinks != nil {
				den = math.Exp(float64(sinks[h]) - mx)
			}
			for x := range s {
				s[x] = math.Exp(s[x] - mx)
				den += s[x]
			}
			for d := range headDim {
				var acc float64
				for j := lo; j <= i; j++ {
					acc += s[j-lo] * float64(v[j*kvw+kh*headDim+d])
				}
				out[(t*heads+h)*headDim+d] = float32(acc / den)
			}
		}
	}
	return out
}
