//go:build !js

package swarm

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// RefreshInterval is how often a fetching node asks connected peers that
// are still fetching for their inventories directly (refresh), and
// RefreshPeers the most it asks each time: those whose inventory is the
// oldest, so every peer is asked in turn and what a node sends and
// receives for refreshes stays bounded however many peers it is
// connected to.
const (
	RefreshInterval = time.Second
	RefreshPeers    = 8
)

// MaxWatches is the most peers one fetch watches at once (see refresh);
// a peer whose watch failed is watched again after watchRetry, one that
// does not speak the protocol (or does not follow the model) after
// watchUnsupported, and asked meanwhile.
const (
	MaxWatches       = 64
	watchRetry       = 2 * time.Second
	watchUnsupported = 30 * time.Second
)

// Blocks implements PartialSet: the blocks of a shard that the peer's
// latest inventory lists as held verified while the shard is held only
// partly there. See Holding.
func (n *Node) Blocks(p Peer, shard rdrr.Hash) (wire.Bitmap, bool) {
	var has [1]bool
	var part [1]wire.Bitmap
	n.Holding(p, []rdrr.Hash{shard}, has[:], part[:])
	return part[0], part[0].N > 0
}

// Holding implements HoldingSet, and answers Has and Blocks: for every
// shard, under one lock and one lookup of the peer per tracked model,
// whether the peer's latest inventory has the shard's bit set (an assumed
// holder without an inventory is taken to hold every shard: see assume),
// else the
// blocks it lists as held verified while the shard is held partly.
func (n *Node) Holding(p Peer, shards []rdrr.Hash, has []bool, part []wire.Bitmap) {
	id := p.ID()
	clear(has)
	clear(part)
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range n.tracked {
		bm, inv := t.view[id]
		if inv && bm.N != len(t.index) {
			continue
		}
		if !inv && !t.assumed[id] {
			continue
		}
		blocks := t.part[id]
		same := len(shards) == len(t.shards) // the fetch's table is the manifest's, mostly
		for s, h := range shards {
			i, ok := s, same && t.shards[s] == h
			if !ok {
				i, ok = t.index[h]
			}
			if !ok || has[s] {
				continue
			}
			if !inv || bm.Has(i) {
				has[s], part[s] = true, wire.Bitmap{}
				continue
			}
			if b, ok := blocks[i]; ok && part[s].N == 0 {
				part[s] = b
			}
		}
	}
}

// refresh keeps the inventories of model id's connected peers fresh
// while this node fetches it, until ctx ends, calling changed whenever a
// watched peer pushes one. It watches every peer that
// does not hold the model complete (p2p.WatchProtocol: the peer pushes
// each change, a block verified, as it happens), up to MaxWatches at a
// time, and every RefreshInterval asks the others whose inventory may
// have changed since it was received (a peer that announced none, holds
// shards partly or lacks some) directly: peers that do not speak the
// watch protocol or whose watch failed lately (retried after
// watchRetry), and those beyond MaxWatches. On a large topic gossip
// refreshes an inventory every 2 × peers / budget minutes, far too
// seldom to follow the blocks a peer receives, and asking at most
// RefreshPeers a second left a neighbour's new block unknown here for
// seconds: at 30 real peers on 40 Mbit/s links, with one block per hop
// taking a fifth of a second, that lag was a sixth of the swarm's time.
func (n *Node) refresh(ctx context.Context, id rdrr.ModelID, changed func()) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		watching = map[string]bool{}
		retry    = map[string]time.Time{} // no watch before
	)
	defer wg.Wait()
	watch := func(p string) {
		defer wg.Done()
		err := n.host.WatchInventory(ctx, p, id, func(inv wire.Inventory) bool {
			changed()
			return !holdsAll(inv, id)
		})
		mu.Lock()
		defer mu.Unlock()
		delete(watching, p)
		switch {
		case errors.Is(err, p2p.ErrWatchUnsupported):
			retry[p] = time.Now().Add(watchUnsupported)
		case err != nil:
			retry[p] = time.Now().Add(watchRetry)
			n.log.Debug("swarm: inventory watch", "peer", p, "model", id.Short(), "err", err)
		}
	}
	t := time.NewTicker(RefreshInterval)
	defer t.Stop()
	for {
		skip := map[string]bool{} // received within the interval, or holding the model
		done := map[string]bool{} // holding the model: neither watched nor asked
		got := map[string]time.Time{}
		for _, e := range n.host.Inventories(id) {
			done[e.Peer] = holdsAll(e.Inv, id)
			skip[e.Peer] = time.Since(e.Received) < RefreshInterval || done[e.Peer]
			got[e.Peer] = e.Received
		}
		var ask []string
		now := time.Now()
		mu.Lock()
		for _, p := range n.host.Peers() {
			switch {
			case watching[p] || done[p]:
			case len(watching) < MaxWatches && !now.Before(retry[p]):
				watching[p] = true
				wg.Add(1)
				go watch(p)
			case !skip[p]:
				ask = append(ask, p)
			}
		}
		mu.Unlock()
		// The oldest first (a peer with none: the zero time), ties in a
		// random order so that equally old peers are asked in turn.
		rand.Shuffle(len(ask), func(i, j int) { ask[i], ask[j] = ask[j], ask[i] })
		slices.SortStableFunc(ask, func(a, b string) int { return got[a].Compare(got[b]) })
		ask = ask[:min(len(ask), RefreshPeers)]
		if len(ask) > 0 {
			n.host.AskInventories(ctx, id, ask)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// holdsAll reports whether inv says its peer holds model id complete.
func holdsAll(inv wire.Inventory, id rdrr.ModelID) bool {
	for _, m := range inv.Models {
		if m == id {
			return true
		}
	}
	return false
}
