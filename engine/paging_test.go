//go:build cgo || js

package engine

import (
	"context"
	"fmt"
	"testing"
)

// TestExpertPaging: with 2 of 4 experts per layer resident, greedy output
// equals the all-resident run and llama.cpp's golden; misses and paged
// bytes are counted.
func TestExpertPaging(t *testing.T) {
	for _, c := range []struct {
		file   string
		golden bool
	}{
		{"tiny-mixtral-F32", true},
		{"tiny-gptoss-F32", true},
		{"tiny-mixtral-Q4_K_M", false},
		{"tiny-gptoss-MXFP4_MOE", false},
	} {
		t.Run(c.file, func(t *testing.T) {
			var g onceGolden
			readGolden(t, "golden/"+c.file+".once.json", &g)
			gen := func(o Options) ([]int, PagingStats) {
				m := loadShared(t, "models/"+c.file+".gguf", o)
				res, err := newSession(t, m).Generate(context.Background(), g.PromptTokens, GenerateOptions{MaxTokens: 16})
				if err != nil {
					t.Fatal(err)
				}
				return res.Tokens, res.Stats.Paging
			}
			resident, ps := gen(Options{Context: 64})
			if ps != (PagingStats{}) {
				t.Fatalf("paging counters without paging: %+v", ps)
			}
			paged, ps := gen(Options{Context: 64, ExpertCache: 2})
			if fmt.Sprint(paged) != fmt.Sprint(resident) {
				t.Fatalf("paged %v, resident %v", paged, resident)
			}
			if c.golden && fmt.Sprint(paged) != fmt.Sprint(g.Generated[:16]) {
				t.Fatalf("paged %v, llama.cpp %v", paged, g.Generated[:16])
			}
			if ps.Misses == 0 || ps.Hits == 0 || ps.BytesPaged == 0 || ps.Prefetched == 0 {
				t.Fatalf("paging counters %+v", ps)
			}
			// Below top-k the cache is raised to top-k (2 here).
			low, _ := gen(Options{Context: 64, ExpertCache: 1})
			if fmt.Sprint(low) != fmt.Sprint(resident) {
				t.Fatalf("cache 1 (raised to 2): %v", low)
			}
			t.Logf("%d hits, %d misses (%d read ahead), %d bytes paged, stall %v", ps.Hits, ps.Misses, ps.Prefetched, ps.BytesPaged, ps.Stall)
		})
	}
}

// TestExpertHooks: OnRoute sees every MoE layer's choices; hinted experts
// are read ahead and count as prefetched when a miss needs them.
func TestExpertHooks(t *testing.T) {
	var routed int
	all := func(layer int, _ []int) []ExpertRef {
		var out []ExpertRef
		for e := 0; e < 4; e++ {
			out = append(out, ExpertRef{Layer: (layer + 1) % 2, Expert: e})
		}
		return out
	}
	m := loadShared(t, "models/tiny-mixtral-F32.gguf", Options{Context: 64, ExpertCache: 2,
		OnRoute: func(layer int, experts []int) {
			if len(experts) != 2 || layer < 0 || layer > 1 {
				t.Errorf("OnRoute(%d, %v)", layer, experts)
			}
			routed++
		},
		ExpertHints: all})
	res, err := newSession(t, m).Generate(context.Background(), []int{1, 403, 407}, GenerateOptions{MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	ps := res.Stats.Paging
	if want := 2 * (3 + 9); routed != want {
		t.Fatalf("OnRoute called %d times, want %d (2 layers × 12 tokens)", routed, want)
	}
	// Hinting every expert of the next layer means every miss after the
	// first layer of the first token was read ahead.
	if ps.Misses == 0 || ps.Prefetched+2 < ps.Misses {
		t.Fatalf("%d misses, %d read ahead", ps.Misses, ps.Prefetched)
	}
}
