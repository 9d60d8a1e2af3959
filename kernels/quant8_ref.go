package kernels

import (
	"encoding/binary"
	"math"
)

// QuantizeQ8Ref is QuantizeQ8 on the CPU: m rows of n values (n a multiple
// of 128) in quant8.wgsl's layout, the same bytes (see there: integer
// rounding, no float division).
func QuantizeQ8Ref(x []float32, m, n int) []byte {
	row := int(Q8RowBytes(n))
	inv127 := math.Float32frombits(0x3c010204) // float32(1) / 127
	out := make([]byte, m*row)
	for r := range m {
		o := out[r*row:]
		for b := range n / 32 {
			v := x[r*n+b*32 : r*n+b*32+32]
			var amax float32
			for _, f := range v {
				amax = max(amax, float32(math.Abs(float64(f))))
			}
			var d float32
			var s [2]int32
			if ex := int(math.Float32bits(amax) >> 23 & 0xff); ex != 0 {
				k := 150 - ex
				a := uint32(math.Ldexp(float64(amax), k))
				d = amax * inv127
				for i, f := range v {
					xi := int32(math.RoundToEven(math.Ldexp(float64(f), k)))
					num := 127 * uint32(max(xi, -xi))
					q := num / a
					if r2 := 2 * (num - q*a); r2 > a || (r2 == a && q&1 == 1) {
						q++
					}
					qi := int32(q)
					if xi < 0 {
						qi = -qi
					}
					o[b*32+i] = byte(int8(qi))
					s[i/16] += qi
				}
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
