//go:build cgo || js

package engine

import (
	"math"
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
