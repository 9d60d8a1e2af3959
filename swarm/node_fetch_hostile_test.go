package swarm

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// oversizePeer is a bare libp2p host (not a DOPPLER host) that announces
// every shard of a model on the model's gossip topic and answers every
// shard request with a frame header claiming 2 GiB.
type oversizePeer struct {
	addr  string
	calls atomic.Int64
}

func newOversizePeer(t *testing.T, id rdrr.ModelID, shards int) *oversizePeer {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		h.Close()
	})
	p := &oversizePeer{addr: h.Addrs()[0].String() + "/p2p/" + h.ID().String()}
	h.SetStreamHandler(p2p.ShardProtocol, func(s network.Stream) {
		defer s.Close()
		p.calls.Add(1)
		s.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := wire.ReadMessage(s, wire.MaxFrame); err != nil {
			return
		}
		s.Write([]byte{0x7f, 0xff, 0xff, 0xff, byte(wire.TypeBlock)})
	})
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithMaxMessageSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(p2p.TopicName(id))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	have := wire.NewBitmap(shards)
	for i := range shards {
		have.Set(i)
	}
	go func() {
		defer close(done)
		defer sub.Cancel()
		for seq := uint64(1); ; seq++ { // ends with the test (ctx)
			b, err := wire.Marshal(&wire.Inventory{Peer: h.ID().String(), Model: id, Have: have, Seq: seq, TTL: 30})
			if err != nil {
				t.Error(err)
				return
			}
			topic.Publish(ctx, b)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return p
}

// TestNodeOversizeFramePeer: over real libp2p hosts, a peer announces the
// whole model and answers shard requests with oversize frames. The fetcher
// asks it, cuts it off at the frame header (nothing is allocated or
// stored), scores it down, and completes from the honest seed.
func TestNodeOversizeFramePeer(t *testing.T) {
	src, id := synthModel(t, 8<<20, 512<<10, 16<<10, 51)
	seed := newNode(t, seedStore(t, src), func(o *NodeOptions) {
		// Slow enough that the liar's inventory arrives mid-pull.
		o.WrapProvider = func(p p2p.Provider) p2p.Provider { return slowProv{p, 2 * time.Millisecond} }
	})
	m, _ := seed.Store().manifest(id)
	bad := newOversizePeer(t, id, len(m.Shards))
	d := newNode(t, openStore(t, t.TempDir(), 0), func(o *NodeOptions) {
		o.Fetch.MaxFailures = 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, errs := d.Connect(ctx, []string{bad.addr}); len(errs) > 0 {
		t.Fatal(errs)
	}
	if err := d.Pull(ctx, id, PullOptions{Peers: seed.Addrs()[:1]}); err != nil {
		t.Fatal(err)
	}
	sameShards(t, d.Store(), src, id)
	var ps PeerStats
	for _, p := range d.Store().PeerStats() {
		t.Logf("← %s req %d recv %d useful %d bad %d timeouts %d errors %d short %d",
			shortID(p.ID), p.Requests, p.BytesReceived, p.BytesUseful, p.BadBlocks, p.Timeouts, p.Errors, p.Short)
		if bad.addr[len(bad.addr)-len(p.ID):] == p.ID {
			ps = p
		}
	}
	t.Logf("tried: the oversize peer got %d shard requests", bad.calls.Load())
	if bad.calls.Load() == 0 || ps.Requests == 0 {
		t.Fatal("the oversize peer was never asked")
	}
	if ps.Errors+ps.BadBlocks == 0 || ps.BytesUseful != 0 {
		t.Fatalf("oversize peer: %+v; want its requests failed and nothing used", ps)
	}
	if e, known := d.Store().fetch.peers.estimate(ps.ID, 1<<20); known {
		if h, _ := d.Store().fetch.peers.estimate(seed.ID(), 1<<20); e <= h {
			t.Errorf("oversize peer scores no worse than the seed (%v ≤ %v)", e, h)
		}
	}
	if st := d.Store().Stats(); st.BytesWritten != d.Store().mustStatus(t, id).Bytes {
		t.Fatalf("wrote %d bytes for a %d-byte model", st.BytesWritten, d.Store().mustStatus(t, id).Bytes)
	}
}

// badManifestProv serves a manifest with one byte changed: it no longer
// hashes to the model ID.
type badManifestProv struct {
	p2p.Provider
	calls atomic.Int64
}

func (b *badManifestProv) Manifest(id rdrr.ModelID) ([]byte, []byte, bool) {
	man, sig, ok := b.Provider.Manifest(id)
	if ok {
		b.calls.Add(1)
		man = append([]byte(nil), man...)
		man[len(man)/2] ^= 0x01
	}
	return man, sig, ok
}

// TestNodeBadManifestPeer: a peer serves a manifest that fails its hash.
// Pulling from it alone fails with nothing added to the store; with an
// honest seed beside it the pull completes.
//
// (The first pull's error is currently "unknown model" rather than
// ErrNoManifest: Node.ensureManifest's try returns nil for an empty list of
// DHT providers, so the fetch starts without a manifest and fails there.)
func TestNodeBadManifestPeer(t *testing.T) {
	src, id := synthModel(t, 4<<20, 512<<10, 16<<10, 52)
	lp := &badManifestProv{}
	liar := newNode(t, seedStore(t, src), func(o *NodeOptions) {
		o.WrapProvider = func(p p2p.Provider) p2p.Provider { lp.Provider = p; return lp }
	})
	d := newNode(t, openStore(t, t.TempDir(), 0), func(o *NodeOptions) { o.LookupTimeout = 2 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := d.Pull(ctx, id, PullOptions{Peers: liar.Addrs()[:1]})
	t.Logf("pull from the liar alone: %v", err)
	if err == nil {
		t.Fatal("pull from a peer with a bad manifest succeeded")
	}
	if lp.calls.Load() == 0 {
		t.Fatal("the liar was never asked for the manifest")
	}
	if _, _, ok := d.Store().Manifest(id); ok || len(d.Store().Models()) != 0 {
		t.Fatal("a manifest that fails its hash was stored")
	}
	seed := newNode(t, seedStore(t, src), nil)
	if err := d.Pull(ctx, id, PullOptions{Peers: []string{liar.Addrs()[0], seed.Addrs()[0]}}); err != nil {
		t.Fatal(err)
	}
	sameShards(t, d.Store(), src, id)
	t.Logf("tried: the liar served its bad manifest %d times", lp.calls.Load())
}

// TestNodeRestartMidPull: a node pulling a model is closed, with its
// store, part way; a new node over the same store directory pulls again
// and fetches only what was missing (fewer bytes than the model).
func TestNodeRestartMidPull(t *testing.T) {
	src, id := synthModel(t, 8<<20, 1<<20, 16<<10, 53)
	seed := newNode(t, seedStore(t, src), func(o *NodeOptions) {
		o.WrapProvider = func(p p2p.Provider) p2p.Provider { return slowProv{p, 2 * time.Millisecond} }
	})
	dir := t.TempDir()
	s1, err := Open(dir, StoreOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	d1 := newNode(t, s1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d1.Pull(pctx, id, PullOptions{Peers: seed.Addrs()[:1]}) }()
	var st ModelStatus
	for i := 0; ; i++ {
		if i == 3000 {
			t.Fatalf("after 30s only %d bytes arrived", st.HaveBytes)
		}
		st, _ = s1.Status(id)
		if st.Bytes > 0 && st.HaveBytes >= st.Bytes/3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Shut down as the CLI does on a signal, mid-transfer: the node (its
	// host and in-flight requests) first, then the pull, then the store.
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	stop()
	select {
	case err := <-done:
		t.Logf("interrupted pull: %v", err)
		if err == nil {
			t.Fatal("the pull completed before the node closed")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("pull still running 30s after its node closed")
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	held := st.HaveBytes
	s2 := openStore(t, dir, 0)
	st2, ok := s2.Status(id)
	if !ok {
		t.Fatal("the reopened store lost the model")
	}
	t.Logf("closed with ≥ %d of %d bytes; reopened store holds %d (%d complete shards, %d partials found)",
		held, st2.Bytes, st2.HaveBytes, st2.CompleteShards, s2.Stats().PartialsFound)
	if st2.HaveBytes < held {
		t.Fatalf("restart lost blocks: %d → %d", held, st2.HaveBytes)
	}
	d2 := newNode(t, s2, nil)
	if err := d2.Pull(ctx, id, PullOptions{Peers: seed.Addrs()[:1]}); err != nil {
		t.Fatal(err)
	}
	sameShards(t, s2, src, id)
	var refetched int64
	for _, p := range s2.PeerStats() {
		refetched += p.BytesReceived
	}
	missing := st2.Bytes - st2.HaveBytes
	t.Logf("after the restart: %d bytes fetched, %d were missing, model %d", refetched, missing, st2.Bytes)
	if refetched >= st2.Bytes {
		t.Fatalf("re-fetched %d bytes, the whole model (%d) or more", refetched, st2.Bytes)
	}
	if slack := int64(64 * 16 << 10); refetched > missing+slack {
		t.Fatalf("re-fetched %d bytes; only %d were missing", refetched, missing)
	}
}
