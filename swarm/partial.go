//go:build !js

package swarm

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"

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
		for s, h := range shards {
			i, ok := t.index[h]
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

// refresh asks, every RefreshInterval until ctx ends, the connected peers
// whose inventory of model id may have changed since it was received (a
// peer that announced none, holds shards partly or lacks some) for it
// directly: on a large topic gossip refreshes an inventory every
// 2 × peers / budget minutes, far too seldom to follow the blocks a
// peer receives.
func (n *Node) refresh(ctx context.Context, id rdrr.ModelID) {
	t := time.NewTicker(RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		skip := map[string]bool{} // received within the interval, or holding the model
		got := map[string]time.Time{}
		for _, e := range n.host.Inventories(id) {
			skip[e.Peer] = time.Since(e.Received) < RefreshInterval || holdsAll(e.Inv, id)
			got[e.Peer] = e.Received
		}
		var ask []string
		for _, p := range n.host.Peers() {
			if !skip[p] {
				ask = append(ask, p)
			}
		}
		// The oldest first (a peer with none: the zero time), ties in a
		// random order so that equally old peers are asked in turn.
		rand.Shuffle(len(ask), func(i, j int) { ask[i], ask[j] = ask[j], ask[i] })
		slices.SortStableFunc(ask, func(a, b string) int { return got[a].Compare(got[b]) })
		ask = ask[:min(len(ask), RefreshPeers)]
		if len(ask) > 0 {
			n.host.AskInventories(ctx, id, ask)
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
