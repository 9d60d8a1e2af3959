//go:build cgo || js

package engine

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
)

type batchSeq struct {
	prompt []int
	o      GenerateOptions
}

// TestBatchTokens: sequences decoded together in a Batch (different
// prompts, lengths and samplers; one joins while the others decode, and
// they leave as they finish) give each the tokens it gets alone.
func TestBatchTokens(t *testing.T) {
	greedy := func(n int) GenerateOptions { return GenerateOptions{MaxTokens: n} }
	seqs := []batchSeq{
		{[]int{1, 403, 407, 261, 378, 432, 383, 286, 261, 376}, greedy(24)},
		{[]int{1, 298}, greedy(12)},
		{[]int{1, 261, 376, 432}, GenerateOptions{MaxTokens: 18, Sample: SampleOptions{Temp: 0.9, TopK: 20, TopP: 0.9, RepPenalty: 1.1, Seed: 5}}},
		{[]int{1, 403, 407, 261, 378}, greedy(16)}, // joins late
	}
	// Llama 2 in F32 and Q4_K_M, Mixtral (MoE), Gemma 3 (q/k norms, sliding
	// windows, sandwich norms), GPT-OSS (sinks, windows, MXFP4 experts).
	models := map[string]func(t *testing.T) *Model{
		// Q4_K with Options.Q8X: every product on 8-bit activations.
		"synth-q4k-q8x": func(t *testing.T) *Model { return loadSynthQ4K(t, Options{Context: 64, Q8X: true}) },
		// RoPE and the cache writes inside the attention, alone and batched.
		"stories260K-Q4_K_M rope-in-attention": func(t *testing.T) *Model {
			return loadShared(t, "models/stories260K-Q4_K_M.gguf", Options{Context: 64, RoPEInAttention: true})
		},
		"tiny-gptoss rope-in-attention": func(t *testing.T) *Model {
			return loadShared(t, "models/tiny-gptoss-MXFP4_MOE.gguf", Options{Context: 64, RoPEInAttention: true})
		},
	}
	for _, file := range []string{"models/stories260K.gguf", "models/stories260K-Q4_K_M.gguf", "models/tiny-mixtral-Q8_0.gguf", "hf/gemma3", "models/tiny-gptoss-MXFP4_MOE.gguf"} {
		models[file] = func(t *testing.T) *Model { return loadShared(t, file, Options{Context: 64}) }
	}
	for _, name := range slices.Sorted(maps.Keys(models)) {
		t.Run(name, func(t *testing.T) {
			m := models[name](t)
			want := make([][]int, len(seqs))
			wantKV := make([][]byte, len(seqs)) // the cache after it: the bits of every layer's q/k/v product
			s := newSession(t, m)
			for i, q := range seqs {
				s.Reset()
				res, err := s.Generate(context.Background(), q.prompt, q.o)
				if err != nil {
					t.Fatal(err)
				}
				want[i] = res.Tokens
				if wantKV[i], err = s.ExportKV(s.Pos()); err != nil {
					t.Fatal(err)
				}
			}
			b, err := m.NewBatch(4)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			got := make([][]int, len(seqs))
			gotKV := make([][]byte, len(seqs))
			errs := make([]error, len(seqs))
			var wg sync.WaitGroup
			run := func(i int) {
				s, err := b.NewSession()
				if err == nil {
					err = b.Join(s)
				}
				if err != nil {
					errs[i] = err
					return
				}
				wg.Go(func() {
					defer s.Close()
					defer b.Leave(s)
					res, err := s.Generate(context.Background(), seqs[i].prompt, seqs[i].o)
					if res != nil {
						got[i] = res.Tokens
					}
					if err == nil {
						gotKV[i], err = s.ExportKV(s.Pos())
					}
					errs[i] = err
				})
			}
			late := len(seqs) - 1
			var once sync.Once
			first := seqs[0].o
			n0 := 0
			first.OnToken = func(int) error {
				if n0++; n0 == 5 {
					once.Do(func() { run(late) })
				}
				return nil
			}
			seqs0 := seqs[0]
			seqs[0].o = first
			for i := range late {
				run(i)
			}
			wg.Wait()
			seqs[0] = seqs0
			for i := range seqs {
				if errs[i] != nil {
					t.Fatalf("sequence %d: %v", i, errs[i])
				}
				if !slices.Equal(got[i], want[i]) {
					t.Errorf("sequence %d: batched %v\n alone %v", i, got[i], want[i])
				}
				if !bytes.Equal(gotKV[i], wantKV[i]) {
					t.Errorf("sequence %d: its KV cache (%d bytes) differs from the one alone (%d bytes)", i, len(gotKV[i]), len(wantKV[i]))
				}
			}
			st := b.Stats()
			if st.Steps == 0 || st.Rows <= st.Steps {
				t.Errorf("stats %+v: the sequences did not decode together", st)
			}
		})
	}
}

