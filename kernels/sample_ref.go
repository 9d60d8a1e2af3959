//go:build cgo || js

package kernels

import (
	"math"
	"slices"
)

// sampleKey is the order-preserving key of a non-NaN float32 (-0 == +0),
// as key_of in sample.wgsl.
func sampleKey(v float32) uint32 {
	b := math.Float32bits(v)
	if b == 0x80000000 {
		b = 0
	}
	if b&0x80000000 != 0 {
		return ^b
	}
	return b | 0x80000000
}

// sampleTrace is what SampleRef decided, for tests to judge float ties.
type sampleTrace struct {
	token     int
	kept      []int     // kept ids, ascending
	cum       []float64 // inclusive cumulative weight per kept id
	target    float64   // u × total weight
	topPSlack float64   // distance of top_p from the nearest prefix mass that decides v*, relative to the top-k mass (+Inf when top-p is off)
}

// SampleRef is the CPU reference of Device.Sample: history holds the
// recent token ids, oldest first (the last RepLastN are penalized), u is the
// uniform draw in [0, 1). Order of the chain (llama.cpp's): repetition
// penalty → top-k → top-p → min-p → temperature → inverse-CDF draw in
// token-id order. Ties: top-k keeps lower ids first; top-p keeps every
// value tied with the last one it needs; min-p compares logits.
func SampleRef(logits []float32, p SampleParams, history []int, u float32) int {
	return sampleRef(logits, p, history, u).token
}

func sampleRef(logits []float32, p SampleParams, history []int, u float32) sampleTrace {
	n := len(logits)
	v := make([]float32, n)
	for i, x := range logits {
		if x != x {
			x = float32(math.Inf(-1))
		}
		v[i] = x
	}
	if win := p.penaltyWindow(len(history)); win > 0 {
		pen, inv := p.RepPenalty, 1/p.RepPenalty
		seen := map[int]bool{}
		for _, id := range history[len(history)-win:] {
			if id < 0 || id >= n || seen[id] {
				continue
			}
			seen[id] = true
			if v[id] > 0 {
				v[id] *= inv
			} else {
				v[id] *= pen
			}
		}
	}
	imax := 0
	for i := range v {
		if sampleKey(v[i]) > sampleKey(v[imax]) {
			imax = i
		}
	}
	tr := sampleTrace{token: imax, topPSlack: math.Inf(1)}
	if p.Temp <= 0 {
		return tr
	}
	vmax := v[imax]
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		ka, kb := sampleKey(v[a]), sampleKey(v[b])
		switch {
		case ka > kb:
			return -1
		case ka < kb:
			return 1
		}
		return a - b
	})
	set := order
	if p.TopK > 0 && p.TopK < n {
		set = order[:p.TopK]
	}
	if p.TopP < 1 {
		var z float64
		for _, i := range set {
			z += math.Exp(float64(v[i] - vmax))
		}
		target := float64(max(p.TopP, 0)) * z
		var c float64
		j := len(set)
		for k, i := range set {
			prev := c
			c += math.Exp(float64(v[i] - vmax))
			if c >= target {
				j = k + 1
				tr.topPSlack = min(math.Abs(prev-target), math.Abs(c-target)) / z
				break
			}
		}
		vstar := sampleKey(v[set[j-1]])
		for j < len(set) && sampleKey(v[set[j]]) >= vstar {
			j++
		}
		set = set[:j]
	}
	if p.MinP > 0 {
		tm := vmax + float32(math.Log(float64(min(p.MinP, 1))))
		var keep []int
		for _, i := range set {
			if v[i] >= tm {
				keep = append(keep, i)
			}
		}
		set = keep
	}
	tr.kept = slices.Sorted(slices.Values(set))
	invT := 1 / p.Temp
	var total float64
	for _, i := range tr.kept {
		total += math.Exp(float64((v[i] - vmax) * invT))
		tr.cum = append(tr.cum, total)
	}
	tr.target = float64(u) * total
	last := -1
	for k, i := range tr.kept {
		w := tr.cum[k]
		if k > 0 {
			w -= tr.cum[k-1]
		}
		if w <= 0 {
			continue
		}
		last = i
		if tr.cum[k] > tr.target {
			tr.token = i
			return tr
		}
	}
	if last >= 0 {
		tr.token = last
	}
	return tr
}
