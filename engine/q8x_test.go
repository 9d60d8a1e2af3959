//go:build cgo || js

package engine

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/doppler-llm/doppler/engine/reference"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

// TestQ8XReference: with Options.Q8X a decode step's Q4_K products take
// their input rounded to 8 bits. The logits of a small Q4_K llama (random
// weights, every width a multiple of 128 so every product takes the
// integer-dot kernel) agree with the whole-model reference rounding the
// same inputs (reference.Options.Q8X) within 1e-3 at every step, and
// differ from the f32-activation engine's — the rounding is really on.
func TestQ8XReference(t *testing.T) {
	rm := synthQ4K(t)
	load := func(q8x bool) *Session {
		m, err := Load(context.Background(), testDevice(t), rm, Options{Context: 64, KVF32: true, Q8X: q8x})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		return newSession(t, m)
	}
	s, plain := load(true), load(false)
	ref, err := reference.Load(context.Background(), rm, reference.Options{Context: 64, KVF32: true, Q8X: true})
	if err != nil {
		t.Fatal(err)
	}
	rs := ref.NewSession()
	var worst, moved float64
	for step, id := range []int{1, 17, 300, 42, 99, 5, 250, 511} {
		got, err := s.Forward([]int{id})
		if err != nil {
			t.Fatal(err)
		}
		want, err := rs.Forward([]int{id})
		if err != nil {
			t.Fatal(err)
		}
		f32, err := plain.Forward([]int{id})
		if err != nil {
			t.Fatal(err)
		}
		d, at := maxDiff(got, want)
		if d > 1e-3 {
			t.Fatalf("step %d: logit %d: engine %.6f, reference %.6f (|diff| %.2e)", step, at, got[at], want[at], d)
		}
		worst = max(worst, d)
		m, _ := maxDiff(got, f32)
		moved = max(moved, m)
	}
	if moved == 0 {
		t.Fatal("8-bit activations changed no logit: Q8X is not in use")
	}
	// The norms write the 8-bit input of q, k, v, gate+up and the head
	// themselves, so a decode step adds the rounding of the attention's
	// and the activation's outputs, two dispatches a layer, and keeps
	// the three norms (a layer's two, the final one) that f32 inputs
	// fold into the products that read them.
	perStep := func(s *Session) uint64 {
		s.Reset()
		res, err := s.Generate(context.Background(), []int{1, 2, 3}, GenerateOptions{MaxTokens: 5})
		if err != nil {
			t.Fatal(err)
		}
		return res.Stats.Dispatches / uint64(len(res.Stats.TokenLatency))
	}
	layers := uint64(rm.Manifest.Config.Layers)
	if q, f := perStep(s), perStep(plain); q != f+4*layers+1 {
		t.Errorf("a decode step: %d dispatches with Q8X, %d without; want %d more", q, f, 4*layers+1)
	}
	t.Logf("max |logit diff| against the reference %.2e; against f32 activations %.2e", worst, moved)
}

// synthQ4K writes a small Q4_K llama with random weights (Q6_K head),
// every width a multiple of 128 so every product has an integer-dot
// kernel, and opens it.
func synthQ4K(t *testing.T) *rdrr.Model {
	t.Helper()
	cfg := rdrr.Config{Architecture: "llama", ContextLength: 64, HiddenSize: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64,
		FFN: 512, VocabSize: 512, NormEps: 1e-5, Activation: "silu", Rope: rdrr.RoPE{Theta: 10000, Dim: 64, Style: "normal"}}
	dir := filepath.Join(t.TempDir(), "q4k")
	if _, err := convert.Synthesize(context.Background(), cfg, quant.Q4_K, 3, dir, rdrr.WriterOptions{}); err != nil {
		t.Fatal(err)
	}
	rm, err := rdrr.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return rm
}

// loadSynthQ4K loads synthQ4K's model.
func loadSynthQ4K(t *testing.T, o Options) *Model {
	t.Helper()
	m, err := Load(context.Background(), testDevice(t), synthQ4K(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}
