package p2p

import (
	"math"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
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
