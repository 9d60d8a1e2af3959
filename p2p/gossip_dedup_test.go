package p2p

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// TestGossipDedup: the RPC inspector hands gossipsub the first copy of a
// message and drops the copies that arrive within dupRetry of it, lets a
// later copy through (the first may have been lost to a full validation
// queue), forgets messages after dupForget, and counts every copy
// received, duplicates included.
func TestGossipDedup(t *testing.T) {
	now := time.Unix(1e9, 0)
	var g gossip
	g.init(func() time.Time { return now })
	msg := func(from string, seq byte) *pb.Message {
		return &pb.Message{From: []byte(from), Seqno: []byte{seq}, Data: []byte("inventory")}
	}
	a, b := peer.ID("peer-a"), peer.ID("peer-b")
	steps := []struct {
		after time.Duration
		from  peer.ID
		msgs  []*pb.Message
		want  []byte // the seqnos handed on
	}{
		{0, a, []*pb.Message{msg("x", 1), msg("x", 2)}, []byte{1, 2}},
		{100 * time.Millisecond, b, []*pb.Message{msg("x", 1), msg("y", 1)}, []byte{1}}, // x/1 is a duplicate
		{500 * time.Millisecond, b, []*pb.Message{msg("x", 2)}, nil},
		{dupRetry, a, []*pb.Message{msg("x", 1)}, []byte{1}}, // late enough to retry
		{dupForget, b, []*pb.Message{msg("x", 2)}, []byte{2}},
	}
	received := 0
	for i, st := range steps {
		now = now.Add(st.after)
		rpc := &pubsub.RPC{RPC: pb.RPC{Publish: st.msgs}}
		received += len(st.msgs)
		if err := g.inspect(st.from, rpc); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		var got []byte
		for _, m := range rpc.Publish {
			got = append(got, m.Seqno[0])
		}
		if string(got) != string(st.want) {
			t.Errorf("step %d: handed on seqnos %v, want %v", i, got, st.want)
		}
	}
	total, _ := g.tr.snapshot()
	if total.MessagesReceived != uint64(received) {
		t.Errorf("counted %d messages received, want %d (duplicates included)", total.MessagesReceived, received)
	}
	if n := len(g.dedup.first); n > 2 {
		t.Errorf("%d message IDs remembered after dupForget, want the latest 2 at most", n)
	}
}

// TestShareLimit: a host's announcement rate is its share of the budget
// (GossipBudget/60/peers) while the topic carries no more than the
// budget, and falls in proportion when the topic is measured carrying
// more (a crowd that joined at once underestimates its size).
func TestShareLimit(t *testing.T) {
	now := time.Unix(1e9, 0)
	n := &Host{opts: Options{GossipBudget: 600, Now: func() time.Time { return now }}}
	ts := &topicState{}
	steps := []struct {
		after time.Duration
		seen  int     // inventories delivered since the last step
		want  float64 // announcements per second
	}{
		{0, 0, 1},                               // 10/s over 10 peers, nothing measured
		{time.Second, 100, 1 * 10 / 50.0},       // 100/s measured, averaged with 0: 50/s
		{time.Second, 100, 1 * 10 / 75.0},       // (50 + 100) / 2
		{time.Second, 0, 1 * 10 / 37.5},         // a quiet second halves it
		{500 * time.Millisecond, 50, 10 / 37.5}, // within the window: unchanged
		{20 * time.Second, 40, 1},               // a long gap: 40 in 20.5 s is under the budget
	}
	for i, st := range steps {
		now = now.Add(st.after)
		ts.seen += st.seen
		if got := float64(n.shareLimit(ts, 10)); math.Abs(got-st.want) > 1e-9 {
			t.Errorf("step %d: %.4f announcements/s, want %.4f", i, got, st.want)
		}
	}
}

// TestInventoriesCache: Inventories lists the unexpired inventories sorted
// by peer, with a newer inventory of a listed peer replaced in place, a
// new peer added and an expired one dropped; a slice it returned reads the
// same after later changes (callers share it).
func TestInventoriesCache(t *testing.T) {
	now := time.Unix(1e9, 0)
	n := &Host{opts: Options{Now: func() time.Time { return now }}}
	n.gossip.init(n.opts.Now)
	var model rdrr.ModelID
	n.topics[model] = &topicState{inventory: map[string]InventoryEntry{}}
	inv := func(p string, seq uint64, ttl uint32) wire.Inventory {
		return wire.Inventory{Model: model, Peer: p, Seq: seq, TTL: ttl}
	}
	format := func(invs []InventoryEntry) string {
		var out []string
		for _, e := range invs {
			out = append(out, fmt.Sprintf("%s/%d", e.Peer, e.Inv.Seq))
		}
		return strings.Join(out, " ")
	}
	var held [][]InventoryEntry
	steps := []struct {
		after time.Duration
		invs  []wire.Inventory
		want  string
	}{
		{0, []wire.Inventory{inv("c", 1, 60), inv("a", 1, 60), inv("b", 1, 10)}, "a/1 b/1 c/1"},
		{time.Second, []wire.Inventory{inv("b", 2, 10)}, "a/1 b/2 c/1"},                   // in place
		{time.Second, []wire.Inventory{inv("a", 1, 60)}, "a/1 b/2 c/1"},                   // not newer
		{time.Second, []wire.Inventory{inv("bb", 1, 60)}, "a/1 b/2 bb/1 c/1"},             // a new peer
		{10 * time.Second, nil, "a/1 bb/1 c/1"},                                           // b expired
		{time.Second, []wire.Inventory{inv("c", 5, 60), inv("a", 2, 60)}, "a/2 bb/1 c/5"}, // two in place
	}
	for i, st := range steps {
		now = now.Add(st.after)
		for _, v := range st.invs {
			n.record(model, v)
		}
		invs := n.Inventories(model)
		if got := format(invs); got != st.want {
			t.Errorf("step %d: %q, want %q", i, got, st.want)
		}
		held = append(held, invs)
	}
	for i, invs := range held {
		if got := format(invs); got != steps[i].want {
			t.Errorf("step %d's answer changed under its reader: %q, was %q", i, got, steps[i].want)
		}
	}
}
