package p2p

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// TestSpreadClaim: a super-seed sends a block to one peer at a time and
// not to another until the window (plus the send's duration) has passed
// since it went out, a window that doubles with each send of the block;
// a failed send frees it at once; the same peer may ask again; with no
// window every claim succeeds.
func TestSpreadClaim(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	sh := rdrr.Hash{1}
	type step struct {
		peer         string
		first, count uint32
		at           time.Duration // since t0
		ok           bool
		end          time.Duration // when the send ends (if ok)
		sent         bool
	}
	for _, c := range []struct {
		name   string
		window time.Duration
		steps  []step
	}{
		{"off", 0, []step{
			{"a", 0, 4, 0, true, time.Second, true},
			{"b", 0, 4, time.Millisecond, true, time.Second, true},
		}},
		{"in flight to another", time.Second, []step{
			{"a", 0, 4, 0, true, -1, false}, // still being sent
			{"b", 3, 2, 10 * time.Millisecond, false, 0, false},
			{"b", 4, 2, 10 * time.Millisecond, true, 20 * time.Millisecond, true},
		}},
		{"window after the send", time.Second, []step{
			{"a", 0, 1, 0, true, 500 * time.Millisecond, true},
			// sent at 0.5 s, took 0.5 s: others wait until 0.5 + 1 + 0.5 = 2 s
			{"b", 0, 1, 1900 * time.Millisecond, false, 0, false},
			{"a", 0, 1, 1900 * time.Millisecond, true, 2 * time.Second, true}, // its own block again
			{"b", 0, 1, 4100 * time.Millisecond, true, 5 * time.Second, true},
		}},
		{"each send doubles the wait", time.Second, []step{
			{"a", 0, 1, 0, true, 0, true}, // others wait 1 s
			{"b", 0, 1, 900 * time.Millisecond, false, 0, false},
			{"b", 0, 1, time.Second, true, time.Second, true}, // then 2 s
			{"c", 0, 1, 2900 * time.Millisecond, false, 0, false},
			{"c", 0, 1, 3 * time.Second, true, 3 * time.Second, true}, // then 4 s
			{"a", 0, 1, 6900 * time.Millisecond, false, 0, false},
			{"a", 0, 1, 7 * time.Second, true, 7 * time.Second, true},
			{"b", 1, 1, 7 * time.Second, true, 7 * time.Second, true}, // another block: 1 s
			{"c", 1, 1, 8 * time.Second, true, 8 * time.Second, true},
		}},
		{"a failed resend keeps the count", time.Second, []step{
			{"a", 0, 1, 0, true, 0, true},
			{"b", 0, 1, time.Second, true, 1500 * time.Millisecond, false},
			{"c", 0, 1, 1600 * time.Millisecond, true, 1600 * time.Millisecond, true}, // the second send: 2 s
			{"b", 0, 1, 3500 * time.Millisecond, false, 0, false},
			{"b", 0, 1, 3600 * time.Millisecond, true, 3600 * time.Millisecond, true},
		}},
		{"failed send frees", time.Second, []step{
			{"a", 2, 1, 0, true, 100 * time.Millisecond, false},
			{"b", 2, 1, 200 * time.Millisecond, true, 300 * time.Millisecond, true},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &spread{window: c.window}
			var pending []func()
			for i, st := range c.steps {
				done, ok := s.claim(sh, st.first, st.count, st.peer, t0.Add(st.at))
				if ok != st.ok {
					t.Fatalf("step %d (%s asks [%d,+%d) at %v): ok = %v, want %v", i, st.peer, st.first, st.count, st.at, ok, st.ok)
				}
				if !ok {
					continue
				}
				if st.end < 0 {
					pending = append(pending, func() { done(false, t0) })
					continue
				}
				done(st.sent, t0.Add(st.end))
			}
			for _, p := range pending {
				p()
			}
		})
	}
}

// TestSpreadScale: the super-seed's window grows by one window for each
// doubling of the peers asking, from 32, and shrinks again once they
// have not asked for the longest wait.
func TestSpreadScale(t *testing.T) {
	for _, c := range []struct{ n, want int }{{0, 1}, {1, 1}, {31, 1}, {32, 2}, {63, 2}, {64, 3}, {300, 5}, {1000, 6}} {
		if got := spreadScale(c.n); got != c.want {
			t.Errorf("spreadScale(%d) = %d, want %d", c.n, got, c.want)
		}
	}
	t0 := time.Unix(1e9, 0)
	sh := rdrr.Hash{2}
	s := &spread{window: time.Second}
	// 64 peers ask for block 1; the first gets it, the rest are busy.
	for i := range 64 {
		done, ok := s.claim(sh, 1, 1, fmt.Sprint("p", i), t0)
		if ok != (i == 0) {
			t.Fatalf("peer %d: ok = %v", i, ok)
		}
		if ok {
			done(true, t0)
		}
	}
	// Block 0, sent at t0: with 64 askers others wait 3 windows.
	done, ok := s.claim(sh, 0, 1, "p0", t0)
	if !ok {
		t.Fatal("block 0 refused to its first asker")
	}
	done(true, t0)
	if _, ok := s.claim(sh, 0, 1, "p1", t0.Add(2900*time.Millisecond)); ok {
		t.Fatal("block 0 sent again within 3 windows, 64 peers asking")
	}
	if _, ok := s.claim(sh, 0, 1, "p1", t0.Add(3*time.Second)); !ok {
		t.Fatal("block 0 still refused after 3 windows")
	}
	// After the longest wait with only p1 asking, the others are forgotten.
	later := t0.Add(10 * time.Minute)
	s.claim(sh, 5, 1, "p1", later)
	if n := len(s.askers); n != 1 {
		t.Fatalf("%d askers remembered after 10 min, want 1", n)
	}
}

// TestSuperSeed: a host with SuperSeed answers a request for a block it
// has just sent to another peer CodeBusy, and serves it once the window
// has passed; a host without it serves both at once.
func TestSuperSeed(t *testing.T) {
	f := newFixture(t, 3, false)
	prov := &memProvider{models: []*fixture{f}}
	const window = 300 * time.Millisecond
	seed := newHost(t, prov, func(o *Options) { o.SuperSeed = window })
	a := newHost(t, nil, nil)
	b := newHost(t, nil, nil)
	connect(t, a, seed)
	connect(t, b, seed)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sh := f.m.Shards[0]
	noop := func(int, []byte) error { return nil }
	if err := a.Remote(seed.ID()).ReadBlocks(ctx, sh, 0, 1, noop); err != nil {
		t.Fatalf("first request: %v", err)
	}
	sent := time.Now()
	err := b.Remote(seed.ID()).ReadBlocks(ctx, sh, 0, 1, noop)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeBusy {
		t.Fatalf("the same block to another peer at once: %v, want CodeBusy", err)
	}
	if err := b.Remote(seed.ID()).ReadBlocks(ctx, sh, 1, 1, noop); err != nil {
		t.Fatalf("another block to the other peer: %v", err)
	}
	time.Sleep(time.Until(sent.Add(2 * window)))
	if err := b.Remote(seed.ID()).ReadBlocks(ctx, sh, 0, 1, noop); err != nil {
		t.Fatalf("the block after the window: %v", err)
	}
}
