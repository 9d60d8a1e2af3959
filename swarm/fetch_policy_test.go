package swarm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
)

// ID makes a test view name its fetching node, as a Node does, so the
// fetch places it on the territory ring by name.
func (v netView) ID() string { return v.self }

// TestFetchSeedOnce: a seed holds every shard; a peer that is not
// fetching holds half of them and is half as fast; four nodes fetch
// together. The seed sends about one copy of the half only it holds (each
// fetcher asks it for its own territory, then gets the rest from the other
// fetchers), and less than the model in all.
func TestFetchSeedOnce(t *testing.T) {
	src, id := synthModel(t, 8<<20, 512<<10, 16<<10, 41)
	seed := newStorePeer("seed", seedStore(t, src), 4, 100*time.Microsecond)
	half := seedStore(t, src)
	peer := newStorePeer("half", half, 4, 200*time.Microsecond)
	m, _ := half.manifest(id)
	held := map[rdrr.Hash]bool{}
	var onlySeed, common int64
	for i, sh := range m.Shards {
		if i%2 == 0 {
			held[sh.Hash] = true
			common += sh.Size
		} else {
			onlySeed += sh.Size
		}
	}
	net := &testNet{}
	net.add(seed, seed.s.Has)
	net.add(peer, func(h rdrr.Hash) bool { return held[h] })
	const n = 4
	stores := swarmOf(t, net, src, n, 4, 100*time.Microsecond)
	fetchAll(t, net, src, id, stores, FetchOptions{Poll: 10 * time.Millisecond, BlocksPerRequest: 8})
	var seedRare, seedCommon, fromPeer int64
	for _, sh := range m.Shards {
		if held[sh.Hash] {
			seedCommon += seed.servedBytes(sh.Hash)
		} else {
			seedRare += seed.servedBytes(sh.Hash)
		}
		fromPeer += peer.servedBytes(sh.Hash)
	}
	t.Logf("seed sent %.2f× the half only it holds and %.2f× the half the peer holds; the peer sent %.2f× its half",
		float64(seedRare)/float64(onlySeed), float64(seedCommon)/float64(common), float64(fromPeer)/float64(common))
	if seedRare > onlySeed+onlySeed/4 {
		t.Errorf("seed sent %.2f× the shards only it holds; want about one copy", float64(seedRare)/float64(onlySeed))
	}
	if total := m.TotalSize(); seedRare+seedCommon > total {
		t.Errorf("seed sent %.2f× the model to %d fetchers", float64(seedRare+seedCommon)/float64(total), n)
	}
}

