package quant

import "github.com/doppler-llm/doppler/rdrr/dtype"

// DType is the storage type of a tensor; the table lives in rdrr/dtype so
// that the format core can name types without importing the codecs.
type DType = dtype.DType

// The supported storage types (see rdrr/dtype).
const (
	Invalid = dtype.Invalid
	F32     = dtype.F32
	F16     = dtype.F16
	BF16    = dtype.BF16
	Q8_0    = dtype.Q8_0
	Q4_0    = dtype.Q4_0
	Q5_0    = dtype.Q5_0
	Q4_K    = dtype.Q4_K
	Q6_K    = dtype.Q6_K
	MXFP4   = dtype.MXFP4
)

// All lists every valid DType.
func All() []DType { return dtype.All() }

// FromGGML maps a ggml_type id to a DType.
func FromGGML(t uint32) (DType, bool) { return dtype.FromGGML(t) }

// Parse maps a name such as "q4_k" or "F16" to its DType.
func Parse(s string) (DType, error) { return dtype.Parse(s) }