func TestBatchJoinErrors(t *testing.T) {
	m := loadShared(t, "models/stories260K.gguf", Options{Context: 16})
	for _, n := range []int{0, MaxBatch + 1} {
		if b, err := m.NewBatch(n); err == nil {
			b.Close()
			t.Errorf("NewBatch(%d) accepted", n)
		}
	}
	b, err := m.NewBatch(2)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Join(newSession(t, m)); err == nil {
		t.Error("a session with its own KV cache joined")
	}
	s1, err := b.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := b.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if s3, err := b.NewSession(); err == nil {
		s3.Close()
		t.Error("a batch of 2 made a third session")
	}
	if err := b.Join(s1); err != nil {
		t.Fatal(err)
	}
	if err := b.Join(s1); err == nil {
		t.Error("a session joined twice")
	}
	b.Leave(s1)
	// A closed session gives its slot back.
	s2.Close()
	s3, err := b.NewSession()
	if err != nil {
		t.Fatalf("after a Close: %v", err)
	}
	if err := b.Join(s3); err != nil {
		t.Errorf("a session in a freed slot: %v", err)
	}
	b.Leave(s3)
	s1.Close()
	s3.Close()
}

// TestBatchKVTooLarge: a batch whose KV caches would not fit one
// binding says so.
func TestBatchKVTooLarge(t *testing.T) {
	m := loadShared(t, "models/stories260K.gguf", Options{Context: 16})
	lim := m.dev.Limits().MaxStorageBufferBindingSize
	per := uint64(m.Config.KVHeads) * uint64(m.Config.HeadDim) * 2 // f16 bytes a token
	m.opts.Context = int(lim/per/2) + 1
	if b, err := m.NewBatch(2); err == nil {
		b.Close()
		t.Fatalf("a batch of 2 × %d tokens (over %d bytes a layer) was made", m.opts.Context, lim)
	} else if !strings.Contains(err.Error(), "binding") {
		t.Errorf("error %q does not say why", err)
	}
}

// TestBatchDispatches: a step's forward pass is the same ops for any
// number of sessions — one RoPEKV and one attention a layer for all of
// them (KV slots), not one a session; with RoPEInAttention the attention
// does RoPEKV's work; and, as a session's decode step, the norms fold
// into the products where they have fast kernels (Q8_0).
func TestBatchDispatches(t *testing.T) {
	for _, c := range []struct {
		model          string
		rope           bool
		perLayer, tail int
	}{
		// F32: norm, QKV, RoPEKV, attention ×2, o + residual, norm,
		// gate+up, activation, down + residual; embed, norm, LM head.
		{"stories260K.gguf", false, 10, 3},
		{"stories260K.gguf", true, 9, 3},
		// Q8_0: the norms inside QKV, gate+up (with the activation) and
		// the head.
		{"stories260K-Q8_0.gguf", false, 7, 2},
		{"stories260K-Q8_0.gguf", true, 6, 2},
	} {
		m := loadShared(t, "models/"+c.model, Options{Context: 16, RoPEInAttention: c.rope})
		b, err := m.NewBatch(4)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		want := m.Config.Layers*c.perLayer + c.tail
		for _, n := range []int{1, 2, 4} {
			ops, err := b.plan(n)
			if err != nil {
				t.Fatal(err)
			}
			if len(ops) != want {
				t.Errorf("%s, a step of %d sessions (RoPE in attention %v): %d dispatches, want %d", c.model, n, c.rope, len(ops), want)
			}
		}
	}
}

// TestBatchStepsAhead: a batch steps ahead as a session alone does — a
// member submits its next step before it reads this one's token — so
// every step after the first goes in before its predecessor's tokens are
// read (BatchStats.Ahead), and the tokens are still the ones alone.
func TestBatchStepsAhead(t *testing.T) {
	m := loadShared(t, "models/stories260K.gguf", Options{Context: 64})
	prompt := []int{1, 403, 407, 261}
	o := GenerateOptions{MaxTokens: 12}
	want, err := newSession(t, m).Generate(context.Background(), prompt, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.NewBatch(2)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := b.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := b.Join(s); err != nil {
		t.Fatal(err)
	}
	got, err := s.Generate(context.Background(), prompt, o)
	b.Leave(s)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Tokens, want.Tokens) {
		t.Fatalf("batched %v, alone %v", got.Tokens, want.Tokens)
	}
	// The prefill samples the first token; each later one is a step.
	st := b.Stats()
	if st.Steps != uint64(o.MaxTokens-1) || st.Ahead != st.Steps-1 {
		t.Fatalf("stats %+v: want %d steps, all but the first ahead", st, o.MaxTokens-1)
	}
}