// TestFetchTerritoryFallback: a peer that announces the model with no
// shard looks like a fetcher and gets a territory, but never fetches. The
// fetch completes anyway: after idling it asks the seed for the shards of
// that territory, once each.
func TestFetchTerritoryFallback(t *testing.T) {
	src, id := synthModel(t, 8<<20, 512<<10, 16<<10, 42)
	seed := newStorePeer("seed", seedStore(t, src), 4, 0)
	lazy := newStorePeer("lazy", emptyStore(t, src), 4, 0)
	net := &testNet{}
	net.add(seed, seed.s.Has)
	net.add(lazy, lazy.s.Has)
	s := emptyStore(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Fetch(ctx, id, net.view("me"), FetchOptions{Poll: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	sameShards(t, s, src, id)
	total := s.mustStatus(t, id).Bytes
	var sent int64
	m, _ := s.manifest(id)
	for _, sh := range m.Shards {
		sent += seed.servedBytes(sh.Hash)
	}
	t.Logf("fetched in %v; seed sent %.2f× the model", time.Since(start).Round(time.Millisecond), float64(sent)/float64(total))
	if sent > total+total/8 {
		t.Fatalf("seed sent %d bytes of a %d-byte model", sent, total)
	}
}

// setClock is a Clock whose time moves only when the test sets it.
type setClock struct{ now time.Time }

func (c *setClock) Now() time.Time { return c.now }
func (c *setClock) AfterFunc(d time.Duration, f func()) Timer {
	return time.AfterFunc(time.Hour, f) // never fires within a test
}

// TestSurveyStaleFetcherLosesTerritory: a peer that looked like a
// fetcher (it held nothing when first seen) keeps a territory while its
// holdings move; once they have not moved for the fallback wait (it was
// killed, its inventory not yet expired) it has none, and the shards of
// its territory are shared among the fetchers that are moving.
func TestSurveyStaleFetcherLosesTerritory(t *testing.T) {
	src, id := synthModel(t, 4<<20, 512<<10, 16<<10, 43)
	s := emptyStore(t, src)
	m, _ := s.manifest(id)
	seed := newStorePeer("seed", seedStore(t, src), 4, 0)
	var mu sync.Mutex
	held := map[rdrr.Hash]bool{}
	ghost := newStorePeer("ghost", emptyStore(t, src), 4, 0)
	net := &testNet{}
	net.add(seed, seed.s.Has)
	net.add(ghost, func(h rdrr.Hash) bool { mu.Lock(); defer mu.Unlock(); return held[h] })
	clk := &setClock{now: time.Unix(1e9, 0)}
	o := FetchOptions{Poll: 10 * time.Millisecond, Clock: clk}
	o.fill()
	f := &fetcher{s: s.fetch, bs: s, id: id, peers: net.view("me"), o: o, seen: map[string]*seenPeer{},
		reqs: map[*request]bool{}, whole: true, byIndex: make([]*fshard, len(m.Shards)),
		partBlocks: make([]int, len(m.Shards)), partGrew: make([]time.Time, len(m.Shards))}
	for i, sh := range m.Shards {
		f.all = append(f.all, sh.Hash)
		f.byIndex[i] = &fshard{sh: sh, idx: i, have: make([]bool, len(sh.Blocks)), copies: make([]int, len(sh.Blocks)), missing: len(sh.Blocks)}
	}
	f.selfKey = peerKey(id, "me")
	f.began, f.idleSince = clk.now, clk.now
	cands := func() []candidate {
		return []candidate{{p: seed, id: "seed"}, {p: ghost, id: "ghost"}}
	}
	wait := 16 * o.Poll // no seed measured: the fallback wait's floor
	steps := []struct {
		at       time.Duration
		gain     int // shards the ghost gains before this pass
		fetchers int // on the territory ring: me, and the ghost while it moves
	}{
		{0, 0, 2},
		{wait / 2, 1, 2}, // it moves
		{wait, 0, 2},     // still within the wait of its last move
		{2 * wait, 0, 1}, // no move for the wait: gone
		{3 * wait, 1, 2}, // it moves again: back
	}
	start := clk.now
	for i, st := range steps {
		clk.now = start.Add(st.at)
		mu.Lock()
		for g := 0; g < st.gain; g++ {
			held[m.Shards[len(held)].Hash] = true
		}
		mu.Unlock()
		v := f.survey(cands())
		if v.fetchers != st.fetchers {
			t.Errorf("pass %d at +%v: %d fetchers on the ring, want %d", i, st.at, v.fetchers, st.fetchers)
		}
	}
}

// TestActiveSet: with more peers than MaxPeers, a pass looks at an active
// set that keeps the seed and the peers with requests in flight, holds at
// most MaxPeers besides, keeps all but one of its useful members from one
// survey to the next, and gives every useful peer a turn over surveys.
func TestActiveSet(t *testing.T) {
	const peers, maxPeers, shards = 200, 8, 4
	f := &fetcher{o: FetchOptions{MaxPeers: maxPeers}, perPeer: map[string]int{},
		rng: rand.New(rand.NewPCG(1, 2))}
	for i := range shards {
		f.shards = append(f.shards, &fshard{idx: i})
	}
	var cs []candidate
	for i := range peers {
		c := candidate{id: fmt.Sprintf("p%03d", i), has: make([]bool, shards)}
		switch {
		case i == 0:
			c.seed = true
			for s := range c.has {
				c.has[s] = true
			}
		case i%2 == 1: // the odd peers hold a shard; the even ones nothing
			c.has[i%shards] = true
		}
		cs = append(cs, c)
	}
	f.perPeer["p002"] = 1 // a request in flight to a peer that holds nothing now
	seen := map[string]bool{}
	var prev map[string]bool
	for pass := range 1500 {
		got := f.activeSet(slices.Clone(cs))
		ids := map[string]bool{}
		for _, c := range got {
			ids[c.id] = true
			seen[c.id] = true
			if n, _ := strconv.Atoi(c.id[1:]); n%2 == 0 && n > 2 {
				t.Fatalf("pass %d: %s, which holds nothing, is active while useful peers wait", pass, c.id)
			}
		}
		if !ids["p000"] || !ids["p002"] {
			t.Fatalf("pass %d: the seed or the peer with a request in flight left the set: %v", pass, ids)
		}
		if len(got) > maxPeers+2 {
			t.Fatalf("pass %d: %d active peers, want at most %d", pass, len(got), maxPeers+2)
		}
		if prev != nil {
			kept := 0
			for id := range prev {
				if ids[id] {
					kept++
				}
			}
			if kept < len(prev)-1 {
				t.Fatalf("pass %d: kept %d of %d members, want all but one", pass, kept, len(prev))
			}
		}
		prev = ids
	}
	for i := 1; i < peers; i += 2 {
		if id := fmt.Sprintf("p%03d", i); !seen[id] {
			t.Errorf("useful peer %s never got a turn in 1500 surveys", id)
		}
	}
}

// TestSeedOnlyBeyondActiveSet: a shard that a peer outside the active set
// holds (seen by the survey) is not seed-only, even when within the
// active set only the seed holds it.
func TestSeedOnlyBeyondActiveSet(t *testing.T) {
	seed := candidate{id: "seed", seed: true, has: []bool{true, true, true}}
	peer := candidate{id: "p", has: []bool{false, false, true}}
	v := &view{cands: []candidate{seed, peer}, peerHeld: []bool{true, false, false}}
	for s, want := range []bool{false, true, false} {
		if got := v.seedOnly(s); got != want {
			t.Errorf("shard %d: seedOnly %v, want %v", s, got, want)
		}
	}
}

// inflight counts the requests in flight to a seed and to the other
// peers, and the most to the others when one of them started while a
// request to a seed was in flight.
type inflight struct {
	mu                 sync.Mutex
	seed, other, worst int
}

// countedPeer is a storePeer whose requests an inflight counts.
type countedPeer struct {
	*storePeer
	seed bool
	c    *inflight
}

func (p countedPeer) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(int, []byte) error) error {
	p.c.mu.Lock()
	if p.seed {
		p.c.seed++
	} else if p.c.other++; p.c.seed > 0 {
		p.c.worst = max(p.c.worst, p.c.other) // started beside a seed's
	}
	p.c.mu.Unlock()
	defer func() {
		p.c.mu.Lock()
		if p.seed {
			p.c.seed--
		} else {
			p.c.other--
		}
		p.c.mu.Unlock()
	}()
	return p.storePeer.ReadBlocks(ctx, sh, first, count, fn)
}

// TestFetchSeedFirst: while a whole-model fetch has a request in flight
// to a seed, it keeps at most seedCompanions requests to other peers,
// which would share its download link with the seed's upload.
func TestFetchSeedFirst(t *testing.T) {
	src, id := synthModel(t, 4<<20, 256<<10, 16<<10, 44)
	c := &inflight{}
	seed := countedPeer{newStorePeer("seed", seedStore(t, src), 8, 200*time.Microsecond), true, c}
	half := seedStore(t, src)
	m, _ := half.manifest(id)
	held := map[rdrr.Hash]bool{}
	for i, sh := range m.Shards {
		held[sh.Hash] = i%2 == 0
	}
	net := &testNet{}
	net.add(seed, seed.s.Has)
	for i := range 4 { // peers that are not fetching, each holding half
		p := countedPeer{newStorePeer(fmt.Sprintf("half%d", i), half, 8, 200*time.Microsecond), false, c}
		net.add(p, func(h rdrr.Hash) bool { return held[h] })
	}
	s := emptyStore(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Fetch(ctx, id, net.view("me"), FetchOptions{Poll: 5 * time.Millisecond, BlocksPerRequest: 2}); err != nil {
		t.Fatal(err)
	}
	sameShards(t, s, src, id)
	t.Logf("at most %d requests to other peers beside a seed's", c.worst)
	if c.worst > seedCompanions {
		t.Fatalf("%d requests to other peers in flight beside a seed's; want ≤ %d", c.worst, seedCompanions)
	}
}
