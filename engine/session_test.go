//go:build cgo || js

package engine

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
)

// TestRewind: after Rewind(k), feeding more tokens gives the logits of a
// fresh session fed the first k tokens and those; out-of-range positions
// are refused and leave the cache as it was.
func TestRewind(t *testing.T) {
	m := loadShared(t, "models/stories260K.gguf", Options{Context: 64, KVF32: true})
	ids := []int{1, 403, 407, 261, 378, 432, 383, 286, 261, 376}
	more := []int{298, 315, 421}
	s := newSession(t, m)
	if _, err := s.Forward(ids); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []int{-1, len(ids) + 1} {
		if err := s.Rewind(bad); err == nil {
			t.Fatalf("Rewind(%d) with %d tokens cached was accepted", bad, len(ids))
		}
		if s.Pos() != len(ids) {
			t.Fatalf("a refused Rewind(%d) moved the cache to %d", bad, s.Pos())
		}
	}
	const k = 6
	if err := s.Rewind(k); err != nil {
		t.Fatal(err)
	}
	if s.Pos() != k {
		t.Fatalf("Pos() = %d after Rewind(%d)", s.Pos(), k)
	}
	got, err := s.Forward(more)
	if err != nil {
		t.Fatal(err)
	}
	want, err := newSession(t, m).Forward(append(ids[:k:k], more...))
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); d > 1e-4 {
			t.Fatalf("logit %d: %g after rewinding, %g fresh", i, got[i], want[i])
		}
	}
}

// TestGenerateStepsAhead: Generate submits the step that feeds a token
// back before it reads the token; when that token ends generation the step
// is taken back out of the cache. Each way of stopping leaves Pos() where
// the tokens fed put it, and going on from a stop gives the tokens of one
// uninterrupted run. The same holds for a session in a Batch, beside one
// that keeps decoding (the batch steps ahead too).
func TestGenerateStepsAhead(t *testing.T) {
	m := loadShared(t, "models/stories260K.gguf", Options{Context: 64})
	prompt := []int{1, 403, 407, 261, 378}
	whole, err := newSession(t, m).Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 24})
	if err != nil {
		t.Fatal(err)
	}
	T := whole.Tokens
	if len(T) != 24 {
		t.Fatalf("%d tokens, want 24", len(T))
	}
	// k: where the stop falls — the first token whose id has not come before.
	k := 0
	for i := 4; i < len(T)-8 && k == 0; i++ {
		if !slices.Contains(T[:i], T[i]) {
			k = i
		}
	}
	if k == 0 {
		t.Fatalf("no fresh token to stop on in %v", T)
	}
	// session makes the session under test: alone, or in a batch beside a
	// companion that decodes until it has its tokens (or the session
	// leaves).
	session := func(t *testing.T, batched bool) *Session {
		if !batched {
			return newSession(t, m)
		}
		b, err := m.NewBatch(2)
		if err != nil {
			t.Fatal(err)
		}
		s, err := b.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		c, err := b.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range []*Session{s, c} {
			if err := b.Join(x); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			defer b.Leave(c)
			if _, err := c.Generate(context.Background(), []int{1, 298}, GenerateOptions{MaxTokens: 40}); err != nil {
				t.Error(err)
			}
		})
		t.Cleanup(func() {
			b.Leave(s)
			wg.Wait()
			c.Close()
			s.Close()
			b.Close()
		})
		return s
	}
	n := 0
	for _, c := range []struct {
		name    string
		o       GenerateOptions
		reason  string
		tokens  int // generated
		fed     int // of them, the ones in the cache
		ctxDone bool
	}{
		{"length", GenerateOptions{MaxTokens: k}, "length", k, k - 1, false},
		{"eos", GenerateOptions{MaxTokens: 24, StopAtEOG: func(id int) bool { return id == T[k] }}, "eos", k, k, false},
		{"stop", GenerateOptions{MaxTokens: 24, StopText: func(id int) bool { return id == T[k] }}, "stop", k + 1, k, false},
		{"interrupted", GenerateOptions{MaxTokens: 24}, "interrupted", k, k - 1, true},
	} {
		for _, batched := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/batched=%v", c.name, batched), func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if c.ctxDone {
					n = 0
					c.o.OnToken = func(int) error {
						if n++; n == k {
							cancel()
						}
						return nil
					}
				}
				s := session(t, batched)
				res, err := s.Generate(ctx, prompt, c.o)
				if err != nil {
					t.Fatal(err)
				}
				if res.Reason != c.reason || !slices.Equal(res.Tokens, T[:c.tokens]) {
					t.Fatalf("%q %v, want %q %v", res.Reason, res.Tokens, c.reason, T[:c.tokens])
				}
				if s.Pos() != len(prompt)+c.fed {
					t.Fatalf("Pos() = %d after %d prompt tokens and %d fed", s.Pos(), len(prompt), c.fed)
				}
				// Feed the rest of T[:k+1] and go on: the continuation of the
				// whole run, token for token.
				more, err := s.Generate(context.Background(), T[c.fed:k+1], GenerateOptions{MaxTokens: 24 - k - 1})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(more.Tokens, T[k+1:]) {
					t.Fatalf("went on with %v, the whole run with %v", more.Tokens, T[k+1:])
				}
			})
		}
	}
}

// TestPenaltyStepsAhead: with a repetition penalty the sampled tokens
// reach the penalty's history on the GPU (the step that feeds a token
// back appends it), so Generate still steps ahead; its greedy tokens are
// those of a one-token-at-a-time loop that penalizes on the CPU.
func TestPenaltyStepsAhead(t *testing.T) {
	m := loadShared(t, "models/stories260K.gguf", Options{Context: 64})
	prompt := []int{1, 403, 407, 261}
	const n, lastN, pen = 48, 32, 1.5
	res, err := newSession(t, m).Generate(context.Background(), prompt, GenerateOptions{MaxTokens: n, Sample: SampleOptions{RepPenalty: pen, RepLastN: lastN}})
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(t, m)
	logits, err := s.Forward(prompt)
	if err != nil {
		t.Fatal(err)
	}
	hist := slices.Clone(prompt)
	inv := float32(1) / float32(pen)
	var want []int
	for range n {
		l := slices.Clone(logits)
		seen := map[int]bool{}
		for _, id := range hist[max(0, len(hist)-lastN):] {
			if seen[id] {
				continue
			}
			seen[id] = true
			if l[id] > 0 {
				l[id] *= inv
			} else {
				l[id] *= float32(pen)
			}
		}
		id := argmax(l)
		want = append(want, id)
		hist = append(hist, id)
		if logits, err = s.Forward([]int{id}); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(res.Tokens, want) {
		t.Fatalf("Generate %v\n by hand  %v", res.Tokens, want)
	}
	if plain, err := newSession(t, m).Generate(context.Background(), prompt, GenerateOptions{MaxTokens: n}); err != nil || slices.Equal(plain.Tokens, want) {
		t.Fatalf("the penalty changed nothing (%v): %v", err, want)
	}
}
