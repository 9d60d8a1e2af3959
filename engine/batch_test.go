//go:build cgo || js

package engine

import (
	"context"
	"slices"
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
	for _, file := range []string{"models/stories260K.gguf", "models/stories260K-Q4_K_M.gguf", "models/tiny-mixtral-Q8_0.gguf"} {
		t.Run(file, func(t *testing.T) {
			m := loadShared(t, file, Options{Context: 64})
			want := make([][]int, len(seqs))
			s := newSession(t, m)
			for i, q := range seqs {
				s.Reset()
				res, err := s.Generate(context.Background(), q.prompt, q.o)
				if err != nil {
					t.Fatal(err)
				}
				want[i] = res.Tokens
			}
			b, err := m.NewBatch(4)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			got := make([][]int, len(seqs))
			errs := make([]error, len(seqs))
			var wg sync.WaitGroup
			run := func(i int) {
				s, err := m.NewSession()
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
	b, err := m.NewBatch(1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s1, s2 := newSession(t, m), newSession(t, m)
	if err := b.Join(s1); err != nil {
		t.Fatal(err)
	}
	if err := b.Join(s1); err == nil {
		t.Error("a session joined twice")
	}
	if err := b.Join(s2); err == nil {
		t.Error("a full batch took another session")
	}
	b.Leave(s1)
	if err := b.Join(s2); err != nil {
		t.Errorf("after a Leave: %v", err)
	}
	b.Leave(s2)
}
