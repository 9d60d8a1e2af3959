//go:build cgo || js

package kernels

// ArgmaxNone is what Argmax writes when every value is NaN.
const ArgmaxNone = 0xffffffff

// ArgmaxRef is the scalar reference for Argmax: the lowest index of the
// largest value, NaNs skipped, ArgmaxNone when all are NaN.
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
	if best < 0 {
		return ArgmaxNone
	}
	return best
}
