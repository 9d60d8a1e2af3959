package swarm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// TestFetchSlowSeedKept: the only source is a seed whose uplink sends one
// request at a time at 40 ms a block, so a second request waits far
// longer than the 100 ms stall floor for its first block. The stall
// timeout follows the seed's measured rate: the seed is waited for, never
// set aside, and the fetch completes.
func TestFetchSlowSeedKept(t *testing.T) {
	src, id := synthModel(t, 1<<20, 1<<20, 16<<10, 61)
	seed := newStorePeer("seed", seedStore(t, src), 1, 40*time.Millisecond)
	p, _ := fetchFromOne(t, src, id, seed, seed.s.Has, FetchOptions{PerPeer: 2, BlocksPerRequest: 16, RequestTimeout: 100 * time.Millisecond,
		WaitPeers: 2 * time.Second, Poll: 10 * time.Millisecond})
	if p.SetAside != 0 || p.Timeouts > 2 {
		t.Fatalf("the slow seed was cut off %d times and set aside %d times; want it waited for", p.Timeouts, p.SetAside)
	}
}

// fetchFromOne fetches model id into an empty store from holder alone,
// which must complete it, and returns what the fetch measured of the
// holder and the fetch counters.
func fetchFromOne(t *testing.T, src string, id rdrr.ModelID, holder Peer, has func(rdrr.Hash) bool, o FetchOptions) (PeerStats, FetchStats) {
	t.Helper()
	net := &testNet{}
	net.add(holder, has)
	s := emptyStore(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.Fetch(ctx, id, net.view("me"), o); err != nil {
		t.Fatal(err)
	}
	sameShards(t, s, src, id)
	logPeers(t, "me", s)
	return s.PeerStats()[0], s.Stats().Fetch
}

// flakyPeer serves from a store but answers its first busy requests
// CodeBusy at once (as a p2p host whose upload slots are full does), then
// stalls the next stalls requests until they are cut off; it records
// when each request starts and ends.
type flakyPeer struct {
	*storePeer
	busy, stalls int

	mu    sync.Mutex
	spans [][2]time.Time
}

func (p *flakyPeer) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(int, []byte) error) error {
	p.mu.Lock()
	n := len(p.spans)
	p.spans = append(p.spans, [2]time.Time{time.Now()})
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.spans[n][1] = time.Now()
		p.mu.Unlock()
	}()
	switch {
	case n < p.busy:
		return fmt.Errorf("peer %s: %w", p.id, shardproto.RemoteError(p.id, &wire.Error{Code: wire.CodeBusy, Msg: "upload slots full"}))
	case n < p.busy+p.stalls:
		<-ctx.Done()
		return ctx.Err()
	}
	return p.storePeer.ReadBlocks(ctx, sh, first, count, fn)
}

