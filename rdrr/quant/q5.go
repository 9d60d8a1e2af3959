package quant

import "encoding/binary"

// Q5_0 block (22 bytes, 32 values), llama.cpp block_q5_0:
//
//	[0:2]   d   f16 scale
//	[2:6]   qh  uint32 LE; bit j is the fifth bit of value j
//	[6:22]  qs  16 bytes; byte j holds the low 4 bits of value j (low
//	            nibble) and of value j+16 (high nibble)
//
// value = (q − 16) · d.

func decodeQ5_0(b []byte, y []float32) {
	d := f16At(b[0:2])
	qh := binary.LittleEndian.Uint32(b[2:6])
	qs := b[6:22]
	for j := range 16 {
		h0 := int(qh>>j&1) << 4
		h1 := int(qh>>(j+16)&1) << 4
		y[j] = float32((int(qs[j]&0x0f)|h0)-16) * d
		y[j+16] = float32((int(qs[j]>>4)|h1)-16) * d
	}
}

// encodeQ5_0 follows quantize_row_q5_0_ref: d = max/−16 with max the value
// of largest magnitude.
func encodeQ5_0(x []float32, b []byte) {
	mx := signedAbsMax(x[:32])
	d := mx / -16
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(b[0:2], d)
	var qh uint32
	qs := b[6:22]
	for j := range 16 {
		q0 := min(31, truncQ(x[j]*id, 16.5))
		q1 := min(31, truncQ(x[j+16]*id, 16.5))
		qs[j] = byte(q0&0x0f) | byte(q1&0x0f)<<4
		qh |= uint32(q0>>4) << j
		qh |= uint32(q1>>4) << (j + 16)
	}
	binary.LittleEndian.PutUint32(b[2:6], qh)
}
