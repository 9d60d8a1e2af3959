package quant

import "math"

// Q4_K super-block (144 bytes, 256 values), llama.cpp block_q4_K:
//
//	[0:2]    d       f16 scale of the sub-block scales
//	[2:4]    dmin    f16 scale of the sub-block mins
//	[4:16]   scales  8 × (6-bit scale, 6-bit min), packed (see scaleMinK4)
//	[16:144] qs      128 bytes of 4-bit quants
//
// The 256 values are 8 sub-blocks of 32; sub-block s has scale sc[s] and
// min m[s] and value = d·sc[s]·q − dmin·m[s]. Sub-blocks 2k and 2k+1 share
// qs[32k:32k+32]: low nibbles for 2k, high nibbles for 2k+1.

// scaleMinK4 unpacks the 6-bit scale and min of sub-block j from the 12
// packed bytes, as ggml's get_scale_min_k4: sub-blocks 0–3 keep their scale
// in the low 6 bits of q[j] and their min in q[j+4]; sub-blocks 4–7 keep the
// low 4 bits in the nibbles of q[j+4] (scale low, min high) and the top 2
// bits in the top bits of q[j−4] (scale) and q[j] (min).
func scaleMinK4(j int, q []byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0x0f | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// packScaleMinK4 is the inverse of scaleMinK4 for all 8 sub-blocks (each
// ls and lm must be < 64).
func packScaleMinK4(q []byte, ls, lm *[8]uint8) {
	clear(q[:12])
	for j := range 8 {
		if j < 4 {
			q[j] = ls[j]
			q[j+4] = lm[j]
			continue
		}
		q[j+4] = ls[j]&0x0f | (lm[j]&0x0f)<<4
		q[j-4] |= (ls[j] >> 4) << 6
		q[j] |= (lm[j] >> 4) << 6
	}
}

func decodeQ4K(b []byte, y []float32) {
	d := f16At(b[0:2])
	dmin := f16At(b[2:4])
	scales := b[4:16]
	for k := range 4 {
		q := b[16+32*k : 16+32*k+32]
		sc1, m1 := scaleMinK4(2*k, scales)
		sc2, m2 := scaleMinK4(2*k+1, scales)
		d1, dm1 := d*float32(sc1), dmin*float32(m1)
		d2, dm2 := d*float32(sc2), dmin*float32(m2)
		y1 := y[64*k : 64*k+32]
		y2 := y[64*k+32 : 64*k+64]
		for l := range 32 {
			y1[l] = float32(d1*float32(q[l]&0x0f)) - dm1
			y2[l] = float32(d2*float32(q[l]>>4)) - dm2
		}
	}
}

// encodeQ4K quantizes one super-block. It starts from llama.cpp's
// quantize_row_q4_K_ref (encodeQ4KSigned) and improves it with refineQ4K.
//
// llama.cpp's sub-block fit constrains every min to be ≤ 0 (it stores −min
// with dmin ≥ 0): a sub-block of all-positive values, e.g. in [10, 11],
// loses its offset and spends its 16 levels on [0, 11]. So when a sub-block
// is all-positive the mirrored encoding is tried too (dmin < 0, every
// offset ≥ 0), which the format and every decoder handle unchanged; and when
// a sub-block is one-signed, a covering encoding (encodeQ4KCover) whose
// offsets never overshoot the data. The candidate with the least squared
// error is kept.
func encodeQ4K(x []float32, b []byte) {
	encodeQ4KSigned(x, b, false)
	refineQ4K(x, b)
	pos, neg := oneSignedSubBlocks(x)
	if !pos && !neg {
		return
	}
	best := blockSSE(decodeQ4K, b, x)
	try := func(enc func(x []float32, b []byte, posMin bool), posMin bool) {
		var c [144]byte
		enc(x, c[:], posMin)
		refineQ4K(x, c[:])
		if e := blockSSE(decodeQ4K, c[:], x); e < best {
			best = e
			copy(b, c[:])
		}
	}
	if neg {
		try(encodeQ4KCover, false)
	}
	if pos {
		try(encodeQ4KSigned, true)
		try(encodeQ4KCover, true)
	}
}

// oneSignedSubBlocks reports whether some 32-value sub-block of x is all
// > 0 (pos) and whether some is all < 0 (neg).
func oneSignedSubBlocks(x []float32) (pos, neg bool) {
	for j := 0; j < len(x); j += 32 {
		lo, hi := x[j], x[j]
		for _, v := range x[j : j+32] {
			lo = min(lo, v)
			hi = max(hi, v)
		}
		pos = pos || lo > 0
		neg = neg || hi < 0
	}
	return pos, neg
}

// encodeQ4KSigned is quantize_row_q4_K_ref for one super-block; with posMin
// the sub-block offsets are fitted ≥ 0 and stored with a negative dmin.
func encodeQ4KSigned(x []float32, b []byte, posMin bool) {
	var L [256]uint8
	var Laux [32]uint8
	var weights [32]float32
	var scales, mins [8]float32
	var maxScale, maxMin float32
	for j := range 8 {
		xs := x[32*j : 32*j+32]
		var sumX2 float32
		for _, v := range xs {
			sumX2 += float32(v * v)
		}
		avX := float32(math.Sqrt(float64(sumX2 / 32)))
		for l, v := range xs {
			weights[l] = avX + abs32(v)
		}
		scales[j], mins[j] = fitAffine(xs, weights[:], 15, L[32*j:32*j+32], Laux[:], -1, 0.1, 20, posMin)
		maxScale = max(maxScale, scales[j])
		maxMin = max(maxMin, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	var ls, lm [8]uint8
	for j := range 8 {
		ls[j] = min(63, uint8(nearestInt(invScale*scales[j])))
		lm[j] = min(63, uint8(nearestInt(invMin*mins[j])))
	}
	packScaleMinK4(b[4:16], &ls, &lm)
	d := putF16(b[0:2], maxScale/63)
	dminV := maxMin / 63
	if posMin {
		dminV = -dminV
	}
	dmin := putF16(b[2:4], dminV)
	for j := range 8 {
		sc, m := scaleMinK4(j, b[4:16])
		dj := d * float32(sc)
		if dj == 0 {
			continue
		}
		dm := dmin * float32(m)
		for i := 32 * j; i < 32*j+32; i++ {
			L[i] = uint8(max(0, min(15, nearestInt((x[i]+dm)/dj))))
		}
	}
	packQ4KQuants(b[16:144], &L)
}

// blockSSE decodes one block and returns its squared error against x.
func blockSSE(dec func([]byte, []float32), b []byte, x []float32) float64 {
	var y [256]float32
	dec(b, y[:len(x)])
	var s float64
	for i, v := range x {
		e := float64(y[i]) - float64(v)
		s += float64(e * e)
	}
	return s
}

// refineQ4K revisits each sub-block of an encoded super-block with d and
// dmin fixed: it tries the 6-bit scale and min one step either side of the
// stored ones, requantizes, and keeps the pair with the least squared
// error. llama.cpp rounds each scale and min on its own; choosing them
// together lowers the RMS error on normal data by about 1.5%.
func refineQ4K(x []float32, b []byte) {
	d := f16At(b[0:2])
	dmin := f16At(b[2:4])
	var ls, lm [8]uint8
	for j := range 8 {
		ls[j], lm[j] = scaleMinK4(j, b[4:16])
	}
	var L [256]uint8
	for k := range 4 {
		q := b[16+32*k : 16+32*k+32]
		for l := range 32 {
			L[64*k+l] = q[l] & 0x0f
			L[64*k+l+32] = q[l] >> 4
		}
	}
	var trial [32]uint8
	for j := range 8 {
		xs := x[32*j : 32*j+32]
		Lj := L[32*j : 32*j+32]
		best := subBlockSSE(xs, Lj, d*float32(ls[j]), dmin*float32(lm[j]))
		s0, m0 := int(ls[j]), int(lm[j])
		for s := max(1, s0-1); s <= min(63, s0+1); s++ {
			for m := max(0, m0-1); m <= min(63, m0+1); m++ {
				if s == s0 && m == m0 {
					continue
				}
				dj, dm := d*float32(s), dmin*float32(m)
				if dj == 0 {
					continue
				}
				id := 1 / dj
				var e float64
				for i, v := range xs {
					q := uint8(max(0, min(15, nearestInt(float32(v+dm)*id))))
					trial[i] = q
					r := float64(float32(dj*float32(q))-dm) - float64(v)
					e += float64(r * r)
				}
				if e < best {
					best = e
					ls[j], lm[j] = uint8(s), uint8(m)
					copy(Lj, trial[:])
				}
			}
		}
	}
	packScaleMinK4(b[4:16], &ls, &lm)
	packQ4KQuants(b[16:144], &L)
}

// subBlockSSE returns the squared error of 32 values coded as dj·L − dm.
func subBlockSSE(x []float32, L []uint8, dj, dm float32) float64 {
	var s float64
	for i, v := range x {
		e := float64(float32(dj*float32(L[i]))-dm) - float64(v)
		s += float64(e * e)
	}
	return s
}
