package quant

// fitAffine is ggml's make_qkx2_quants: it fits x ≈ scale·L + min with L in
// 0..nmax, minimising the weighted squared error over nstep+1 trial inverse
// scales (rmin + rdelta·is + nmax)/(max − min). ggml constrains min ≤ 0
// (Q4_K stores −min and subtracts it); with posMin the constraint is
// mirrored to min ≥ 0, for encodings whose super-block min scale is
// negative. It returns the scale and |min|.
func fitAffine(x, w []float32, nmax int, L, Laux []uint8, rmin, rdelta float32, nstep int, posMin bool) (scale, absMin float32) {
	n := len(x)
	lo, hi := x[0], x[0]
	sumW := w[0]
	sumX := sumW * x[0]
	for i := 1; i < n; i++ {
		lo = min(lo, x[i])
		hi = max(hi, x[i])
		sumW += w[i]
		sumX += float32(w[i] * x[i])
	}
	clampMin := func(m float32) float32 {
		if posMin {
			return max(m, 0)
		}
		return min(m, 0)
	}
	lo = clampMin(lo)
	if hi <= lo {
		clear(L[:n])
		return 0, abs32(lo)
	}
	fn := float32(nmax)
	iscale := fn / (hi - lo)
	scale = 1 / iscale
	var bestErr float32
	for i, v := range x {
		l := max(0, min(nmax, nearestInt(iscale*(v-lo))))
		L[i] = uint8(l)
		diff := float32(scale*float32(l)) + lo - v
		bestErr += float32(w[i] * diff * diff)
	}
	if nstep < 1 {
		return scale, abs32(lo)
	}
	for is := 0; is <= nstep; is++ {
		iscale = (rmin + float32(rdelta*float32(is)) + fn) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := max(0, min(nmax, nearestInt(iscale*(v-lo))))
			Laux[i] = uint8(l)
			fl := float32(l)
			sumL += float32(w[i] * fl)
			sumL2 += float32(w[i] * fl * fl)
			sumXL += float32(w[i] * fl * v)
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D <= 0 {
			continue
		}
		thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
		thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
		if clampMin(thisMin) != thisMin {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var curErr float32
		for i, v := range x {
			diff := float32(thisScale*float32(Laux[i])) + thisMin - v
			curErr += float32(w[i] * diff * diff)
		}
		if curErr < bestErr {
			copy(L[:n], Laux[:n])
			bestErr = curErr
			scale = thisScale
			lo = thisMin
		}
	}
	return scale, abs32(lo)
}
