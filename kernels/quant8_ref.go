package kernels

import (
	"encoding/binary"
	"math"
)

// QuantizeQ8Ref is QuantizeQ8 on the CPU: m rows of n values (n a multiple
// of 128) in quant8.wgsl's layout. Rounding is to nearest, ties to even,
// as WGSL's round; the GPU's division may differ from this one in the last
// bit (Vulkan allows 2.5 ulp), so a value on a rounding edge can land one
// step apart.
func QuantizeQ8Ref(x []float32, m, n int) []byte {
	row := int(Q8RowBytes(n))
	out := make([]byte, m*row)
	for r := range m {
		o := out[r*row:]
		for b := range n / 32 {
			v := x[r*n+b*32 : r*n+b*32+32]
			var amax float32
			for _, f := range v {
				amax = max(amax, float32(math.Abs(float64(f))))
			}
			d := amax / 127
			var id float32
			if d > 0 {
				id = 1 / d
			}
			var s [2]int32
			for i, f := range v {
				q := int32(math.RoundToEven(float64(f * id)))
				q = min(max(q, -127), 127)
				o[b*32+i] = byte(int8(q))
				s[i/16] += q
			}
			binary.LittleEndian.PutUint32(o[n+4*b:], math.Float32bits(d))
			for h := range 2 {
				binary.LittleEndian.PutUint32(o[n+n/8+8*b+4*h:], math.Float32bits(d*float32(s[h])))
			}
		}
	}
	return out
}

// DequantizeQ8Ref returns the values m rows of QuantizeQ8's output stand
// for: q · d of each block.
func DequantizeQ8Ref(xq []byte, m, n int) []float32 {
	row := int(Q8RowBytes(n))
	out := make([]float32, m*n)
	for r := range m {
		o := xq[r*row:]
		for i := range n {
			d := math.Float32frombits(binary.LittleEndian.Uint32(o[n+4*(i/32):]))
			out[r*n+i] = float32(int8(o[i])) * d
		}
	}
	return out
}
