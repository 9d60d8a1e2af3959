package swarm

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/planted"
)

// The planted-cluster routing the engine reports for cmd/node's
// planted-MoE test (package planted): plantedVocab token ids in
// plantedGroups groups of consecutive ids; a token of group g selects
// experts 2g and 2g+1 in every one of plantedLayers layers.
const (
	plantedLayers = planted.Layers
	plantedVocab  = planted.Vocab
	plantedGroups = planted.Groups
)

// routePlanted reports to x what the engine's routing hook reports for
// ids on the planted model: for each token, each layer's two experts.
func routePlanted(x *ExpertTracker, ids []int) {
	for _, id := range ids {
		g := id * plantedGroups / plantedVocab
		for l := range plantedLayers {
			x.OnRoute(l, []int{2 * g, 2*g + 1})
		}
	}
}

// TestGatekeeperClusters: node A reports the planted routing of a short
// run to its tracker; the usage is gossiped to a gatekeeper, which
// clusters it and publishes the planted groups; A's tracker takes them,
// and its read-ahead hints for a chosen pair are the rest of that pair's
// cluster, later layers first. cmd/node's TestGatekeeperPrefetch runs the
// same exchange under the GPU engine and measures the read-ahead hits.
func TestGatekeeperClusters(t *testing.T) {
	src, id := synthModel(t, 1<<20, 1<<20, 64<<10, 11)
	fast := func(o *NodeOptions) {
		o.Experts.UsageInterval = 100 * time.Millisecond
		o.Experts.ClustersInterval = 500 * time.Millisecond
	}
	gate := newNode(t, seedStore(t, src), func(o *NodeOptions) { fast(o); o.Experts.Gatekeeper = true })
	a := newNode(t, seedStore(t, src), fast)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if _, errs := a.Connect(ctx, gate.Addrs()); len(errs) > 0 {
		t.Fatal(errs)
	}
	tr, err := a.Experts(id)
	if err != nil {
		t.Fatal(err)
	}
	if h := tr.Hints(0, []int{0}); h != nil {
		t.Fatalf("hints before any clusters: %v", h)
	}
	routePlanted(tr, planted.Sequence(8, 3, 1))
	tr.OnRoute(0, nil) // the last token is counted when the next starts

	deadline := time.After(20 * time.Second)
	for {
		c, from, v := tr.Clusters()
		if len(c) == plantedGroups {
			t.Logf("clusters v%d from %s: %v", v, shortID(from), c)
			if from != gate.ID() {
				t.Fatalf("clusters from %s, gatekeeper is %s", from, gate.ID())
			}
			break
		}
		select {
		case <-tr.Changed():
		case <-deadline:
			t.Fatalf("no clusters after 20s (have %v)", c)
		}
	}
	clusters, _, _ := tr.Clusters()
	for _, c := range clusters {
		if len(c) != 2*plantedLayers || int(c[0].Expert)/2 != int(c[1].Expert)/2 {
			t.Fatalf("cluster %v is not a planted group", c)
		}
	}
	if u := tr.Usage(); u.Tokens == 0 || u.Peer != a.ID() || len(u.Counts) != plantedLayers*2*plantedGroups {
		t.Fatalf("own usage: %d tokens from %s, %d experts counted", u.Tokens, u.Peer, len(u.Counts))
	}

	for _, c := range []struct {
		layer, group int
	}{{0, 0}, {5, 1}, {plantedLayers - 1, 3}} {
		var want []ExpertRef
		for _, l := range append(seq(c.layer+1, plantedLayers), seq(0, c.layer)...) {
			want = append(want, ExpertRef{l, 2 * c.group}, ExpertRef{l, 2*c.group + 1})
		}
		got := tr.Hints(c.layer, []int{2 * c.group, 2*c.group + 1})
		if !slices.Equal(got, want) {
			t.Errorf("hints at layer %d for group %d:\n got %v\nwant %v", c.layer, c.group, got, want)
		}
	}
	if h := tr.Hints(3, []int{7, 8}); len(h) != 2*plantedLayers-1 || fmt.Sprint(h[:2]) != "[{4 6} {4 7}]" {
		t.Errorf("hints for expert 7 (group 3) and 8 (no group) at layer 3: %v", h)
	}
}

// seq is lo, lo+1, …, hi-1.
func seq(lo, hi int) []int {
	var s []int
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}
