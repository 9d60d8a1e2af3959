//go:build cgo || js

package ropeparams

import (
	"fmt"
	"math"

	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/rdrr"
)

// Params turns a config RoPE into the kernel's parameters.
func Params(r rdrr.RoPE) (kernels.RoPEParams, error) {
	inv, scale, err := Freqs(r)
	if err != nil {
		return kernels.RoPEParams{}, err
	}
	return kernels.RoPEParams{Dim: r.Dim, Neox: r.Style == "neox", InvFreq: inv, Scale: scale}, nil
}

// Freqs returns the inverse frequencies of a RoPE (Dim/2 of them) with
// its context-extension scaling folded in, and the factor that multiplies
// cos and sin (yarn's attention scaling; 1 otherwise). Formulas follow HF
// transformers' modeling_rope_utils.
func Freqs(r rdrr.RoPE) ([]float32, float32, error) {
	dim := r.Dim
	if dim <= 0 || dim%2 != 0 {
		return nil, 0, fmt.Errorf("rope dim %d", dim)
	}
	inv := make([]float64, dim/2)
	for i := range inv {
		inv[i] = 1 / math.Pow(r.Theta, float64(2*i)/float64(dim))
	}
	scale := 1.0
	if s := r.Scaling; s != nil {
		switch s.Type {
		case "linear":
			for i := range inv {
				inv[i] /= s.Factor
			}
		case "llama3":
			low := float64(s.OriginalCtx) / s.LowFreqFactor
			high := float64(s.OriginalCtx) / s.HighFreqFact
			for i, f := range inv {
				wl := 2 * math.Pi / f
				switch {
				case wl > low:
					inv[i] = f / s.Factor
				case wl < high:
				default:
					smooth := (float64(s.OriginalCtx)/wl - s.LowFreqFactor) / (s.HighFreqFact - s.LowFreqFactor)
					inv[i] = (1-smooth)*f/s.Factor + smooth*f
				}
			}
		case "yarn":
			corr := func(rot float64) float64 {
				return float64(dim) * math.Log(float64(s.OriginalCtx)/(rot*2*math.Pi)) / (2 * math.Log(r.Theta))
			}
			lo, hi := corr(s.BetaFast), corr(s.BetaSlow)
			if s.Truncate {
				lo, hi = math.Floor(lo), math.Ceil(hi)
			}
			lo, hi = math.Max(lo, 0), math.Min(hi, float64(dim-1))
			if lo == hi {
				hi += 0.001
			}
			for i, f := range inv {
				ramp := math.Min(math.Max((float64(i)-lo)/(hi-lo), 0), 1)
				extra := 1 - ramp
				inv[i] = f/s.Factor*(1-extra) + f*extra
			}
			scale = s.AttnFactor
			if scale == 0 {
				scale = 1
				if s.Factor > 1 {
					scale = 0.1*math.Log(s.Factor) + 1
				}
			}
		default:
			return nil, 0, fmt.Errorf("unsupported rope scaling %q", s.Type)
		}
	}
	out := make([]float32, len(inv))
	for i, f := range inv {
		out[i] = float32(f)
	}
	return out, float32(scale), nil
}
