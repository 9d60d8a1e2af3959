package p2p

import (
	"context"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// TestDirectInventory: a host asks a connected peer for its inventory over
// /doppler/inventory/1 and gets what the peer announces, partial shards
// included; a model the peer does not announce is answered "not found".
func TestDirectInventory(t *testing.T) {
	model := rdrr.Sum([]byte("model"))
	other := rdrr.Sum([]byte("other"))
	a, b := quietPair(t) // what b learns comes from the ask
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	have := wire.NewBitmap(3)
	have.Set(0)
	part := wire.NewBitmap(5)
	part.Set(4)
	inv := wire.Inventory{Model: model, Have: have, Partial: []wire.Partial{{Shard: 2, Blocks: part}}}
	if err := a.Announce(ctx, inv); err != nil {
		t.Fatal(err)
	}
	if err := b.Subscribe(ctx, model, nil); err != nil {
		t.Fatal(err)
	}
	ap := b.h.Network().Peers()[0]
	got, err := b.fetchInventory(ctx, ap, model)
	if err != nil || got == nil {
		t.Fatalf("ask: %+v, %v", got, err)
	}
	if got.Peer != a.ID() || !got.Have.Has(0) || len(got.Partial) != 1 || got.Partial[0].Shard != 2 ||
		!got.Partial[0].Blocks.Has(4) || got.TTL == 0 || got.Seq == 0 {
		t.Errorf("got %+v", got)
	}
	if got, err := b.fetchInventory(ctx, ap, other); err != nil || got != nil {
		t.Errorf("model not announced: %+v, %v", got, err)
	}
	// Subscribing asked the connected peers already.
	testenv.Eventually(t, 5*time.Second, "b holds a's inventory", func() bool {
		invs := b.Inventories(model)
		return len(invs) == 1 && invs[0].Peer == a.ID() && len(invs[0].Inv.Partial) == 1
	})
	// A peer that connects later is asked at once.
	c := newHost(t, nil, quiet)
	if err := c.Announce(ctx, wire.Inventory{Model: model, Have: have}); err != nil {
		t.Fatal(err)
	}
	connect(t, c, b)
	testenv.Eventually(t, 5*time.Second, "b holds c's inventory", func() bool {
		for _, e := range b.Inventories(model) {
			if e.Peer == c.ID() {
				return true
			}
		}
		return false
	})
}
