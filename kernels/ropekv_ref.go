//go:build cgo || js

package kernels

import (
	"math"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// RoPEKVRef is the scalar reference for RoPEKV, composed of RoPERef and
// KVStoreRef: it returns x with the q rows rotated and writes the
// rotated k rows and the v rows into the decoded caches kc and vc
// (kvHeads×capacity×headDim values each).
func RoPEKVRef(x, kc, vc []float32, pos0 int, r QKVRows, capacity int, f16 bool, p RoPEParams) []float32 {
	out := append([]float32(nil), x...)
	copy(out[r.QOff:], RoPERef(x[r.QOff:], pos0, r.M, r.Heads, r.HeadDim, r.QStride, p))
	k := RoPERef(x[r.KOff:], pos0, r.M, r.KVHeads, r.HeadDim, r.KStride, p)
	KVStoreRef(kc, k, pos0, r.M, r.KVHeads, r.HeadDim, capacity, r.KStride, f16)
	KVStoreRef(vc, x[r.VOff:], pos0, r.M, r.KVHeads, r.HeadDim, capacity, r.VStride, f16)
	return out
}

// RoPERef is the scalar reference for RoPEKV's rotation: it returns a rotated copy of x
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

// KVStoreRef is the scalar reference for RoPEKV's cache write on a decoded cache
// (kvHeads×capacity×headDim values): it writes m rows of src (at stride)
// for positions pos0.. at slots p % capacity, rounding through f16 when
// f16 is set.
func KVStoreRef(cache, src []float32, pos0, m, kvHeads, headDim, capacity, stride int, f16 bool) {
	for t := max(0, m-capacity); t < m; t++ {
		slot := (pos0 + t) % capacity
		for h := range kvHeads {
			for i := range headDim {
				v := src[t*stride+h*headDim+i]
				if f16 {
					v = quant.F16ToF32(quant.F32ToF16(v))
				}
				cache[(h*capacity+slot)*headDim+i] = v
			}
		}
	}
}

// DecodeKVCache turns raw cache bytes (f32, or f16 pairs) into float32s.
func DecodeKVCache(raw []byte, f16 bool) []float32 {
	if !f16 {
		return fromBytes[float32](raw)
	}
	out := make([]float32, len(raw)/2)
	for i := range out {
		out[i] = quant.F16ToF32(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
	}
	return out
}
