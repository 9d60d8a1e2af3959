package swarm

import (
	"context"
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
