package swarm

import (
	"math"
	"slices"
	"sort"

	"github.com/doppler-llm/doppler/p2p/wire"
)

// Expert clusters: sets of (layer, expert) that the same tokens choose.
// A gatekeeper computes them from the co-firing counts peers gossip; a
// node reads a whole cluster ahead when a token picks one of its members.

// ClusterOptions tunes ComputeClusters. Zero values take the defaults shown.
type ClusterOptions struct {
	// MaxSize bounds the experts of one cluster (32, at most
	// wire.MaxClusterSize).
	MaxSize int
	// Threshold is the least normalized co-firing, n(a,b)/√(n(a)·n(b)),
	// for two experts to join (0.5); two clusters merge only when their
	// average cross affinity (missing pairs count 0) reaches it too.
	Threshold float64
	// MinSupport is the least co-firing count a pair needs (4).
	MinSupport uint64
	// MaxClusters bounds the clusters returned, largest first
	// (wire.MaxClusters).
	MaxClusters int
}

func (o *ClusterOptions) fill() {
	if o.MaxSize <= 1 || o.MaxSize > wire.MaxClusterSize {
		o.MaxSize = min(32, wire.MaxClusterSize)
	}
	if o.Threshold <= 0 || o.Threshold > 1 {
		o.Threshold = 0.5
	}
	if o.MinSupport == 0 {
		o.MinSupport = 4
	}
	if o.MaxClusters <= 0 || o.MaxClusters > wire.MaxClusters {
		o.MaxClusters = wire.MaxClusters
	}
}

// pairKey is an unordered pair of experts, a < b.
type pairKey struct{ a, b wire.Expert }

func mkPair(x, y wire.Expert) pairKey {
	if y.Less(x) {
		x, y = y, x
	}
	return pairKey{x, y}
}

// UsageStats are expert-usage counts of one model: how often each expert
// was chosen and how often two were chosen by the same token.
type UsageStats struct {
	Tokens uint64
	Counts map[wire.Expert]uint64
	Pairs  map[pairKey]uint64
}

func newUsageStats() *UsageStats {
	return &UsageStats{Counts: map[wire.Expert]uint64{}, Pairs: map[pairKey]uint64{}}
}

// add sums a Usage message into s.
func (s *UsageStats) add(u *wire.Usage) {
	s.Tokens += u.Tokens
	for _, c := range u.Counts {
		s.Counts[c.E] += uint64(c.N)
	}
	for _, p := range u.Pairs {
		s.Pairs[pairKey{p.A, p.B}] += uint64(p.N)
	}
}

// prune keeps the n most frequent pairs.
func (s *UsageStats) prune(n int) {
	if len(s.Pairs) <= n {
		return
	}
	keys := make([]pairKey, 0, len(s.Pairs))
	for k := range s.Pairs {
		keys = append(keys, k)
	}
	sortPairs(keys, s.Pairs)
	for _, k := range keys[n:] {
		delete(s.Pairs, k)
	}
}

// sortPairs orders pairs by count, most frequent first, then by key.
func sortPairs(keys []pairKey, n map[pairKey]uint64) {
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if n[a] != n[b] {
			return n[a] > n[b]
		}
		return pairLess(a, b)
	})
}

func pairLess(a, b pairKey) bool { return a.a.Less(b.a) || a.a == b.a && a.b.Less(b.b) }

// affinity is the normalized co-firing of a pair: n(a,b)/√(n(a)·n(b)), in
// [0, 1] (a missing single count is taken as n(a,b)).
func (s *UsageStats) affinity(k pairKey) float64 {
	nab := s.Pairs[k]
	if nab == 0 {
		return 0
	}
	na, nb := max(s.Counts[k.a], nab), max(s.Counts[k.b], nab)
	return float64(nab) / math.Sqrt(float64(na)*float64(nb))
}

// ComputeClusters groups experts that fire together by greedy
// agglomeration: pairs are taken by decreasing affinity (those with at
// least MinSupport co-firings and Threshold affinity); a pair joins its two
// clusters when the result holds at most MaxSize experts and the average
// affinity over every cross pair reaches Threshold (so chains of weak
// links do not merge). Clusters of one expert are dropped; members are in
// increasing order, clusters largest first then by first member. The
// result is deterministic for given stats.
func ComputeClusters(s *UsageStats, o ClusterOptions) [][]wire.Expert {
	o.fill()
	type edge struct {
		k   pairKey
		aff float64
	}
	var edges []edge
	for k, n := range s.Pairs {
		if n < o.MinSupport || k.a == k.b {
			continue
		}
		if a := s.affinity(k); a >= o.Threshold {
			edges = append(edges, edge{k, a})
		}
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].aff != edges[j].aff {
			return edges[i].aff > edges[j].aff
		}
		return pairLess(edges[i].k, edges[j].k)
	})
	of := map[wire.Expert]int{} // expert → cluster index
	var clusters [][]wire.Expert
	get := func(e wire.Expert) int {
		if c, ok := of[e]; ok {
			return c
		}
		of[e] = len(clusters)
		clusters = append(clusters, []wire.Expert{e})
		return of[e]
	}
	for _, e := range edges {
		ca, cb := get(e.k.a), get(e.k.b)
		if ca == cb || len(clusters[ca])+len(clusters[cb]) > o.MaxSize {
			continue
		}
		sum := 0.0
		for _, x := range clusters[ca] {
			for _, y := range clusters[cb] {
				sum += s.affinity(mkPair(x, y))
			}
		}
		if sum/float64(len(clusters[ca])*len(clusters[cb])) < o.Threshold {
			continue
		}
		if len(clusters[ca]) < len(clusters[cb]) {
			ca, cb = cb, ca
		}
		for _, x := range clusters[cb] {
			of[x] = ca
		}
		clusters[ca] = append(clusters[ca], clusters[cb]...)
		clusters[cb] = nil
	}
	var out [][]wire.Expert
	for _, c := range clusters {
		if len(c) < 2 {
			continue
		}
		slices.SortFunc(c, cmpExpert)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b []wire.Expert) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return cmpExpert(a[0], b[0])
	})
	if len(out) > o.MaxClusters {
		out = out[:o.MaxClusters]
	}
	total := 0
	for i, c := range out {
		if total += len(c); total > wire.MaxClusterExperts {
			out = out[:i]
			break
		}
	}
	return out
}

func cmpExpert(a, b wire.Expert) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

func sameClusters(a, b [][]wire.Expert) bool {
	return slices.EqualFunc(a, b, func(x, y []wire.Expert) bool { return slices.Equal(x, y) })
}
