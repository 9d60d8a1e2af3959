//go:build cgo || js

package engine

import (
	"fmt"

	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

// moe loads layer i's router and experts. Each expert's gate and up
// matrices are stacked into one [2·ffn, hidden] matrix so one expert
// matmul computes both.
func (l *loader) moe(i int) (*moeLayer, error) {
	cfg := l.md.Config
	p := func(s string) string { return fmt.Sprintf("blk.%d.%s", i, s) }
	E, ffn, hidden := cfg.Experts, cfg.ExpertFFN, cfg.HiddenSize
	ml := &moeLayer{gating: kernels.GatingSoftmax}
	switch cfg.ExpertGating {
	case "softmax", "":
	case "topk_softmax":
		ml.gating = kernels.GatingTopKSoftmax
	default:
		return nil, fmt.Errorf("unknown expert gating %q", cfg.ExpertGating)
	}
	var err error
	if ml.router, err = l.matrix(p("ffn_gate_inp.weight"), E, hidden); err != nil {
		return nil, err
	}
	if _, ok := l.m.Tensor(p("ffn_gate_inp.bias")); ok {
		if ml.routerBias, err = l.vector(p("ffn_gate_inp.bias"), E); err != nil {
			return nil, err
		}
	}
	if l.paging {
		return ml, nil // the pager owns the experts' slots
	}
	gt, gate, err := l.tensor(p("ffn_gate_exps.weight"), int64(E), int64(ffn), int64(hidden))
	if err != nil {
		return nil, err
	}
	ut, up, err := l.tensor(p("ffn_up_exps.weight"), int64(E), int64(ffn), int64(hidden))
	if err != nil {
		return nil, err
	}
	if gt.DType != ut.DType {
		return nil, fmt.Errorf("tensors %s (%s) and %s (%s) must share a dtype", gt.Name, gt.DType, ut.Name, ut.DType)
	}
	ml.gateUp, err = l.dev.UploadExpertWeight(p("ffn_gate_up_exps"), gt.DType, E, 2*ffn, hidden, interleave(E, gate, up))
	if err != nil {
		return nil, err
	}
	l.md.bytes += ml.gateUp.W.Bytes()
	l.md.weights = append(l.md.weights, ml.gateUp)
	dt, down, err := l.tensor(p("ffn_down_exps.weight"), int64(E), int64(hidden), int64(ffn))
	if err != nil {
		return nil, err
	}
	if ml.down, err = l.dev.UploadExpertWeight(p("ffn_down_exps"), dt.DType, E, hidden, ffn, down); err != nil {
		return nil, err
	}
	l.md.bytes += ml.down.W.Bytes()
	l.md.weights = append(l.md.weights, ml.down)
	if _, ok := l.m.Tensor(p("ffn_gate_exps.bias")); ok {
		gb, err := l.f32(p("ffn_gate_exps.bias"), int64(E), int64(ffn))
		if err != nil {
			return nil, err
		}
		ub, err := l.f32(p("ffn_up_exps.bias"), int64(E), int64(ffn))
		if err != nil {
			return nil, err
		}
		if ml.gateUpBias, err = l.upload(p("ffn_gate_up_exps.bias"), interleave(E, gb, ub)); err != nil {
			return nil, err
		}
		db, err := l.f32(p("ffn_down_exps.bias"), int64(E), int64(hidden))
		if err != nil {
			return nil, err
		}
		if ml.downBias, err = l.upload(p("ffn_down_exps.bias"), db); err != nil {
			return nil, err
		}
	}
	return ml, nil
}

// interleave stacks, per expert, a's slice then b's: [E][a_e; b_e].
func interleave(experts int, a, b []byte) []byte {
	na, nb := len(a)/experts, len(b)/experts
	out := make([]byte, 0, len(a)+len(b))
	for e := 0; e < experts; e++ {
		out = append(out, a[e*na:(e+1)*na]...)
		out = append(out, b[e*nb:(e+1)*nb]...)
	}
	return out
}

// f32 reads a tensor of any float dtype as little-endian f32 bytes.
func (l *loader) f32(name string, shape ...int64) ([]byte, error) {
	t, b, err := l.tensor(name, shape...)
	if err != nil {
		return nil, err
	}
	return toF32(t, b)
}

// toF32 decodes raw bytes of t's dtype (the whole tensor or one expert's
// slice) into little-endian f32 bytes.
func toF32(t *rdrr.Tensor, b []byte) ([]byte, error) {
	f := make([]float32, len(b)/t.DType.BlockBytes()*t.DType.BlockSize())
	if err := quant.Dequantize(t.DType, b, f); err != nil {
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	return f32Bytes(f), nil
}

func (l *loader) upload(name string, data []byte) (*kernels.Buffer, error) {
	buf, err := l.dev.NewBufferInit(name, data)
	if err != nil {
		return nil, err
	}
	l.md.buffers = append(l.md.buffers, buf)
	l.md.bytes += uint64(len(data))
	return buf, nil
}
