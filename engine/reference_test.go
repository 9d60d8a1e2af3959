//go:build cgo || js

package engine

import (
	"context"
	"math"
	"testing"

	"github.com/doppler-llm/doppler/engine/reference"
	"github.com/doppler-llm/doppler/kernels"
)

// sharedGGUFs are the shared llama.cpp files: every dtype the engine's
// matmuls read (F32, F16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K, MXFP4) and every
// family of the quantized ones (llama, Mixtral MoE, gpt-oss MoE).
var sharedGGUFs = []string{
	"stories260K", "stories260K-F16", "stories260K-Q8_0", "stories260K-Q4_0", "stories260K-Q4_K_M",
	"tiny-mixtral-F32", "tiny-mixtral-F16", "tiny-mixtral-Q8_0", "tiny-mixtral-Q4_K_M",
	"tiny-gptoss-F32", "tiny-gptoss-Q8_0", "tiny-gptoss-MXFP4_MOE",
}

// TestReferenceModel runs every shared GGUF on the GPU and through the
// whole-model CPU reference (engine/reference: the kernels' scalar
// references composed as the engine composes the kernels), from the
// golden's prompt through 32 greedy steps, feeding the engine's tokens
// to both: with the f32 KV cache the logits must agree within 1e-3 at
// every step.
//
// With the f16 cache, a K or V value the two compute an f32 ulp apart can
// round to neighbouring halves; the flip moves the next layers' inputs
// (5.6e-3 in one logit of stories260K, whose logits reach ±20, within one
// step), and the flips add up over the steps (9e-3 by step 32). So there
// each step also compares the caches (every value within two f16 ulps
// plus 1e-3) and the reference continues from the engine's cache, and the
// logits must agree within 1e-2.
func TestReferenceModel(t *testing.T) {
	const steps = 32
	for _, file := range sharedGGUFs {
		t.Run(file, func(t *testing.T) {
			var g onceGolden
			readGolden(t, "golden/"+file+".once.json", &g)
			rm := openShared(t, "models/"+file+".gguf")
			for _, kvf32 := range []bool{true, false} {
				tol := 1e-3
				if !kvf32 {
					tol = 1e-2
				}
				s := newSession(t, loadShared(t, "models/"+file+".gguf", Options{Context: 64, KVF32: kvf32}))
				ref, err := reference.Load(context.Background(), rm, reference.Options{Context: 64, KVF32: kvf32})
				if err != nil {
					t.Fatal(err)
				}
				rs := ref.NewSession()
				in := g.PromptTokens
				var worst, worstKV float64
				for step := range steps + 1 {
					got, err := s.Forward(in)
					if err != nil {
						t.Fatal(err)
					}
					want, err := rs.Forward(in)
					if err != nil {
						t.Fatal(err)
					}
					d, at := maxDiff(got, want)
					worst = max(worst, d)
					if d > tol {
						t.Fatalf("kv f32=%v step %d: logit %d: engine %.6f, reference %.6f (|diff| %.2e > %.0e)",
							kvf32, step, at, got[at], want[at], d, tol)
					}
					if !kvf32 {
						worstKV = max(worstKV, syncKV(t, s, rs))
					}
					in = []int{argmax(got)}
				}
				t.Logf("kv f32=%v: %d steps, max |logit diff| %.2e, max KV diff %.1f f16 ulps", kvf32, steps+1, worst, worstKV)
			}
		})
	}
}

// syncKV checks that the engine's f16 KV cache and the reference's agree
// within two f16 ulps plus 1e-3, copies the engine's into the reference,
// and returns the largest difference in ulps.
func syncKV(t *testing.T, s *Session, rs *reference.Session) float64 {
	t.Helper()
	raw, err := s.ExportKV(s.Pos())
	if err != nil {
		t.Fatal(err)
	}
	got := kernels.DecodeKVCache(raw, true)
	want, err := rs.KV(rs.Pos())
	if err != nil {
		t.Fatal(err)
	}
	var worst float64
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		ulp := f16Ulp(want[i])
		if d > 2*ulp+1e-3 {
			t.Fatalf("position %d: KV value %d: engine %g, reference %g", s.Pos(), i, got[i], want[i])
		}
		worst = max(worst, d/ulp)
	}
	if err := rs.SetKV(s.Pos(), got); err != nil {
		t.Fatal(err)
	}
	return worst
}

// f16Ulp is the gap between binary16 values around v (normal range).
func f16Ulp(v float32) float64 {
	_, e := math.Frexp(math.Abs(float64(v)))
	return math.Ldexp(1, max(e-11, -24))
}

// maxDiff returns the largest |a[i] - b[i]| and its index.
func maxDiff(a, b []float32) (float64, int) {
	var worst float64
	at := 0
	for i := range a {
		if d := math.Abs(float64(a[i]) - float64(b[i])); d > worst || math.IsNaN(d) {
			worst, at = d, i
			if math.IsNaN(d) {
				return math.Inf(1), i
			}
		}
	}
	return worst, at
}
