//go:build cgo || js

package kernels

// AddRef is the scalar reference for Add and AddInPlace.
func AddRef(a, b []float32) []float32 {
	out := make([]float32, len(a))
	for i := range a {
		out[i] = a[i] + b[i]
	}
	return out
}
