//go:build !js

package swarm

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// TestRefreshWatches: while a node fetches, a connected peer that is
// itself fetching pushes each change of its inventory (the watch) and the
// fetch is woken for each; a peer without the watch protocol (an older
// node) is still followed (by gossip, and by asking it every
// RefreshInterval), and wakes nothing.
func TestRefreshWatches(t *testing.T) {
	for _, c := range []struct {
		name  string
		watch bool
	}{{"watched", true}, {"no watch", false}} {
		t.Run(c.name, func(t *testing.T) {
			id := rdrr.Sum([]byte("model " + c.name))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
			if err != nil {
				t.Fatal(err)
			}
			peer, err := p2p.New(ctx, p2p.Options{Libp2p: h, NoDHT: true, AnnounceInterval: time.Hour, Logger: testLogger(t)}, nil)
			if err != nil {
				h.Close()
				t.Fatal(err)
			}
			defer peer.Close()
			if !c.watch {
				h.RemoveStreamHandler(p2p.WatchProtocol)
			}
			n := newNode(t, openStore(t, t.TempDir(), 0), func(o *NodeOptions) {
				o.Host.NoDHT = true
				o.Host.AnnounceInterval = time.Hour // what n learns comes from the watch or the asks
			})
			n.mu.Lock()
			_, err = n.track(id)
			n.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			const shards = 6
			have := wire.NewBitmap(shards)
			announce := func() {
				t.Helper()
				if err := peer.Announce(ctx, wire.Inventory{Model: id, Have: have.Clone()}); err != nil {
					t.Fatal(err)
				}
			}
			announce()
			addr := h.Network().ListenAddresses()[0].String() + "/p2p/" + h.ID().String()
			if _, errs := n.Connect(ctx, []string{addr}); len(errs) > 0 {
				t.Fatal(errs[0])
			}
			var woken atomic.Int64
			rctx, rcancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				n.refresh(rctx, id, func() { woken.Add(1) })
			}()
			defer func() { rcancel(); <-done }()
			holds := func(s int) bool {
				for _, e := range n.host.Inventories(id) {
					if e.Peer == peer.ID() && e.Inv.Have.Has(s) {
						return true
					}
				}
				return false
			}
			// Every shard but the last: the peer is still fetching.
			// Gossip may bring a change before the watch pushes it, so each
			// change waits for its wake-up too: pushes within watchGap of
			// each other ride together.
			for s := range shards - 1 {
				before := woken.Load()
				have.Set(s)
				announce()
				start := time.Now()
				testenv.Eventually(t, 5*time.Second, "the node sees the peer's new shard", func() bool { return holds(s) })
				t.Logf("shard %d seen after %v", s, time.Since(start).Round(time.Millisecond))
				if c.watch {
					testenv.Eventually(t, 5*time.Second, "the change wakes the fetch", func() bool { return woken.Load() > before })
				}
			}
			if !c.watch && woken.Load() != 0 {
				t.Fatalf("fetch woken %d times without a watch", woken.Load())
			}
		})
	}
}
