//go:build cgo || js

package engine

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/doppler-llm/doppler/engine/reference"
)

// TestPrefillReference runs a 130-token prompt through every shared GGUF in
// prefill passes of 48, 48, 20 and 14 tokens — the register-blocked
// matmul (matmul_tiled.wgsl) takes the first two, the 16-token tiles the
// others, and the prefill attention all four with earlier passes in the
// cache — and requires every position's logits within 1e-3 of the
// whole-model CPU reference fed the same passes (f32 KV cache).
// TestReferenceModel covers the decode kernels (one token a pass); the
// goldens' prompts are too short to reach these.
func TestPrefillReference(t *testing.T) {
	const tol = 1e-3
	passes := []int{48, 48, 20, 14}
	total := 0
	for _, n := range passes {
		total += n
	}
	for _, file := range sharedGGUFs {
		t.Run(file, func(t *testing.T) {
			rm := openShared(t, "models/"+file+".gguf")
			// Room for a 128-token window (tiny-gptoss) plus a pass of 48.
			const ctx = 176
			m := loadShared(t, "models/"+file+".gguf", Options{Context: ctx, KVF32: true, Batch: passes[0]})
			ref, err := reference.Load(context.Background(), rm, reference.Options{Context: ctx, KVF32: true})
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(uint64(len(file)), 15))
			ids := make([]int, total)
			for i := range ids {
				ids[i] = 1 + r.IntN(m.Config.VocabSize-1)
			}
			s, rs := newSession(t, m), ref.NewSession()
			var worst float64
			at := 0
			for _, n := range passes {
				got, err := s.ForwardAll(ids[at : at+n])
				if err != nil {
					t.Fatal(err)
				}
				want, err := rs.ForwardAll(ids[at : at+n])
				if err != nil {
					t.Fatal(err)
				}
				for i := range n {
					d, j := maxDiff(got[i], want[i])
					worst = max(worst, d)
					if d > tol {
						t.Fatalf("position %d (a pass of %d): logit %d: engine %.6f, reference %.6f (|diff| %.2e > %.0e)",
							at+i, n, j, got[i][j], want[i][j], d, tol)
					}
				}
				at += n
			}
			t.Logf("%d positions, max |logit diff| %.2e", total, worst)
		})
	}
}
