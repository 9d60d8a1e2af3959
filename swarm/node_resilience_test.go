package swarm

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/p2p"
)

// logRecorder is a slog handler that keeps every record's message and
// attributes (as one line) at or above a level, and passes all to next.
type logRecorder struct {
	next  slog.Handler
	level slog.Level
	mu    *sync.Mutex
	lines *[]string
	attrs []slog.Attr
}

func newLogRecorder(next slog.Handler, level slog.Level) *logRecorder {
	return &logRecorder{next: next, level: level, mu: &sync.Mutex{}, lines: new([]string)}
}

func (h *logRecorder) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l) || l >= h.level
}
func (h *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= h.level {
		var b strings.Builder
		fmt.Fprintf(&b, "%v %s", r.Level, r.Message)
		for _, a := range h.attrs {
			fmt.Fprintf(&b, " %v", a)
		}
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %v", a); return true })
		h.mu.Lock()
		*h.lines = append(*h.lines, b.String())
		h.mu.Unlock()
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}
func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	c.attrs = append(slices.Clip(h.attrs), as...)
	return &c
}
func (h *logRecorder) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}

func (h *logRecorder) recorded() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(*h.lines)
}

// TestNodePeerExitsMidTransfer: two holders serve a pull; one exits (its
// host closes) while blocks are in flight from it. Its requests end as
// churn: counted as gone, not as errors or protocol violations, never a
// drop, nothing logged above Info about it; the pull completes from the
// other holder.
func TestNodePeerExitsMidTransfer(t *testing.T) {
	src, id := synthModel(t, 8<<20, 1<<20, 16<<10, 64)
	slow := func(o *NodeOptions) {
		o.WrapProvider = func(p p2p.Provider) p2p.Provider { return slowProv{p, 3 * time.Millisecond} }
	}
	leaver := newNode(t, seedStore(t, src), slow)
	stayer := newNode(t, seedStore(t, src), slow)
	rec := newLogRecorder(testLogger(t).Handler(), slog.LevelWarn)
	d := newNode(t, openStore(t, t.TempDir(), 0), func(o *NodeOptions) {
		o.Logger = slog.New(rec)
		o.Fetch.WaitPeers = 5 * time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- d.Pull(ctx, id, PullOptions{Peers: []string{leaver.Addrs()[0], stayer.Addrs()[0]}})
	}()
	// Leave once the leaver has sent something and has requests in flight.
	for i := 0; ; i++ {
		if i == 3000 {
			t.Fatal("the leaver sent nothing within 30 s")
		}
		if leaver.Host().Stats().BlocksServed >= 32 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := leaver.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sameShards(t, d.Store(), src, id)
	var ps PeerStats
	for _, p := range d.Store().PeerStats() {
		t.Logf("← %s req %d useful %d gone %d errors %d timeouts %d bad %d set aside %d dropped %v",
			shortID(p.ID), p.Requests, p.BytesUseful, p.Gone, p.Errors, p.Timeouts, p.BadBlocks, p.SetAside, p.Dropped)
		if p.ID == leaver.ID() {
			ps = p
		}
	}
	if ps.BytesUseful == 0 || ps.Gone == 0 {
		t.Fatalf("leaver: %+v; want blocks from it, then requests ended as gone", ps)
	}
	if ps.Errors != 0 || ps.BadBlocks != 0 || len(ps.Dropped) != 0 {
		t.Fatalf("leaver: %+v; leaving is churn: no errors, no bad blocks, no drop", ps)
	}
	for _, l := range rec.recorded() {
		if strings.Contains(l, leaver.ID()) || strings.Contains(l, "protocol violation") {
			t.Errorf("logged: %s", l)
		}
	}
}

// TestNodeLinger: A has pulled the model from a seed; the seed leaves;
// B pulls from A alone. A lingers while B fetches shards it holds, so B
// completes before A closes; once B has everything A stops lingering
// long before its limit, and with no one fetching it returns at once.
func TestNodeLinger(t *testing.T) {
	src, id := synthModel(t, 6<<20, 1<<20, 16<<10, 65)
	seed := newNode(t, seedStore(t, src), nil)
	a := newNode(t, openStore(t, t.TempDir(), 0), func(o *NodeOptions) {
		o.WrapProvider = func(p p2p.Provider) p2p.Provider { return slowProv{p, 2 * time.Millisecond} }
	})
	b := newNode(t, openStore(t, t.TempDir(), 0), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Pull(ctx, id, PullOptions{Peers: seed.Addrs()[:1]}); err != nil {
		t.Fatal(err)
	}
	if d := a.Linger(ctx, id, LingerOptions{Max: 10 * time.Second}); d > 3*time.Second {
		t.Fatalf("with no one fetching, lingered %v", d)
	}
	seed.Close()
	done := make(chan error, 1)
	go func() { done <- b.Pull(ctx, id, PullOptions{Peers: a.Addrs()[:1]}) }()
	for i := 0; len(a.Host().Fetching(time.Second)) == 0; i++ {
		if i == 2000 {
			t.Fatal("B asked A for nothing within 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	const limit = 30 * time.Second
	d := a.Linger(ctx, id, LingerOptions{Max: limit})
	st, _ := b.Store().Status(id)
	t.Logf("A lingered %v; B then held %d of %d bytes", d.Round(time.Millisecond), st.HaveBytes, st.Bytes)
	a.Close()
	if err := <-done; err != nil {
		t.Fatalf("B's pull, A lingering: %v", err)
	}
	sameShards(t, b.Store(), src, id)
	if d >= limit {
		t.Fatalf("A lingered to its limit (%v) after B had everything", d)
	}
}

// TestNodeManifestFromBusySeed: the seed serves one stream at a time and
// that slot is held by another node's slow block request when a node
// pulls. The manifest request is answered busy; the pull asks again after
// a backoff instead of failing with ErrNoManifest, and completes.
func TestNodeManifestFromBusySeed(t *testing.T) {
	src, id := synthModel(t, 16<<10, 16<<10, 16<<10, 24)
	seed := newNode(t, seedStore(t, src), func(o *NodeOptions) {
		o.Host.MaxServing = 1
		o.WrapProvider = func(p p2p.Provider) p2p.Provider { return slowProv{p, 1500 * time.Millisecond} }
	})
	m, ok := seed.Store().manifest(id)
	if !ok {
		t.Fatal("seed has no manifest")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	blocker := newNode(t, openStore(t, t.TempDir(), 0), nil)
	if _, errs := blocker.Connect(ctx, seed.Addrs()); len(errs) == len(seed.Addrs()) {
		t.Fatal(errs)
	}
	held := make(chan error, 1)
	go func() {
		held <- blocker.Host().Remote(seed.ID()).ReadBlocks(ctx, m.Shards[0], 0, 1, func(int, []byte) error { return nil })
	}()
	for !slices.Contains(seed.Host().Fetching(0), blocker.ID()) {
		if ctx.Err() != nil {
			t.Fatal("the blocker's request never reached the seed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	d := newNode(t, openStore(t, t.TempDir(), 0), nil)
	if err := d.Pull(ctx, id, PullOptions{Peers: []string{seed.Addrs()[0]}}); err != nil {
		t.Fatalf("pull while the seed's only slot is taken: %v", err)
	}
	sameShards(t, d.Store(), src, id)
	if err := <-held; err != nil {
		t.Fatalf("blocker: %v", err)
	}
}
