package quant

// Q6_K super-block (210 bytes, 256 values), llama.cpp block_q6_K:
//
//	[0:128]    ql      low 4 bits of the quants
//	[128:192]  qh      high 2 bits of the quants
//	[192:208]  scales  16 × int8, one per 16 values
//	[208:210]  d       f16 super-block scale
//
// value = d · scale[s] · (q − 32) with q in 0..63. Within each half of 128
// values (ql advancing by 64 bytes, qh by 32, scales by 8), for l in 0..31:
// value l takes ql[l] low nibble and qh[l] bits 0–1, value l+32 ql[l+32] low
// and qh[l] bits 2–3, value l+64 ql[l] high and qh[l] bits 4–5, value l+96
// ql[l+32] high and qh[l] bits 6–7; the scale of value i of the half is
// scales[i/16].

func decodeQ6K(b []byte, y []float32) {
	d := f16At(b[208:210])
	for h := range 2 {
		ql := b[64*h : 64*h+64]
		qh := b[128+32*h : 128+32*h+32]
		sc := b[192+8*h : 192+8*h+8]
		yy := y[128*h : 128*h+128]
		for l := range 32 {
			is := l / 16
			q1 := int(ql[l]&0x0f|(qh[l]>>0&3)<<4) - 32
			q2 := int(ql[l+32]&0x0f|(qh[l]>>2&3)<<4) - 32
			q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
			q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
			yy[l] = d * float32(int8(sc[is])) * float32(q1)
			yy[l+32] = d * float32(int8(sc[is+2])) * float32(q2)
			yy[l+64] = d * float32(int8(sc[is+4])) * float32(q3)
			yy[l+96] = d * float32(int8(sc[is+6])) * float32(q4)
		}
	}
}

// encodeQ6K follows quantize_row_q6_K_ref: a signed scale per 16 values from
// make_qx_quants, the scales quantized to int8 against the largest one.
func encodeQ6K(x []float32, b []byte) {
	var L [256]int8
	var scales [16]float32
	var maxScale, maxAbsScale float32
	for ib := range 16 {
		s := makeQXQuants(x[16*ib:16*ib+16], 32, L[16*ib:16*ib+16])
		scales[ib] = s
		if a := abs32(s); a > maxAbsScale {
			maxAbsScale, maxScale = a, s
		}
	}
	if maxAbsScale < groupMaxEps {
		clear(b[:210])
		return
	}
	iscale := -128 / maxScale
	d := putF16(b[208:210], 1/iscale)
	for ib := range 16 {
		b[192+ib] = byte(int8(min(127, nearestInt(iscale*scales[ib]))))
	}
	for j := range 16 {
		dj := d * float32(int8(b[192+j]))
		if dj == 0 {
			continue
		}
		for i := 16 * j; i < 16*j+16; i++ {
			l := max(-32, min(31, nearestInt(x[i]/dj)))
			L[i] = int8(l + 32)
		}
	}
	for h := range 2 {
		ql := b[64*h : 64*h+64]
		qh := b[128+32*h : 128+32*h+32]
		LL := L[128*h : 128*h+128]
		for l := range 32 {
			q1, q2, q3, q4 := uint8(LL[l]), uint8(LL[l+32]), uint8(LL[l+64]), uint8(LL[l+96])
			ql[l] = q1&0x0f | (q3&0x0f)<<4
			ql[l+32] = q2&0x0f | (q4&0x0f)<<4
			qh[l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
		}
	}
}

// groupMaxEps is ggml's GROUP_MAX_EPS: groups whose largest magnitude is
// below it are treated as all zero.
const groupMaxEps = 1e-15

// makeQXQuants is ggml's make_qx_quants with rmse_type 1 and no importance
// weights: a symmetric scale for n values, levels −nmax..nmax−1 stored in L
// as l+nmax, refined by a weighted (x²) least-squares search over 19 trial
// inverse scales. It returns the scale (negative when the extreme value is
// positive, as in ggml).
func makeQXQuants(x []float32, nmax int, L []int8) float32 {
	var mx, amax float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	if amax < groupMaxEps {
		clear(L[:len(x)])
		return 0
	}
	fn := float32(nmax)
	iscale := -fn / mx
	var sumlx, suml2 float32
	for i, v := range x {
		l := max(-nmax, min(nmax-1, nearestInt(iscale*v)))
		L[i] = int8(l + nmax)
		w := v * v
		sumlx += float32(w * v * float32(l))
		suml2 += float32(w * float32(l) * float32(l))
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := scale * sumlx
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fn + float32(0.1*float32(is))) / mx
		sumlx, suml2 = 0, 0
		for _, v := range x {
			l := max(-nmax, min(nmax-1, nearestInt(iscale*v)))
			w := v * v
			sumlx += float32(w * v * float32(l))
			suml2 += float32(w * float32(l) * float32(l))
		}
		if suml2 > 0 && sumlx*sumlx > best*suml2 {
			for i, v := range x {
				l := max(-nmax, min(nmax-1, nearestInt(iscale*v)))
				L[i] = int8(l + nmax)
			}
			scale = sumlx / suml2
			best = scale * sumlx
		}
	}
	return scale
}
