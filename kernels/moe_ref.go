//go:build cgo || js

package kernels

import (
	"fmt"
	"math"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// MoERouteRef is the scalar reference for MoERoute: for each token t of
// the [m][experts] logits, the k expert ids by descending logit (ties →
// lower id, NaN as -inf) and their gate weights, in float64.
func MoERouteRef(logits []float32, m, experts, k int, g Gating) (sel []uint32, wts []float32) {
	sel = make([]uint32, m*k)
	wts = make([]float32, m*k)
	key := func(v float32) float64 {
		if v != v {
			return math.Inf(-1)
		}
		return float64(v)
	}
	for t := range m {
		l := logits[t*experts : (t+1)*experts]
		used := make([]bool, experts)
		for j := range k {
			bi := -1
			for i, v := range l {
				if !used[i] && (bi < 0 || key(v) > key(l[bi])) {
					bi = i
				}
			}
			used[bi] = true
			sel[t*k+j] = uint32(bi)
		}
		mx := key(l[sel[t*k]])
		if math.IsInf(mx, -1) {
			mx = 0
		}
		ev := make([]float64, k)
		var sk, sa float64
		for j := range k {
			ev[j] = math.Exp(key(l[sel[t*k+j]]) - mx)
			sk += ev[j]
		}
		if g == GatingSoftmax {
			for _, v := range l {
				sa += math.Exp(key(v) - mx)
			}
			if sa == 0 {
				sk = 0
			} else {
				sk /= sa
				for j := range ev {
					ev[j] /= sa
				}
			}
		}
		for j := range k {
			if sk == 0 {
				wts[t*k+j] = float32(1 / float64(k))
			} else {
				wts[t*k+j] = float32(ev[j] / sk)
			}
		}
	}
	return sel, wts
}

// MatMulExpertsRef is the scalar reference for MatMulExperts: wdata holds
// experts matrices of rows × cols (dtype dt) back to back; for each slot
// s = t·k + j, out[s][r] = sum_c W[sel[s]][r][c]·x[xs][c] + bias[sel[s]·rows
// + r] (bias may be nil), xs = s if xPerSlot else t. The result is
// [m·k][rows].
func MatMulExpertsRef(dt quant.DType, wdata []byte, experts, rows, cols int, x []float32, sel []uint32, m, k int, xPerSlot bool, bias []float32) []float32 {
	rb, err := dt.RowBytes(cols)
	if err != nil {
		panic(fmt.Sprintf("MatMulExpertsRef: %v", err))
	}
	out := make([]float32, m*k*rows)
	wr := make([]float32, cols)
	for s := range m * k {
		e := min(int(sel[s]), experts-1)
		xs := s / k
		if xPerSlot {
			xs = s
		}
		xt := x[xs*cols : (xs+1)*cols]
		for r := range rows {
			g := e*rows + r
			if err := quant.Dequantize(dt, wdata[g*rb:(g+1)*rb], wr); err != nil {
				panic(fmt.Sprintf("MatMulExpertsRef: row %d: %v", g, err))
			}
			var sum float64
			for c, v := range wr {
				sum += float64(v) * float64(xt[c])
			}
			if bias != nil {
				sum += float64(bias[g])
			}
			out[s*rows+r] = float32(sum)
		}
	}
	return out
}

// MoECombineRef is the scalar reference for MoECombine: out[t][i] =
// sum_j wts[t][j]·y[t][j][i] (+ acc[t][i]; acc may be nil), y [m][k][n].
func MoECombineRef(y, wts []float32, m, k, n int, acc []float32) []float32 {
	out := make([]float32, m*n)
	for t := range m {
		for i := range n {
			var s float64
			for j := range k {
				s += float64(wts[t*k+j]) * float64(y[(t*k+j)*n+i])
			}
			if acc != nil {
				s += float64(acc[t*n+i])
			}
			out[t*n+i] = float32(s)
		}
	}
	return out
}
