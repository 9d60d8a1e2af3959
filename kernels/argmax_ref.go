//go:build cgo || js

package kernels

// ArgmaxRef is the scalar reference for Argmax: the lowest index of the
// largest value, NaNs skipped, 0 when all are NaN.
func ArgmaxRef(x []float32) int {
	best := -1
	for i, v := range x {
		if v != v {
			continue
		}
		if best < 0 || v > x[best] {
			best = i
		}
	}
	return max(best, 0)
}
