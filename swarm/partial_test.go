package swarm

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// partialStore returns a store holding the model of src with only the
// blocks keep selects, written from seed's copy (verified as they are put).
func partialStore(t *testing.T, src string, seed *Store, id rdrr.ModelID, keep func(shard, block int) bool) *Store {
	t.Helper()
	s := emptyStore(t, src)
	m, _ := seed.manifest(id)
	buf := make([]byte, m.Shards[0].BlockSize)
	for i, sh := range m.Shards {
		for b := range sh.Blocks {
			if !keep(i, b) {
				continue
			}
			n, err := seed.ReadBlock(sh.Hash, b, buf)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.WriteBlock(sh.Hash, b, buf[:n]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

// partialNet is a PartialSet over peers serving from stores that may hold
// shards only partly: each announces its complete shards (Has) and its
// verified blocks of the others (Blocks).
type partialNet struct {
	peers  []Peer
	stores map[string]*Store
}

func (n *partialNet) Peers(rdrr.ModelID) []Peer { return n.peers }
func (n *partialNet) Has(p Peer, h rdrr.Hash) bool {
	return n.stores[p.ID()].Has(h)
}
func (n *partialNet) Blocks(p Peer, h rdrr.Hash) (wire.Bitmap, bool) {
	blocks := n.stores[p.ID()].PartialBlocks(h)
	if blocks == nil {
		return wire.Bitmap{}, false
	}
	bm := wire.NewBitmap(len(blocks))
	for b, ok := range blocks {
		if ok {
			bm.Set(b)
		}
	}
	return bm, true
}

// rangePeer records the blocks each request asks for.
type rangePeer struct {
	Peer
	mu    sync.Mutex
	asked map[rdrr.Hash][]int
}

func (p *rangePeer) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(int, []byte) error) error {
	p.mu.Lock()
	if p.asked == nil {
		p.asked = map[rdrr.Hash][]int{}
	}
	for b := first; b < first+count; b++ {
		p.asked[sh.Hash] = append(p.asked[sh.Hash], b)
	}
	p.mu.Unlock()
	return p.Peer.ReadBlocks(ctx, sh, first, count, fn)
}

// TestFetchFromPartialHolders: no peer holds any shard complete; one holds
// the even blocks of every shard, another the odd ones and the first half
// of shard 0. The fetch completes from the two, and never asks a peer for
// a block it does not hold.
func TestFetchFromPartialHolders(t *testing.T) {
	src, id := synthModel(t, 2<<20, 512<<10, 16<<10, 41)
	seed := seedStore(t, src)
	even := partialStore(t, src, seed, id, func(_, b int) bool { return b%2 == 0 })
	odd := partialStore(t, src, seed, id, func(s, b int) bool { return b%2 == 1 || (s == 0 && b < 16) })
	net := &partialNet{stores: map[string]*Store{"even": even, "odd": odd}}
	pe := &rangePeer{Peer: newStorePeer("even", even, 2, 100*time.Microsecond)}
	po := &rangePeer{Peer: newStorePeer("odd", odd, 2, 100*time.Microsecond)}
	net.peers = []Peer{pe, po}
	dst := emptyStore(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := dst.Fetch(ctx, id, net, FetchOptions{Poll: 10 * time.Millisecond, WaitPeers: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	sameShards(t, dst, src, id)
	logPeers(t, "dst", dst)
	for _, c := range []struct {
		p *rangePeer
		s *Store
	}{{pe, even}, {po, odd}} {
		n := 0
		for h, blocks := range c.p.asked {
			have := c.s.PartialBlocks(h)
			for _, b := range blocks {
				n++
				if !have[b] {
					t.Errorf("%s asked for block %d of shard %s, which it does not hold", c.p.ID(), b, h.Short())
				}
			}
		}
		if n == 0 {
			t.Errorf("%s was asked for nothing", c.p.ID())
		}
	}
}

// TestPartialBlocks: a store reports the verified blocks of a shard held
// partly, nothing for a complete or absent one, and serves those blocks.
func TestPartialBlocks(t *testing.T) {
	src, id := synthModel(t, 1<<20, 512<<10, 64<<10, 42)
	seed := seedStore(t, src)
	s := partialStore(t, src, seed, id, func(sh, b int) bool { return sh == 0 && (b == 1 || b == 5) })
	m, _ := s.manifest(id)
	h0, h1 := m.Shards[0].Hash, m.Shards[1].Hash
	got := s.PartialBlocks(h0)
	if len(got) != len(m.Shards[0].Blocks) || !got[1] || !got[5] || got[0] {
		t.Errorf("shard 0: %v", got)
	}
	if got := s.PartialBlocks(h1); got != nil {
		t.Errorf("absent shard: %v", got)
	}
	if got := seed.PartialBlocks(h0); got != nil {
		t.Errorf("complete shard: %v", got)
	}
	ps := PartialShards(m, s)
	if len(ps) != 1 || ps[0].Shard != 0 || ps[0].Blocks.Count() != 2 || !ps[0].Blocks.Has(5) {
		t.Errorf("inventory partial %+v", ps)
	}
	buf := make([]byte, m.Shards[0].BlockSize)
	if _, err := s.ReadBlock(h0, 5, buf); err != nil {
		t.Errorf("serving a held block of a partial shard: %v", err)
	}
	if _, err := s.ReadBlock(h0, 4, buf); err == nil {
		t.Error("served a block it does not hold")
	}
}

// TestNodePartialHolders: over real libp2p hosts, two nodes hold a shard's
// blocks only partly between them (even and odd blocks; nothing complete).
// A third pulls the model from them: it learns their partial inventories
// (asked directly on subscribing, then by gossip) and fetches every block
// of the shards neither holds complete.
func TestNodePartialHolders(t *testing.T) {
	src, id := synthModel(t, 2<<20, 1<<20, 64<<10, 43)
	seed := seedStore(t, src)
	a := newNode(t, partialStore(t, src, seed, id, func(_, b int) bool { return b%2 == 0 }), nil)
	b := newNode(t, partialStore(t, src, seed, id, func(_, b int) bool { return b%2 == 1 }), nil)
	c := newNode(t, openStore(t, t.TempDir(), 0), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Pull(ctx, id, PullOptions{Peers: []string{a.Addrs()[0], b.Addrs()[0]}}); err != nil {
		t.Fatal(err)
	}
	sameShards(t, c.Store(), src, id)
	for _, n := range []*Node{a, b} {
		if up := n.Host().Stats().Uploaded; up == 0 {
			t.Errorf("%s served nothing", shortID(n.ID()))
		}
	}
	sameHolding(t, c, id)
}

// sameHolding checks that n's Holding answers for every peer of model id
// as Has and Blocks do, shard by shard, and that some peer holds a shard
// partly (so the partial answers are compared too).
func sameHolding(t *testing.T, n *Node, id rdrr.ModelID) {
	t.Helper()
	m, ok := n.Store().manifest(id)
	if !ok {
		t.Fatalf("model %s not held", id.Short())
	}
	var shards []rdrr.Hash
	for _, sh := range m.Shards {
		shards = append(shards, sh.Hash)
	}
	partly := 0
	for _, p := range n.Peers(id) {
		has, part := make([]bool, len(shards)), make([]wire.Bitmap, len(shards))
		n.Holding(p, shards, has, part)
		for s, h := range shards {
			bm, ok := n.Blocks(p, h)
			if has[s] != n.Has(p, h) {
				t.Errorf("peer %s shard %d: Holding has %v, Has %v", p.ID(), s, has[s], !has[s])
			}
			if want := !has[s] && ok; want != (part[s].N > 0) || want && !bytes.Equal(bm.Bits, part[s].Bits) {
				t.Errorf("peer %s shard %d: Holding part %+v, Blocks %+v %v", p.ID(), s, part[s], bm, ok)
			}
			if part[s].Any() {
				partly++
			}
		}
	}
	if partly == 0 {
		t.Error("no peer holds a shard partly: the partial answers went unchecked")
	}
}
