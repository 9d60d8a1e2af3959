//go:build cgo || js

package engine

import "github.com/doppler-llm/doppler/kernels"

// q8Inputs gives the matrix-vector products of a plan being built their
// input rounded to 8 bits (Options.Q8X) where the weight takes it, and
// remembers which buffer xq holds the rounding of, so products that follow
// each other on one input (q, k and v) share one rounding, and a norm that
// writes it (RMSNormQ8) saves the dispatch. Session.build and Batch.plan
// each keep one; their add calls forget whenever other ops go in.
type q8Inputs struct {
	d    *kernels.Device
	xq   *kernels.Buffer // nil: Q8X is off
	held *kernels.Buffer // what xq holds the 8-bit form of; nil: unknown
}

func (q *q8Inputs) forget() { q.held = nil }

// matmul returns the ops of a product of w over rows vectors of in: mm
// (the MatMul or MatMulBatch call, given what to read) on in itself, or,
// where Q8X applies, on xq with o.Q8X set, after the rounding of in
// unless xq holds it already.
func (q *q8Inputs) matmul(w *kernels.Weight, in *kernels.Buffer, rows int, o *kernels.MatMulOpts, mm func(x kernels.BufferRange) ([]*kernels.Op, error)) ([]*kernels.Op, error) {
	if q.xq == nil || !w.CanQ8X() || o.Norm.G.Buf != nil {
		q.held = nil
		return mm(whole(in))
	}
	var pre []*kernels.Op
	if q.held != in {
		op, err := q.d.QuantizeQ8(whole(in), whole(q.xq), rows, w.Cols)
		if err != nil {
			return nil, err
		}
		pre, q.held = []*kernels.Op{op}, in
	}
	o.Q8X = true
	ops, err := mm(whole(q.xq))
	if err != nil {
		releaseOps(pre)
		return nil, err
	}
	return append(pre, ops...), nil
}

// norm returns RMSNorm of rows rows of n values of x into out, writing
// out's 8-bit form into xq in the same dispatch where the products that
// read out take it (q8) and Q8X applies; then xq holds out (once add has
// taken the op: see held).
func (q *q8Inputs) norm(x, g, out *kernels.Buffer, rows, n int, eps float32, addOne, q8 bool) (op *kernels.Op, holds *kernels.Buffer, err error) {
	if !q8 || q.xq == nil || n%128 != 0 {
		op, err = q.d.RMSNorm(whole(x), whole(g), whole(out), rows, n, eps, addOne)
		return op, nil, err
	}
	op, err = q.d.RMSNormQ8(whole(x), whole(g), whole(out), whole(q.xq), rows, n, eps, addOne)
	return op, out, err
}

// qkvQ8X reports whether the layer's q (or stacked q/k/v) product takes
// 8-bit inputs.
func (ly *layer) qkvQ8X() bool { return ly.qkvWeights()[0].CanQ8X() }
