package prefilltest

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// refModel is a model whose manifest has the shape Reference reads.
func refModel(ctxLen int) *rdrr.Model {
	return &rdrr.Model{Manifest: &rdrr.Manifest{Config: rdrr.Config{Layers: 2, KVHeads: 2, HeadDim: 4, VocabSize: 50, ContextLength: ctxLen}}}
}

func refSessionOf(t *testing.T, ctxLen int, f32 bool) swarm.PrefillSession {
	t.Helper()
	s, err := Reference(context.Background(), refModel(ctxLen), swarm.PrefillLoad{Context: ctxLen, KVF32: f32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestReferenceKV: an exported prefix imported into another session and
// continued gives the logits of prefilling the whole prompt there, for
// both element sizes; a flipped bit in the cache changes the logits; the
// layout is block-major as the engine's, so a prefix of n positions is
// each block's first rows.
func TestReferenceKV(t *testing.T) {
	prompt := []int{1, 7, 3, 44, 9, 12}
	n := len(prompt)
	for _, f32 := range []bool{false, true} {
		a, b := refSessionOf(t, 16, f32), refSessionOf(t, 16, f32)
		elem := map[bool]int{false: 2, true: 4}[f32]
		if a.KVF16() == f32 || a.KVBytes(3) != 2*2*2*3*4*elem {
			t.Fatalf("f32 %v: KVF16 %v, KVBytes(3) %d", f32, a.KVF16(), a.KVBytes(3))
		}
		want, err := a.Forward(prompt)
		if err != nil {
			t.Fatal(err)
		}
		full, err := a.ExportKV(n)
		if err != nil {
			t.Fatal(err)
		}
		prefix, err := a.ExportKV(n - 1)
		if err != nil {
			t.Fatal(err)
		}
		row := 4 * elem // head_dim elements
		for blk := range 8 {
			if !slices.Equal(prefix[blk*(n-1)*row:][:(n-1)*row], full[blk*n*row:][:(n-1)*row]) {
				t.Fatalf("f32 %v: block %d of the %d-position export is not the full export's first rows", f32, blk, n-1)
			}
		}
		if err := b.ImportKV(n-1, prefix); err != nil || b.Pos() != n-1 {
			t.Fatalf("import: %v, pos %d", err, b.Pos())
		}
		got, err := b.Forward(prompt[n-1:])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("f32 %v: logits after import differ from a local prefill", f32)
		}
		prefix[1] ^= 0x80
		if err := b.ImportKV(n-1, prefix); err != nil {
			t.Fatal(err)
		}
		if got, _ = b.Forward(prompt[n-1:]); slices.Equal(got, want) {
			t.Fatalf("f32 %v: a tampered cache gives the same logits", f32)
		}
	}
}

// TestReferenceErrors: the session refuses what the engine's refuses.
func TestReferenceErrors(t *testing.T) {
	s := refSessionOf(t, 4, false)
	for _, c := range []struct {
		name string
		err  func() error
		want string
	}{
		{"past the cache", func() error { _, err := s.Forward([]int{1, 2, 3, 4, 5}); return err }, "exceed the 4-token cache"},
		{"outside the vocabulary", func() error { _, err := s.Forward([]int{50}); return err }, "outside the 50-token vocabulary"},
		{"no tokens", func() error { _, err := s.Forward(nil); return err }, "no tokens"},
		{"export of an empty cache", func() error { _, err := s.ExportKV(1); return err }, "holding 0"},
		{"import past the cache", func() error { return s.ImportKV(5, make([]byte, s.KVBytes(5))) }, "4-token cache"},
		{"import of the wrong size", func() error { return s.ImportKV(2, make([]byte, 3)) }, "want"},
	} {
		if err := c.err(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	if _, err := Reference(context.Background(), &rdrr.Model{Manifest: &rdrr.Manifest{}}, swarm.PrefillLoad{}); err == nil {
		t.Error("a manifest without a config was loaded")
	}
}
