package p2p

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// TestWatchProtocol reads a watch stream frame by frame: the inventory
// first, a Have for each block or shard gained, the whole inventory again
// when a shard is lost, nothing while nothing changes.
func TestWatchProtocol(t *testing.T) {
	model := rdrr.Sum([]byte("model"))
	a, b := quietPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	have := wire.NewBitmap(3)
	have.Set(0)
	announce := func(inv wire.Inventory) {
		t.Helper()
		if err := a.Announce(ctx, inv); err != nil {
			t.Fatal(err)
		}
	}
	announce(wire.Inventory{Model: model, Have: have.Clone()})
	s, err := b.h.NewStream(ctx, a.h.ID(), WatchProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	req, _ := wire.Marshal(&wire.InventoryRequest{Model: model})
	if _, err := s.Write(req); err != nil {
		t.Fatal(err)
	}
	next := func() wire.Message {
		t.Helper()
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := wire.ReadMessage(s, wire.MaxInventoryFrame)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	first, ok := next().(*wire.Inventory)
	if !ok || first.Peer != a.ID() || !first.Have.Has(0) || first.Have.Has(1) {
		t.Fatalf("first frame %+v", first)
	}
	// A block of shard 2, then shard 1 complete.
	part := wire.NewBitmap(5)
	part.Set(3)
	announce(wire.Inventory{Model: model, Have: have.Clone(), Partial: []wire.Partial{{Shard: 2, Blocks: part}}})
	h, ok := next().(*wire.Have)
	if !ok || !reflect.DeepEqual(h.Blocks, []wire.HaveBlock{{Shard: 2, N: 5, Block: 3}}) || len(h.Shards) != 0 || h.Seq <= first.Seq {
		t.Fatalf("after a block: %+v", h)
	}
	have.Set(1)
	announce(wire.Inventory{Model: model, Have: have.Clone(), Partial: []wire.Partial{{Shard: 2, Blocks: part}}})
	if h, ok := next().(*wire.Have); !ok || !reflect.DeepEqual(h.Shards, []uint32{1}) || len(h.Blocks) != 0 {
		t.Fatalf("after a shard: %+v", h)
	}
	// Shard 0 lost: the whole inventory.
	lost := wire.NewBitmap(3)
	lost.Set(1)
	announce(wire.Inventory{Model: model, Have: lost})
	if inv, ok := next().(*wire.Inventory); !ok || inv.Have.Has(0) || !inv.Have.Has(1) || len(inv.Partial) != 0 {
		t.Fatalf("after a loss: %+v", inv)
	}
	// Unchanged: nothing within the refresh period (an hour here).
	s.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if m, err := wire.ReadMessage(s, wire.MaxInventoryFrame); err == nil {
		t.Fatalf("unprompted %+v", m)
	}
}

// TestWatchInventory: WatchInventory keeps what the peer pushes for
// Inventories and hands each to fn, ends when fn says so or ctx ends, and
// reports a peer that does not follow the model or lacks the protocol as
// ErrWatchUnsupported.
func TestWatchInventory(t *testing.T) {
	model := rdrr.Sum([]byte("model"))
	other := rdrr.Sum([]byte("other"))
	a, b := quietPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	have := wire.NewBitmap(4)
	if err := a.Announce(ctx, wire.Inventory{Model: model, Have: have.Clone()}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []rdrr.ModelID{model, other} {
		if err := b.Subscribe(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan wire.Inventory, 16)
	done := make(chan error, 1)
	go func() {
		done <- b.WatchInventory(ctx, a.ID(), model, func(inv wire.Inventory) bool {
			got <- inv
			return inv.Have.Count() < 4 // stop once a holds everything
		})
	}()
	recv := func() wire.Inventory {
		t.Helper()
		select {
		case inv := <-got:
			return inv
		case err := <-done:
			t.Fatalf("watch ended: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("no inventory within 5s")
		}
		return wire.Inventory{}
	}
	if inv := recv(); inv.Peer != a.ID() || inv.Have.Count() != 0 {
		t.Fatalf("first: %+v", inv)
	}
	for s := range 4 {
		have.Set(s)
		if err := a.Announce(ctx, wire.Inventory{Model: model, Have: have.Clone()}); err != nil {
			t.Fatal(err)
		}
		// Announcements within watchGap of each other may come as one.
		for inv := recv(); !inv.Have.Has(s); inv = recv() {
		}
		invs := b.Inventories(model)
		if len(invs) != 1 || !invs[0].Inv.Have.Has(s) || invs[0].Inv.TTL == 0 {
			t.Fatalf("Inventories after shard %d: %+v", s, invs)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watch ended with %v once fn stopped it", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch still running after fn returned false")
	}

	// A model a does not follow.
	if err := b.WatchInventory(ctx, a.ID(), other, nil); !errors.Is(err, ErrWatchUnsupported) {
		t.Fatalf("unfollowed model: %v", err)
	}
	// A peer without the protocol (an older node).
	a.h.RemoveStreamHandler(WatchProtocol)
	if err := b.WatchInventory(ctx, a.ID(), model, nil); !errors.Is(err, ErrWatchUnsupported) {
		t.Fatalf("no protocol: %v", err)
	}
	a.h.SetStreamHandler(WatchProtocol, a.serveWatch)
	// ctx ending ends a watch with nil.
	wctx, wcancel := context.WithCancel(ctx)
	go func() { done <- b.WatchInventory(wctx, a.ID(), model, nil) }()
	time.Sleep(200 * time.Millisecond)
	wcancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("canceled watch: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("canceled watch still running")
	}
	// The server's side of that stream ended too.
	testenv.Eventually(t, 5*time.Second, "a serves no watch", func() bool { return len(a.watch.sem) == 0 })
	if n := len(a.h.Network().ConnsToPeer(b.h.ID())); n == 0 || a.h.Network().Connectedness(b.h.ID()) != network.Connected {
		t.Fatal("a and b disconnected")
	}
}
