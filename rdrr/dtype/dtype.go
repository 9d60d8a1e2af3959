// Package dtype is the table of tensor storage types of the RDRR format:
// their names, block geometry (values and bytes per block) and ggml type
// ids. It is a leaf package of pure tables so that the format core (rdrr)
// and the codecs (rdrr/quant) can share it without rdrr depending on the
// codecs. docs/rdrr.md gives the block layouts.
package dtype

import (
	"fmt"
	"strings"
)

// DType is the storage type of a tensor. The block layouts are llama.cpp's
// (and OCP's for MXFP4), byte for byte, so shards can be uploaded to the GPU
// as they are stored.
type DType uint8

// The supported storage types.
const (
	Invalid DType = iota
	F32
	F16
	BF16
	Q8_0
	Q4_0
	Q5_0
	Q4_K
	Q6_K
	MXFP4
)

type dtypeInfo struct {
	name       string
	blockSize  int    // values per block
	blockBytes int    // bytes per block
	ggml       uint32 // ggml_type id
}

var dtypes = [...]dtypeInfo{
	F32:   {"F32", 1, 4, 0},
	F16:   {"F16", 1, 2, 1},
	BF16:  {"BF16", 1, 2, 30},
	Q8_0:  {"Q8_0", 32, 34, 8},
	Q4_0:  {"Q4_0", 32, 18, 2},
	Q5_0:  {"Q5_0", 32, 22, 6},
	Q4_K:  {"Q4_K", 256, 144, 12},
	Q6_K:  {"Q6_K", 256, 210, 14},
	MXFP4: {"MXFP4", 32, 17, 39},
}

// All lists every valid DType.
func All() []DType {
	return []DType{F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K, MXFP4}
}

// Valid reports whether d is a known type.
func (d DType) Valid() bool { return d > Invalid && int(d) < len(dtypes) }

func (d DType) String() string {
	if !d.Valid() {
		return fmt.Sprintf("DType(%d)", uint8(d))
	}
	return dtypes[d].name
}

// BlockSize is the number of values in one block (1 for plain floats).
func (d DType) BlockSize() int { return dtypes[d].blockSize }

// BlockBytes is the number of bytes one block takes.
func (d DType) BlockBytes() int { return dtypes[d].blockBytes }

// Quantized reports whether d is a block-quantized type.
func (d DType) Quantized() bool { return d.Valid() && dtypes[d].blockSize > 1 }

// RowBytes returns the bytes of n consecutive values, or an error when n is
// not a whole number of blocks.
func (d DType) RowBytes(n int) (int, error) {
	if !d.Valid() {
		return 0, fmt.Errorf("unknown dtype %d", uint8(d))
	}
	bs := dtypes[d].blockSize
	if n < 0 || n%bs != 0 {
		return 0, fmt.Errorf("%s: %d values is not a multiple of the block size %d", d, n, bs)
	}
	return n / bs * dtypes[d].blockBytes, nil
}

// GGML returns the ggml_type id of d.
func (d DType) GGML() uint32 { return dtypes[d].ggml }

// FromGGML maps a ggml_type id to a DType.
func FromGGML(t uint32) (DType, bool) {
	for _, d := range All() {
		if dtypes[d].ggml == t {
			return d, true
		}
	}
	return Invalid, false
}

// Parse maps a name such as "q4_k" or "F16" to its DType.
func Parse(s string) (DType, error) {
	for _, d := range All() {
		if strings.EqualFold(dtypes[d].name, s) {
			return d, nil
		}
	}
	return Invalid, fmt.Errorf("unknown dtype %q", s)
}

// MarshalText implements encoding.TextMarshaler.
func (d DType) MarshalText() ([]byte, error) {
	if !d.Valid() {
		return nil, fmt.Errorf("unknown dtype %d", uint8(d))
	}
	return []byte(d.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *DType) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
