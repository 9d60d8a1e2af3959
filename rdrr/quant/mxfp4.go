package quant

import "math"

// MXFP4 block (17 bytes, 32 values), OCP Microscaling FP4 as stored by
// llama.cpp's block_mxfp4:
//
//	[0]     e   E8M0 shared scale, 2^(e−127)
//	[1:17]  qs  16 bytes of E2M1 codes; byte j holds value j (low nibble)
//	            and value j+16 (high nibble)
//
// value = E2M1(q) · 2^(e−127), with E2M1 codes 0..7 = 0, ½, 1, 1½, 2, 3, 4, 6
// and 8..15 their negatives.

// e2m1x2 holds twice the E2M1 values (ggml's kvalues_mxfp4), so that the
// table is integral; the scale is halved to compensate.
var e2m1x2 = [16]int8{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}

// E2M1ToF32 returns the value of a 4-bit E2M1 code (only the low 4 bits of
// q are used). Code 8 is −0.
func E2M1ToF32(q uint8) float32 {
	if q&15 == 8 {
		return float32(math.Copysign(0, -1))
	}
	return float32(e2m1x2[q&15]) / 2
}

// E8M0ToF32 returns the scale 2^(e−127) of an E8M0 byte. Like ggml, and
// unlike OCP (which reserves it for NaN), 255 is read as 2^128, i.e. +Inf.
func E8M0ToF32(e uint8) float32 {
	if e == 0 {
		return math.Float32frombits(0x00400000) // 2^-127, a subnormal
	}
	return math.Float32frombits(uint32(e) << 23)
}

// e8m0Half returns 2^(e−128), half the E8M0 scale, exactly as ggml's
// GGML_E8M0_TO_FP32_HALF.
func e8m0Half(e uint8) float32 {
	if e < 2 {
		return math.Float32frombits(0x00200000 << e)
	}
	return math.Float32frombits(uint32(e-1) << 23)
}

func decodeMXFP4(b []byte, y []float32) {
	d := e8m0Half(b[0])
	qs := b[1:17]
	for j := range 16 {
		y[j] = float32(e2m1x2[qs[j]&0x0f]) * d
		y[j+16] = float32(e2m1x2[qs[j]>>4]) * d
	}
}

// encodeMXFP4 follows quantize_row_mxfp4_ref: e = floor(log2(amax)) − 2 + 127
// (so amax scales into [4, 8) and values above 6 clip to 6), then each value
// takes the nearest code, the first on ties.
func encodeMXFP4(x []float32, b []byte) {
	var amax float32
	for _, v := range x[:32] {
		amax = max(amax, abs32(v))
	}
	var e uint8
	if amax > 0 {
		_, exp := math.Frexp(float64(amax)) // amax = f·2^exp, f in [½, 1)
		e = uint8(min(254, max(0, exp-1-2+127)))
	}
	b[0] = e
	d := e8m0Half(e)
	qs := b[1:17]
	for j := range 16 {
		qs[j] = nearestE2M1(x[j], d) | nearestE2M1(x[j+16], d)<<4
	}
}

// nearestE2M1 returns the code whose value e2m1x2[code]·d is nearest to v,
// the lowest code on ties (ggml's best_index_mxfp4).
func nearestE2M1(v, d float32) uint8 {
	best := uint8(0)
	bestErr := abs32(float32(float32(e2m1x2[0])*d) - v)
	for i := uint8(1); i < 16; i++ {
		if err := abs32(float32(float32(e2m1x2[i])*d) - v); err < bestErr {
			best, bestErr = i, err
		}
	}
	return best
}
