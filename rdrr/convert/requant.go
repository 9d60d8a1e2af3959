package convert

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// Requantizable targets for Options.Quant.
var requantTargets = []quant.DType{quant.F16, quant.Q8_0, quant.Q4_K}

// CheckQuantTarget reports whether d can be a --quant target.
func CheckQuantTarget(d quant.DType) error {
	for _, t := range requantTargets {
		if d == t {
			return nil
		}
	}
	return fmt.Errorf("cannot requantize to %s (choose f16, q8_0 or q4_k)", d)
}

// prepare decides t's stored dtype under the requested requantization and
// returns how to read the stored bytes.
func prepare(t srcTensor, q quant.DType) (quant.DType, func() (io.Reader, error), error) {
	target := requantTarget(t, q)
	if target == t.dtype {
		return t.dtype, t.open, nil
	}
	return target, func() (io.Reader, error) {
		r, err := t.open()
		if err != nil {
			return nil, err
		}
		raw, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		f := make([]float32, t.size/int64(t.dtype.BlockBytes())*int64(t.dtype.BlockSize()))
		if err := quant.Dequantize(t.dtype, raw, f); err != nil {
			return nil, fmt.Errorf("dequantize %s: %w", t.dtype, err)
		}
		out, err := quant.Quantize(target, f)
		if err != nil {
			return nil, fmt.Errorf("quantize to %s: %w", target, err)
		}
		return bytes.NewReader(out), nil
	}, nil
}

// requantTarget picks the dtype t is stored as. Only matrices are
// requantized; norms, biases, sinks and MoE routers keep their type, and a
// row that does not divide into the target's blocks falls back to a finer
// type, as llama.cpp does.
func requantTarget(t srcTensor, q quant.DType) quant.DType {
	if !q.Valid() || len(t.shape) < 2 || strings.Contains(t.name, "ffn_gate_inp") {
		return t.dtype
	}
	row := int(t.shape[len(t.shape)-1])
	chain := []quant.DType{quant.Q4_K, quant.Q8_0, quant.F16}
	for i, d := range chain {
		if d == q {
			for _, c := range chain[i:] {
				if row%c.BlockSize() == 0 {
					return c
				}
			}
		}
	}
	return t.dtype
}
