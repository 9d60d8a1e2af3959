//go:build !js

package swarm

import (
	"context"
	"time"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// RefreshInterval is how often a fetching node asks its connected peers
// that are still fetching for their inventories directly (refresh).
const RefreshInterval = time.Second

// Blocks implements PartialSet: the blocks of a shard that the peer's
// latest inventory lists as held verified while the shard is held only
// partly there.
func (n *Node) Blocks(p Peer, shard rdrr.Hash) (wire.Bitmap, bool) {
	id := p.ID()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range n.tracked {
		i, ok := t.index[shard]
		if !ok {
			continue
		}
		if bm, ok := t.view[id]; !ok || bm.N != len(t.index) {
			continue
		}
		if bm, ok := t.part[id][i]; ok {
			return bm, true
		}
	}
	return wire.Bitmap{}, false
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
		for _, e := range n.host.Inventories(id) {
			skip[e.Peer] = time.Since(e.Received) < RefreshInterval || holdsAll(e.Inv, id)
		}
		var ask []string
		for _, p := range n.host.Peers() {
			if !skip[p] {
				ask = append(ask, p)
			}
		}
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
