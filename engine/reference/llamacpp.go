//go:build cgo || js

package reference

import (
	"fmt"
	"math"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// roundRows returns m rows of cols values rounded as llama.cpp's CPU
// backend rounds a matmul's input for weights of type dt: converted to
// the type's vec_dot_type (ggml-cpu's type_traits_cpu) and read back.
func roundRows(dt quant.DType, x []float32, m, cols int) []float32 {
	out := make([]float32, m*cols)
	switch dt {
	case quant.F32:
		copy(out, x)
	case quant.F16:
		for i, v := range x[:m*cols] {
			out[i] = quant.F16ToF32(quant.F32ToF16(v))
		}
	case quant.BF16:
		for i, v := range x[:m*cols] {
			out[i] = quant.BF16ToF32(quant.F32ToBF16(v))
		}
	case quant.Q8_0, quant.Q4_0, quant.Q5_0, quant.MXFP4:
		// vec_dot_type Q8_0: quantize_row_q8_0.
		for r := range m {
			b, err := quant.Quantize(quant.Q8_0, x[r*cols:(r+1)*cols])
			if err == nil {
				err = quant.Dequantize(quant.Q8_0, b, out[r*cols:(r+1)*cols])
			}
			if err != nil {
				panic(fmt.Sprintf("reference: Q8_0 rounding of a %d-value row: %v", cols, err))
			}
		}
	case quant.Q4_K, quant.Q6_K:
		// vec_dot_type Q8_K.
		for r := range m {
			roundQ8K(x[r*cols:(r+1)*cols], out[r*cols:(r+1)*cols])
		}
	default:
		panic("reference: no llama.cpp vec_dot type for " + dt.String())
	}
	return out
}

// roundQ8K quantizes x to Q8_K blocks of 256 as ggml's
// quantize_row_q8_K_ref does (scale −127/max with max the value of
// largest magnitude, nearest integer, at most 127; d = 1/scale in f32) and
// writes the values the blocks stand for to y.
func roundQ8K(x, y []float32) {
	if len(x)%256 != 0 {
		panic(fmt.Sprintf("reference: Q8_K rounding of %d values (not a multiple of 256)", len(x)))
	}
	for b := 0; b < len(x); b += 256 {
		blk := x[b : b+256]
		var mx, amax float32
		for _, v := range blk {
			if a := float32(math.Abs(float64(v))); a > amax {
				amax, mx = a, v
			}
		}
		if amax == 0 {
			clear(y[b : b+256])
			continue
		}
		iscale := -127 / mx
		d := 1 / iscale
		for j, v := range blk {
			q := min(127, nearestInt(iscale*v))
			y[b+j] = d * float32(q)
		}
	}
}

// nearestInt rounds to nearest, ties to even, as ggml's nearest_int.
func nearestInt(f float32) int {
	return int(math.RoundToEven(float64(f)))
}

// f16 rounds v through binary16.
func f16(v float32) float32 { return quant.F16ToF32(quant.F32ToF16(v)) }

// llamaAttention is attention as llama.cpp computes it on the CPU without
// flash attention over an f16 KV cache: kq = mul_mat(k, q) converts q to
// f16 (K's vec_dot type), softmax in f32 (with the sinks), then
// kqv = mul_mat(v, kq) converts the probabilities to f16. Arguments as
// kernels.AttentionRef's; k and v already hold the cache's f16 values.
func llamaAttention(q, k, v, sinks []float32, m, pos0, heads, kvHeads, headDim int, scale float32, window int, softcap float32) []float32 {
	out := make([]float32, m*heads*headDim)
	group := heads / kvHeads
	kvw := kvHeads * headDim
	qh := make([]float32, headDim)
	for t := range m {
		i := pos0 + t
		lo := 0
		if window > 0 {
			lo = max(0, i-window+1)
		}
		for h := range heads {
			kh := h / group
			for d := range headDim {
				qh[d] = f16(q[(t*heads+h)*headDim+d])
			}
			s := make([]float64, i+1-lo)
			mx := math.Inf(-1)
			if sinks != nil {
				mx = float64(sinks[h])
			}
			for j := lo; j <= i; j++ {
				var dot float64
				for d := range headDim {
					dot += float64(qh[d]) * float64(k[j*kvw+kh*headDim+d])
				}
				sc := float64(float32(dot) * scale)
				if softcap > 0 {
					sc = float64(softcap) * math.Tanh(sc/float64(softcap))
				}
				s[j-lo] = sc
				mx = max(mx, sc)
			}
			var den float64
			if sinks != nil {
				den = math.Exp(float64(sinks[h]) - mx)
			}
			for x := range s {
				s[x] = math.Exp(s[x] - mx)
				den += s[x]
			}
			for x := range s {
				s[x] = float64(f16(float32(s[x] / den)))
			}
			for d := range headDim {
				var acc float64
				for j := lo; j <= i; j++ {
					acc += s[j-lo] * float64(v[j*kvw+kh*headDim+d])
				}
				out[(t*heads+h)*headDim+d] = float32(acc)
			}
		}
	}
	return out
}

// llamaFlashAttention is attention as ggml-cpu's flash-attention kernel
// computes it over an f16 KV cache: q converted to f16, scores in f32,
// an online softmax whose running value sum is an f16 vector (scaled and
// accumulated with ggml_vec_scale_f16 / ggml_vec_mad_f16), the sink
// folded in at the end.
func llamaFlashAttention(q, k, v, sinks []float32, m, pos0, heads, kvHeads, headDim int, scale float32, window int, softcap float32) []float32 {
	out := make([]float32, m*heads*headDim)
	group := heads / kvHeads
	kvw := kvHeads * headDim
	qh := make([]float32, headDim)
	acc := make([]float32, headDim) // f16 values
	for t := range m {
		i := pos0 + t
		lo := 0
		if window > 0 {
			lo = max(0, i-window+1)
		}
		for h := range heads {
			kh := h / group
			for d := range headDim {
				qh[d] = f16(q[(t*heads+h)*headDim+d])
			}
			clear(acc)
			mx := float32(math.Inf(-1))
			var sum float32
			for j := lo; j <= i; j++ {
				var dot float64
				for d := range headDim {
					dot += float64(qh[d]) * float64(k[j*kvw+kh*headDim+d])
				}
				s := float32(dot) * scale
				if softcap > 0 {
					s = softcap * float32(math.Tanh(float64(s/softcap)))
				}
				ms, vs := float32(1), float32(1)
				if s > mx {
					old := mx
					mx = s
					ms = float32(math.Exp(float64(old - mx)))
					for d := range acc {
						acc[d] = f16(acc[d] * ms)
					}
				} else {
					vs = float32(math.Exp(float64(s - mx)))
				}
				for d := range acc {
					acc[d] = f16(acc[d] + v[j*kvw+kh*headDim+d]*vs)
				}
				sum = sum*ms + vs
			}
			if sinks != nil {
				sk := sinks[h]
				ms, vs := float32(1), float32(1)
				if sk > mx {
					ms = float32(math.Exp(float64(mx - sk)))
					for d := range acc {
						acc[d] = f16(acc[d] * ms)
					}
				} else {
					vs = float32(math.Exp(float64(sk - mx)))
				}
				sum = sum*ms + vs
			}
			for d := range headDim {
				out[(t*heads+h)*headDim+d] = acc[d] / sum
			}
		}
	}
	return out
}
