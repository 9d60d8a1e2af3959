//go:build cgo || js

package kernels

import "math"

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
					v = kvF16ToF32(kvF32ToF16(v))
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
		out[i] = kvF16ToF32(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
	}
	return out
}

// kvF32ToF16 rounds to the nearest f16 (ties to even), with subnormals,
// overflow to ±Inf and NaN kept.
func kvF32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	switch {
	case exp == 0xff:
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp-127 > 15:
		return sign | 0x7c00
	case exp-127 >= -14: // normal f16
		e := uint32(exp-127+15) << 10
		h := e | man>>13
		rem := man & 0x1fff
		if rem > 0x1000 || (rem == 0x1000 && h&1 != 0) {
			h++ // may carry into the exponent, up to Inf: still correct
		}
		return sign | uint16(h)
	case exp-127 >= -25: // subnormal f16
		man |= 0x800000
		shift := uint32(-14-(exp-127)) + 13
		h := man >> shift
		rem := man & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 != 0) {
			h++
		}
		return sign | uint16(h)
	}
	return sign
}

func kvF16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		return float32(math.Copysign(float64(man)*math.Pow(2, -24), float64(math.Float32frombits(sign|0x3f800000))))
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}