// TestFetchSetAsideComesBack: the only holder stalls its first four
// requests. After three it is set aside for the backoff (300 ms), is
// asked again after it, stalls once more and is set aside for twice as
// long; then it serves and the fetch completes. The fetch does not give
// up meanwhile (WaitPeers is shorter than the backoffs): a peer set aside
// for slowness is still a reachable holder.
func TestFetchSetAsideComesBack(t *testing.T) {
	src, id := synthModel(t, 1<<20, 1<<20, 16<<10, 62)
	p := &flakyPeer{storePeer: newStorePeer("flaky", seedStore(t, src), 2, 0), stalls: 4}
	net := &testNet{}
	net.add(p, p.s.Has)
	s := emptyStore(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const backoff = 300 * time.Millisecond
	err := s.Fetch(ctx, id, net.view("me"), FetchOptions{Parallel: 1, PerPeer: 1, RequestTimeout: 100 * time.Millisecond,
		Backoff: backoff, WaitPeers: 200 * time.Millisecond, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sameShards(t, s, src, id)
	logPeers(t, "me", s)
	ps := s.PeerStats()[0]
	if ps.Timeouts != 4 || ps.SetAside != 2 {
		t.Fatalf("%d timeouts, set aside %d times; want 4 and 2", ps.Timeouts, ps.SetAside)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, want := range map[int]time.Duration{3: backoff, 4: 2 * backoff} {
		if gap := p.spans[i][0].Sub(p.spans[i-1][1]); gap < want-20*time.Millisecond {
			t.Errorf("request %d came %v after the one before was cut off; want the backoff, %v", i, gap, want)
		}
	}
	if gap := p.spans[2][0].Sub(p.spans[1][1]); gap > backoff/2 {
		t.Errorf("set aside after 2 stalls (next request %v later); want after MaxFailures (3)", gap)
	}
}

// TestFetchGivesUpOnGonePeers: the only holder announces every shard but
// every request to it fails because it went away. It keeps no fetch
// waiting: the fetch gives up (ErrNoPeers) soon after WaitPeers.
func TestFetchGivesUpOnGonePeers(t *testing.T) {
	src, id := synthModel(t, 1<<20, 1<<20, 16<<10, 63)
	holder := seedStore(t, src)
	net := &testNet{}
	gone := &errPeer{id: "gone", err: fmt.Errorf("dial: %w: connection refused", shardproto.ErrGone)}
	net.add(gone, holder.Has)
	s := emptyStore(t, src)
	start := time.Now()
	err := s.Fetch(context.Background(), id, net.view("me"), FetchOptions{RequestTimeout: 100 * time.Millisecond,
		Backoff: 50 * time.Millisecond, WaitPeers: 300 * time.Millisecond, Poll: 10 * time.Millisecond})
	el := time.Since(start)
	t.Logf("gave up after %v: %v (%d requests)", el.Round(time.Millisecond), err, gone.calls.Load())
	if !errors.Is(err, ErrNoPeers) {
		t.Fatalf("fetch from a peer that is gone: %v, want ErrNoPeers", err)
	}
	if el > 10*time.Second {
		t.Fatalf("gave up after %v; want soon after WaitPeers", el)
	}
	ps := s.PeerStats()[0]
	if ps.Gone == 0 || ps.Errors != 0 || len(ps.Dropped) != 0 {
		t.Fatalf("gone peer: %+v; want its requests counted as gone, not errors, and no drop", ps)
	}
}

// TestFetchBusyIsNotAFailure: the only holder answers busy to its first
// six requests, twice MaxFailures. Busy answers are no failures: the
// holder is never set aside, its answers are not errors, the fetch waits
// a moment between asks (not a tight loop), does not give up though
// WaitPeers is short, and completes once the holder has a free slot.
func TestFetchBusyIsNotAFailure(t *testing.T) {
	src, id := synthModel(t, 1<<20, 1<<20, 16<<10, 64)
	p := &flakyPeer{storePeer: newStorePeer("busy", seedStore(t, src), 2, 0), busy: 6}
	ps, st := fetchFromOne(t, src, id, p, p.s.Has, FetchOptions{Parallel: 1, PerPeer: 1, RequestTimeout: 100 * time.Millisecond,
		WaitPeers: 100 * time.Millisecond, Poll: 5 * time.Millisecond})
	if ps.SetAside != 0 || ps.Errors != 0 || ps.Timeouts != 0 {
		t.Fatalf("busy holder: %+v; want no set-aside, error or timeout", ps)
	}
	if st.Busy != p.busy {
		t.Errorf("FetchStats.Busy = %d, want %d", st.Busy, p.busy)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 1; i <= p.busy; i++ {
		// busyWait: at least 20 ms, and the unmeasured holder's 100 ms,
		// jittered down to half, doubled with each busy answer in a row.
		if gap := p.spans[i][0].Sub(p.spans[i-1][1]); gap < 20*time.Millisecond {
			t.Errorf("ask %d came %v after busy answer %d; want a pause of at least 20 ms", i, gap, i-1)
		}
	}
}

func TestIsBusy(t *testing.T) {
	busy := shardproto.RemoteError("a", &wire.Error{Code: wire.CodeBusy, Msg: "upload slots full"})
	notFound := shardproto.RemoteError("b", &wire.Error{Code: wire.CodeNotFound, Msg: "unknown model"})
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"busy", busy, true},
		{"wrapped busy", fmt.Errorf("manifest: %w", busy), true},
		{"not found", notFound, false},
		// errors.As stops at the first wire.Error; the busy answer of a
		// later peer must still count.
		{"joined, busy after not found", errors.Join(notFound, busy), true},
		{"joined, none busy", errors.Join(notFound, errors.New("no peer to ask")), false},
		{"timeout", fmt.Errorf("peer c: %w", shardproto.ErrTimeout), false},
	} {
		if got := isBusy(c.err); got != c.want {
			t.Errorf("%s: isBusy = %v, want %v", c.name, got, c.want)
		}
	}
}
