package p2p

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestGossipInventory(t *testing.T) {
	model := rdrr.Sum([]byte("model"))
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	a := newHost(t, nil, nil)
	b := newHost(t, nil, nil)
	c := newHost(t, nil, func(o *Options) { o.Now = clock.Now })
	connect(t, b, a)
	connect(t, c, a)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type got struct {
		peer string
		inv  wire.Inventory
	}
	ch := make(chan got, 64)
	for _, h := range []*Host{a, b} {
		if err := h.Subscribe(ctx, model, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Subscribe(ctx, model, func(p string, inv wire.Inventory) {
		select {
		case ch <- got{p, inv}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	have := wire.NewBitmap(3)
	have.Set(1)
	inv := wire.Inventory{Model: model, Have: have, UploadFree: 1 << 20, DecodeTokS: 50, TTL: 5}
	if err := b.Announce(ctx, inv); err != nil {
		t.Fatal(err)
	}
	// b reaches c through a (b and c are not connected).
	var first got
	select {
	case first = <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no inventory within 10 s")
	}
	if first.peer != b.ID() || !first.inv.Have.Has(1) || first.inv.Have.Has(0) || first.inv.UploadFree != 1<<20 {
		t.Errorf("got %+v from %s", first.inv, first.peer)
	}
	// Periodic re-announcements carry increasing sequence numbers.
	select {
	case next := <-ch:
		if next.inv.Seq <= first.inv.Seq {
			t.Errorf("seq %d after %d", next.inv.Seq, first.inv.Seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no re-announcement")
	}
	if invs := c.Inventories(model); len(invs) != 1 || invs[0].Peer != b.ID() {
		t.Fatalf("inventories %+v", invs)
	}
	// A change is announced at once.
	have.Set(2)
	inv.Have = have
	b.Announce(ctx, inv)
	testenv.Eventually(t, 5*time.Second, "the change arrives", func() bool {
		invs := c.Inventories(model)
		return len(invs) == 1 && invs[0].Inv.Have.Has(2)
	})
	// When b stops, its entry expires after its TTL.
	b.StopAnnouncing(model)
	time.Sleep(300 * time.Millisecond) // let announcements in flight land
	clock.Add(6 * time.Second)
	if invs := c.Inventories(model); len(invs) != 0 {
		t.Errorf("after the TTL: %+v", invs)
	}
	// A forged inventory (Peer is not the sender) is rejected by validation.
	forged := wire.Inventory{Peer: b.ID(), Model: model, Have: wire.NewBitmap(1), TTL: 5, Seq: 1 << 62}
	raw, _ := wire.Marshal(&forged)
	a.mu.Lock()
	ts := a.topics[model]
	a.mu.Unlock()
	if err := ts.t.Publish(ctx, raw); err == nil {
		select {
		case g := <-ch:
			t.Errorf("forged inventory delivered: %+v", g)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// TestAnnounceBlocksWait: an announcement that differs from the last
// only in the blocks of partly held shards is not gossiped at once (the
// watchers have it; the topic gets it with the next refresh), while one
// that gains a whole shard is.
func TestAnnounceBlocksWait(t *testing.T) {
	model := rdrr.Sum([]byte("model"))
	a, b := quietPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan wire.Inventory, 16)
	// a only announces: it publishes through gossipsub's fanout, which
	// needs no mesh (a mesh forms at a heartbeat, a second on).
	if err := b.Subscribe(ctx, model, func(_ string, inv wire.Inventory) { got <- inv }); err != nil {
		t.Fatal(err)
	}
	// Publish once a knows b follows the topic (AnnounceInterval is an
	// hour: a first message sent before that would not be repeated).
	a.mu.Lock()
	_, err := a.topic(model)
	a.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "a sees b on the topic", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.topics[model].t.ListPeers()) > 0
	})
	next := func(what string) wire.Inventory {
		t.Helper()
		select {
		case inv := <-got:
			return inv
		case <-time.After(10 * time.Second):
			t.Fatalf("no inventory within 10 s: %s (b holds %+v)", what, b.Inventories(model))
			return wire.Inventory{}
		}
	}
	have := wire.NewBitmap(3)
	blocks := wire.NewBitmap(4)
	blocks.Set(0)
	inv := wire.Inventory{Model: model, Have: have.Clone(), Partial: []wire.Partial{{Shard: 1, Blocks: blocks.Clone()}}}
	if err := a.Announce(ctx, inv); err != nil {
		t.Fatal(err)
	}
	// The first announcement reaches b by gossip, or directly: b asked a
	// for its inventory when it subscribed, and when a answers that only
	// after announcing (a loaded machine), b records it from the answer
	// and the gossiped copy is no longer new to it (fn is not called).
	firstSeen := func() bool {
		for _, e := range b.Inventories(model) {
			if e.Peer == a.ID() && len(e.Inv.Partial) == 1 {
				return true
			}
		}
		return false
	}
	for waited := time.Duration(0); ; waited += 100 * time.Millisecond {
		select {
		case first := <-got:
			if len(first.Partial) != 1 {
				t.Fatalf("first announcement: %+v", first)
			}
		case <-time.After(100 * time.Millisecond):
			// Gossip gets a second before the direct answer counts.
			if waited < time.Second || !firstSeen() {
				if waited >= 10*time.Second {
					t.Fatalf("no inventory within 10 s: the first announcement (b holds %+v)", b.Inventories(model))
				}
				continue
			}
			t.Log("the first announcement came by b's direct ask, not by gossip")
		}
		break
	}
	blocks.Set(1)
	inv.Partial = []wire.Partial{{Shard: 1, Blocks: blocks.Clone()}}
	if err := a.Announce(ctx, inv); err != nil {
		t.Fatal(err)
	}
	select {
	case inv := <-got:
		t.Fatalf("a change of blocks alone was gossiped at once: %+v", inv)
	case <-time.After(time.Second):
	}
	have.Set(2)
	inv.Have = have.Clone()
	if err := a.Announce(ctx, inv); err != nil {
		t.Fatal(err)
	}
	if g := next("a whole shard gained"); !g.Have.Has(2) || !g.Partial[0].Blocks.Has(1) {
		t.Fatalf("after a shard gained: %+v", g)
	}
}

// TestSuperSeedRelaysNoGossip: a super-seed follows a model without
// joining its gossip mesh, so it does not forward the inventories its
// peers announce (its upload is kept for blocks); a plain host between
// the same two peers does.
func TestSuperSeedRelaysNoGossip(t *testing.T) {
	for _, c := range []struct {
		name  string
		super bool
	}{{"plain host relays", false}, {"super-seed does not", true}} {
		t.Run(c.name, func(t *testing.T) {
			model := rdrr.Sum([]byte("model"))
			// No DHT: it would connect b and d directly.
			mid := newHost(t, nil, func(o *Options) {
				o.NoDHT = true
				if c.super {
					o.SuperSeed = time.Second
				}
			})
			b := newHost(t, nil, func(o *Options) { o.NoDHT = true })
			d := newHost(t, nil, func(o *Options) { o.NoDHT = true })
			connect(t, b, mid)
			connect(t, d, mid)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := mid.Subscribe(ctx, model, nil); err != nil {
				t.Fatal(err)
			}
			if err := b.Subscribe(ctx, model, nil); err != nil {
				t.Fatal(err)
			}
			got := make(chan string, 8)
			if err := d.Subscribe(ctx, model, func(p string, _ wire.Inventory) {
				select {
				case got <- p:
				default:
				}
			}); err != nil {
				t.Fatal(err)
			}
			have := wire.NewBitmap(3)
			have.Set(0)
			if err := b.Announce(ctx, wire.Inventory{Model: model, Have: have, TTL: 5}); err != nil {
				t.Fatal(err)
			}
			wait := 10 * time.Second // the relayed copy: well within
			if c.super {
				wait = 3 * time.Second // long enough for a relayed copy to show
			}
			select {
			case p := <-got:
				if c.super {
					t.Fatalf("d got %s's inventory through the super-seed", p)
				}
				if p != b.ID() {
					t.Fatalf("d got an inventory from %s, want %s", p, b.ID())
				}
			case <-time.After(wait):
				if !c.super {
					t.Fatal("no inventory relayed within 10 s")
				}
			}
		})
	}
}
