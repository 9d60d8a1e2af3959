package quant

// Q4_0 block (18 bytes, 32 values), llama.cpp block_q4_0:
//
//	[0:2]   d   f16 scale
//	[2:18]  qs  16 bytes; byte j holds value j (low nibble) and j+16 (high)
//
// value = (q − 8) · d.

func decodeQ4_0(b []byte, y []float32) {
	d := f16At(b[0:2])
	qs := b[2:18]
	for j := range 16 {
		y[j] = float32(int(qs[j]&0x0f)-8) * d
		y[j+16] = float32(int(qs[j]>>4)-8) * d
	}
}

// encodeQ4_0 follows quantize_row_q4_0_ref: the value of largest magnitude
// (sign kept) maps to −8, so d = max/−8.
func encodeQ4_0(x []float32, b []byte) {
	mx := signedAbsMax(x[:32])
	d := mx / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(b[0:2], d)
	qs := b[2:18]
	for j := range 16 {
		q0 := min(15, truncQ(x[j]*id, 8.5))
		q1 := min(15, truncQ(x[j+16]*id, 8.5))
		qs[j] = byte(q0) | byte(q1)<<4
	}
}

// signedAbsMax returns the first value of largest magnitude, with its sign.
func signedAbsMax(x []float32) float32 {
	var amax, mx float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	return mx
}

// truncQ returns int(v + off) truncated toward zero, as C's (int8_t) cast of
// the float sum does in llama.cpp (v·id is within ±off by construction), and
// never less than 0.
func truncQ(v, off float32) int {
	s := float32(v) + off
	if s < 0 {
		return 0
	}
	return int(s)
}
