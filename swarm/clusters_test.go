package swarm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

func ex(l, e int) wire.Expert { return wire.Expert{Layer: uint16(l), Expert: uint16(e)} }

// plantedSketch routes tokens of 4 groups through layers layers: group g
// picks experts 2g and 2g+1 in every layer, except a noise fraction of
// tokens that pick random experts.
func plantedSketch(layers, tokens int, noise float64, seed uint64) *usageSketch {
	s := newUsageSketch(1 << 15)
	rng := rand.New(rand.NewPCG(seed, 1))
	for range tokens {
		g := rng.IntN(4)
		for l := range layers {
			ch := []int{2 * g, 2*g + 1}
			if rng.Float64() < noise {
				ch = []int{rng.IntN(8), rng.IntN(8)}
			}
			s.route(l, ch)
		}
	}
	s.route(0, nil) // flush the last token
	return s
}

func TestComputeClustersPlanted(t *testing.T) {
	for _, noise := range []float64{0, 0.1} {
		s := plantedSketch(4, 400, noise, 1)
		cl := ComputeClusters(s.stats, ClusterOptions{})
		if len(cl) != 4 {
			t.Fatalf("noise %v: %d clusters: %v", noise, len(cl), cl)
		}
		for _, c := range cl {
			g := int(c[0].Expert) / 2
			var want []wire.Expert
			for l := range 4 {
				want = append(want, ex(l, 2*g), ex(l, 2*g+1))
			}
			if !slices.Equal(c, want) {
				t.Fatalf("noise %v: cluster %v, want %v", noise, c, want)
			}
		}
		// Deterministic, and a Clusters message can carry it.
		if again := ComputeClusters(s.stats, ClusterOptions{}); !sameClusters(cl, again) {
			t.Fatal("clustering is not deterministic")
		}
		if _, err := wire.Marshal(&wire.Clusters{Peer: "g", Version: 1, Clusters: cl}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestComputeClustersBounds(t *testing.T) {
	s := plantedSketch(8, 200, 0, 2) // planted clusters of 16
	cl := ComputeClusters(s.stats, ClusterOptions{MaxSize: 5})
	for _, c := range cl {
		if len(c) > 5 || len(c) < 2 {
			t.Fatalf("cluster of %d: %v", len(c), c)
		}
	}
	if len(cl) < 4 {
		t.Fatalf("%d clusters", len(cl))
	}
	if cl := ComputeClusters(s.stats, ClusterOptions{MaxClusters: 2, MaxSize: 5}); len(cl) != 2 {
		t.Fatalf("MaxClusters 2: %d", len(cl))
	}
	// Support below MinSupport: nothing.
	few := plantedSketch(2, 3, 0, 3)
	if cl := ComputeClusters(few.stats, ClusterOptions{MinSupport: 10}); len(cl) != 0 {
		t.Fatalf("clusters from 3 tokens: %v", cl)
	}
	// A chain a–b–c with strong adjacent links but a and c never together
	// stays split: average linkage.
	st := newUsageStats()
	a, b, c := ex(0, 0), ex(0, 1), ex(0, 2)
	st.Counts[a], st.Counts[b], st.Counts[c] = 100, 200, 100
	st.Pairs[mkPair(a, b)], st.Pairs[mkPair(b, c)] = 100, 100
	cl = ComputeClusters(st, ClusterOptions{})
	if len(cl) != 1 || len(cl[0]) != 2 {
		t.Fatalf("chain: %v", cl)
	}
	// Random routing: no cluster.
	r := newUsageSketch(1 << 15)
	rng := rand.New(rand.NewPCG(4, 4))
	for range 500 {
		for l := range 4 {
			r.route(l, []int{rng.IntN(8), rng.IntN(8)})
		}
	}
	if cl := ComputeClusters(r.stats, ClusterOptions{}); len(cl) != 0 {
		t.Fatalf("clusters from random routing: %v", cl)
	}
}

func TestUsageSketchBounded(t *testing.T) {
	s := newUsageSketch(1000)
	rng := rand.New(rand.NewPCG(5, 5))
	for range 300 {
		for l := range 16 {
			s.route(l, []int{rng.IntN(64), rng.IntN(64)})
		}
	}
	s.route(0, nil)
	if n := len(s.stats.Pairs); n > 1000 {
		t.Fatalf("%d pairs kept, limit 1000", n)
	}
	u, gen := s.usage(rdrr.ModelID{1}, 100)
	if gen != 300 || len(u.Pairs) != 100 {
		t.Fatalf("gen %d, %d pairs", gen, len(u.Pairs))
	}
	u.Peer = "p"
	b, err := wire.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > wire.MaxUsageFrame {
		t.Fatalf("usage frame of %d bytes", len(b))
	}
	// Hostile routing (out-of-range ids, a huge token) stays bounded.
	s.route(-1, []int{1})
	s.route(70000, []int{1})
	big := make([]int, 10000)
	for i := range big {
		big[i] = i
	}
	s.route(1, big)
	s.route(2, []int{-5, 1 << 20})
	if len(s.cur) > maxTokenExperts {
		t.Fatalf("%d experts in one token", len(s.cur))
	}
}

func TestClusterSetHints(t *testing.T) {
	n := &Node{}
	x := newTracker(n, rdrr.ModelID{})
	cl := [][]wire.Expert{{ex(0, 0), ex(0, 1), ex(1, 0), ex(1, 1), ex(2, 0), ex(2, 1)}, {ex(0, 2), ex(1, 3)}}
	x.accept(&wire.Clusters{Peer: "g", Version: 2, Clusters: cl})
	got := fmt.Sprint(x.Hints(1, []int{0, 1}))
	if want := "[{2 0} {2 1} {0 0} {0 1}]"; got != want {
		t.Fatalf("hints %s, want %s", got, want)
	}
	if h := x.Hints(1, []int{5, 6}); len(h) != 0 {
		t.Fatalf("hints for unclustered experts: %v", h)
	}
	// An older version from the same gatekeeper is ignored; another
	// gatekeeper's clusters replace the set.
	x.accept(&wire.Clusters{Peer: "g", Version: 1})
	if c, _, v := x.Clusters(); v != 2 || len(c) != 2 {
		t.Fatalf("version %d, %d clusters", v, len(c))
	}
	x.accept(&wire.Clusters{Peer: "h", Version: 1, Clusters: cl[1:]})
	if got := fmt.Sprint(x.Hints(0, []int{2, 4})); got != "[{1 3}]" {
		t.Fatalf("hints %s", got)
	}
}
