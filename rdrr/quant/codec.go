package quant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Errors returned (wrapped with context) by Dequantize and Quantize.
var (
	// ErrLength means a value count is not a whole number of blocks.
	ErrLength = errors.New("length is not a whole number of blocks")
	// ErrShortSource means the encoded bytes are fewer than the values need.
	ErrShortSource = errors.New("source too short")
	// ErrShortDest means the destination buffer is too small.
	ErrShortDest = errors.New("destination too short")
	// ErrNonFinite means a block type was asked to encode a NaN or ±Inf.
	ErrNonFinite = errors.New("non-finite value")
	// ErrUnsupported means the type has no codec.
	ErrUnsupported = errors.New("unsupported dtype")
)

// Dequantize decodes len(dst) values of type d from src into dst.
// len(dst) must be a multiple of d.BlockSize() and src must hold at least
// d.RowBytes(len(dst)) bytes; extra bytes are ignored. The results are
// those of llama.cpp's dequantize_row_* functions.
func Dequantize(d DType, src []byte, dst []float32) error {
	need, err := rowBytes(d, len(dst))
	if err != nil {
		return fmt.Errorf("quant: dequantize: %w", err)
	}
	if len(src) < need {
		return fmt.Errorf("quant: dequantize %s: %d values need %d bytes, have %d: %w",
			d, len(dst), need, len(src), ErrShortSource)
	}
	src = src[:need]
	bs, bb := d.BlockSize(), d.BlockBytes()
	switch d {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
		return nil
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
		return nil
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
		return nil
	}
	dec := blockDecoder(d)
	for i := 0; i < len(dst)/bs; i++ {
		dec(src[i*bb:(i+1)*bb:(i+1)*bb], dst[i*bs:(i+1)*bs:(i+1)*bs])
	}
	return nil
}

// Quantize encodes src as type d and returns the new bytes. len(src) must be
// a multiple of d.BlockSize(). The encoders follow llama.cpp's
// quantize_row_*_ref; see QuantizeTo.
func Quantize(d DType, src []float32) ([]byte, error) {
	n, err := rowBytes(d, len(src))
	if err != nil {
		return nil, fmt.Errorf("quant: quantize: %w", err)
	}
	dst := make([]byte, n)
	if err := QuantizeTo(d, dst, src); err != nil {
		return nil, err
	}
	return dst, nil
}

// QuantizeTo encodes src as type d into dst, which must hold at least
// d.RowBytes(len(src)) bytes. Plain float types are converted with rounding
// to nearest even; block types reject NaN and ±Inf (ErrNonFinite). For Q8_0,
// Q4_0, Q5_0, Q6_K and MXFP4 the bytes are those of llama.cpp's reference
// quantizers; Q4_K starts from llama.cpp's and keeps a better encoding when
// one exists (see quantizeQ4K).
func QuantizeTo(d DType, dst []byte, src []float32) error {
	need, err := rowBytes(d, len(src))
	if err != nil {
		return fmt.Errorf("quant: quantize: %w", err)
	}
	if len(dst) < need {
		return fmt.Errorf("quant: quantize %s: %d values need %d bytes, have %d: %w",
			d, len(src), need, len(dst), ErrShortDest)
	}
	switch d {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
		return nil
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
		return nil
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
		return nil
	}
	for i, v := range src {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("quant: quantize %s: value %d is %v: %w", d, i, v, ErrNonFinite)
		}
	}
	enc := blockEncoder(d)
	bs, bb := d.BlockSize(), d.BlockBytes()
	for i := 0; i < len(src)/bs; i++ {
		enc(src[i*bs:(i+1)*bs:(i+1)*bs], dst[i*bb:(i+1)*bb:(i+1)*bb])
	}
	return nil
}

func rowBytes(d DType, n int) (int, error) {
	if !d.Valid() {
		return 0, fmt.Errorf("dtype %d: %w", uint8(d), ErrUnsupported)
	}
	if n < 0 || n%d.BlockSize() != 0 {
		return 0, fmt.Errorf("%s: %d values, block size %d: %w", d, n, d.BlockSize(), ErrLength)
	}
	return n / d.BlockSize() * d.BlockBytes(), nil
}

// blockDecoder returns the one-block decoder of a block type: it reads
// exactly BlockBytes bytes and writes exactly BlockSize values.
func blockDecoder(d DType) func(b []byte, y []float32) {
	switch d {
	case Q8_0:
		return decodeQ8_0
	case Q4_0:
		return decodeQ4_0
	case Q5_0:
		return decodeQ5_0
	case Q4_K:
		return decodeQ4K
	case Q6_K:
		return decodeQ6K
	case MXFP4:
		return decodeMXFP4
	}
	panic("quant: no block decoder for " + d.String())
}

// blockEncoder returns the one-block encoder of a block type: it reads
// exactly BlockSize finite values and writes exactly BlockBytes bytes.
func blockEncoder(d DType) func(x []float32, b []byte) {
	switch d {
	case Q8_0:
		return encodeQ8_0
	case Q4_0:
		return encodeQ4_0
	case Q5_0:
		return encodeQ5_0
	case Q4_K:
		return encodeQ4K
	case Q6_K:
		return encodeQ6K
	case MXFP4:
		return encodeMXFP4
	}
	panic("quant: no block encoder for " + d.String())
}

// nearestInt rounds to the nearest integer, ties to even, as ggml's
// nearest_int does: adding 1.5·2^23 in float32 leaves the rounded integer in
// the low mantissa bits. Out-of-range values and NaN, undefined in ggml,
// are clamped (NaN to 0).
func nearestInt(f float32) int {
	const lim = 4194303
	switch {
	case f >= lim:
		return lim
	case f <= -lim:
		return -lim
	case f != f:
		return 0
	}
	// The conversion keeps a product passed as f from being fused with the
	// addition into an FMA (arm64, GOAMD64=v3), which would change ties.
	v := float32(f) + 12582912
	return int(math.Float32bits(v)&0x7fffff) - 0x400000
}

// f16At reads the little-endian half at b[0:2] as float32.
func f16At(b []byte) float32 { return F16ToF32(binary.LittleEndian.Uint16(b)) }

// putF16 stores v as a little-endian half at b[0:2] and returns the value
// the half decodes to.
func putF16(b []byte, v float32) float32 {
	h := F32ToF16(v)
	binary.LittleEndian.PutUint16(b, h)
	return F16ToF32(h)
}
