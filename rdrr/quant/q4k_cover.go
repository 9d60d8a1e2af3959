package quant

import (
	"encoding/binary"
	"math"
)

// encodeQ4KCover encodes a super-block so that every sub-block's levels
// cover its data: the offsets −dmin·m are rounded to lie at or below each
// sub-block's minimum (clamped to ≤ 0, or ≥ 0 with posMin) and the scales
// rounded up to reach its maximum. The error is then at most about half a
// step per value; llama.cpp's least-squares fit rounds scales and mins
// independently and can clip a sub-block's extremes by up to half a min
// step, which matters for one-signed sub-blocks where the mins are large.
func encodeQ4KCover(x []float32, b []byte, posMin bool) {
	var lo, hi [8]float32
	var maxOff float32
	for j := range 8 {
		xs := x[32*j : 32*j+32]
		l, h := xs[0], xs[0]
		for _, v := range xs {
			l = min(l, v)
			h = max(h, v)
		}
		if posMin {
			l = max(l, 0)
		} else {
			l = min(l, 0)
		}
		lo[j], hi[j] = l, h
		maxOff = max(maxOff, abs32(l))
	}
	dminV := maxOff / 63
	if posMin {
		dminV = -dminV
	}
	dmin := putF16AtLeast(b[2:4], dminV)
	var ls, lm [8]uint8
	var span [8]float32
	var maxSpan float32
	for j := range 8 {
		// The offset −dmin·m must not exceed lo[j].
		var m float64
		switch {
		case dmin > 0:
			m = math.Ceil(float64(-lo[j] / dmin))
		case dmin < 0:
			m = math.Floor(float64(lo[j] / -dmin))
		}
		lm[j] = uint8(max(0, min(63, m)))
		span[j] = max(0, hi[j]+float32(dmin*float32(lm[j]))) / 15
		maxSpan = max(maxSpan, span[j])
	}
	d := putF16AtLeast(b[0:2], maxSpan/63)
	if d != 0 {
		for j := range 8 {
			ls[j] = uint8(min(63, math.Ceil(float64(span[j]/d))))
		}
	}
	packScaleMinK4(b[4:16], &ls, &lm)
	var L [256]uint8
	for j := range 8 {
		dj := d * float32(ls[j])
		if dj == 0 {
			continue
		}
		dm := dmin * float32(lm[j])
		for i := 32 * j; i < 32*j+32; i++ {
			L[i] = uint8(max(0, min(15, nearestInt((x[i]+dm)/dj))))
		}
	}
	packQ4KQuants(b[16:144], &L)
}

// putF16AtLeast stores the half nearest to v whose magnitude is not below
// |v| (unless that overflows) and returns its value.
func putF16AtLeast(b []byte, v float32) float32 {
	h := F32ToF16(v)
	if abs32(F16ToF32(h)) < abs32(v) && h&0x7c00 != 0x7c00 {
		h++ // the next half away from zero
	}
	binary.LittleEndian.PutUint16(b, h)
	return F16ToF32(h)
}

// packQ4KQuants stores 256 4-bit quants: sub-blocks 2k and 2k+1 share
// q[32k:32k+32], low nibbles for 2k.
func packQ4KQuants(q []byte, L *[256]uint8) {
	for k := range 4 {
		for l := range 32 {
			q[32*k+l] = L[64*k+l] | L[64*k+l+32]<<4
		}
	}
}
