package p2p

import (
	"context"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/rdrr"
)

func TestDHT(t *testing.T) {
	f := newFixture(t, 6, false)
	a := newHost(t, nil, nil)
	b := newHost(t, &memProvider{models: []*fixture{f}}, func(o *Options) { o.Bootstrap = a.Addrs()[:1] })
	c := newHost(t, nil, func(o *Options) { o.Bootstrap = a.Addrs()[:1] })
	for _, h := range []*Host{a, b, c} {
		testenv.Eventually(t, 5*time.Second, "routing tables filled", func() bool { return h.dht.RoutingTable().Size() >= 1 })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	model, shard := f.id, f.m.Shards[1].Hash
	for _, k := range []rdrr.Hash{model, shard} {
		if err := b.Provide(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []rdrr.Hash{model, shard} {
		var ps []PeerInfo
		testenv.Eventually(t, 5*time.Second, "c finds b as a provider", func() bool {
			fctx, fcancel := context.WithTimeout(ctx, time.Second)
			defer fcancel()
			var err error
			ps, err = c.FindProviders(fctx, k, 5)
			return err == nil && len(ps) > 0
		})
		if ps[0].ID != b.ID() || len(ps[0].Addrs) == 0 {
			t.Errorf("providers %+v, want %s with addresses", ps, b.ID())
		}
	}
	// c has never connected to b: Remote dials it through what the DHT found.
	for _, p := range c.Peers() {
		if p == b.ID() {
			t.Log("c is already connected to b")
		}
	}
	n := 0
	if err := c.Remote(b.ID()).ReadBlocks(ctx, f.m.Shards[1], 0, len(f.m.Shards[1].Blocks), func(int, []byte) error { n++; return nil }); err != nil || n != 8 {
		t.Errorf("read from a found provider: %d blocks, %v", n, err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
	defer fcancel()
	if ps, err := c.FindProviders(fctx, rdrr.Sum([]byte("nobody")), 5); len(ps) != 0 {
		t.Errorf("providers of an unprovided key: %v %v", ps, err)
	}
}
