package quant

import "math"

// Q8_0 block (34 bytes, 32 values), llama.cpp block_q8_0:
//
//	[0:2]   d   f16 scale
//	[2:34]  qs  32 × int8
//
// value[j] = qs[j] · d.

func decodeQ8_0(b []byte, y []float32) {
	d := f16At(b[0:2])
	qs := b[2:34]
	for j := range 32 {
		y[j] = float32(int8(qs[j])) * d
	}
}

// encodeQ8_0 follows quantize_row_q8_0_ref: d = amax/127 and each value is
// rounded half away from zero.
func encodeQ8_0(x []float32, b []byte) {
	var amax float32
	for _, v := range x[:32] {
		amax = max(amax, abs32(v))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(b[0:2], d)
	qs := b[2:34]
	for j := range 32 {
		qs[j] = byte(int8(math.Round(float64(x[j] * id))))
	}
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }
