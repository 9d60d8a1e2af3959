package swarm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/rdrr"
)

// fakeSource is a Source over a store: it serves what the store holds,
// answers not-found for the shards in lacks, and serves manifest (when
// set) instead of the store's.
type fakeSource struct {
	*storePeer
	manifest []byte
	lacks    map[rdrr.Hash]bool
	mu       sync.Mutex
	asked    map[rdrr.Hash]int
}

func newFakeSource(id string, s *Store) *fakeSource {
	return &fakeSource{storePeer: newStorePeer(id, s, 2, 0), asked: map[rdrr.Hash]int{}}
}

func (f *fakeSource) Manifest(ctx context.Context, id rdrr.ModelID) ([]byte, []byte, error) {
	if f.manifest != nil {
		return f.manifest, nil, nil
	}
	m, sig, ok := f.s.Manifest(id)
	if !ok {
		return nil, nil, fmt.Errorf("source %s: %w", f.id, shardproto.ErrNotFound)
	}
	return m, sig, nil
}

func (f *fakeSource) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(int, []byte) error) error {
	f.mu.Lock()
	f.asked[sh.Hash]++
	f.mu.Unlock()
	if f.lacks[sh.Hash] {
		return fmt.Errorf("source %s: shard %s: %w", f.id, sh.Hash.Short(), shardproto.ErrNotFound)
	}
	return f.storePeer.ReadBlocks(ctx, sh, first, count, fn)
}

// Sources as a PeerSet: a store fetches a model from two sources, one of
// which lacks a shard; it is asked for that shard once, and the other
// source supplies it.
func TestSourcesFetch(t *testing.T) {
	src, id := synthModel(t, 3<<20, 1<<20, 64<<10, 1)
	full := seedStore(t, src)
	m, _ := full.manifest(id)
	partial := newFakeSource("http://partial", full)
	partial.lacks = map[rdrr.Hash]bool{m.Shards[0].Hash: true}
	whole := newFakeSource("http://whole", full)
	whole.perBlock = 2 * time.Millisecond // the partial source is asked too
	set := NewSources(partial, whole, newFakeSource("http://whole", full))
	if set.Len() != 2 {
		t.Fatalf("%d sources, want the duplicate dropped", set.Len())
	}
	if !set.Has(set.Peers(id)[0], m.Shards[0].Hash) || set.Has(newFakeSource("http://other", full), m.Shards[0].Hash) {
		t.Fatal("Has: want every shard for a source, none for another peer")
	}
	dst := emptyStore(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := dst.Fetch(ctx, id, set, FetchOptions{Seed: 1, WaitPeers: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	sameShards(t, dst, src, id)
	logPeers(t, "dst", dst)
	if n := partial.asked[m.Shards[0].Hash]; n > 1 {
		t.Errorf("the partial source was asked %d times for the shard it lacks, want at most once", n)
	}
	if set.Has(set.Peers(id)[0], m.Shards[0].Hash) != (partial.asked[m.Shards[0].Hash] == 0) {
		t.Error("Has does not reflect the not-found answer")
	}
}

// A node pulls from an HTTP-style source alone (no libp2p peer): the
// node's PeerSet answers for the source as holding every shard, in one
// call (Holding) as shard by shard (Has).
func TestNodePullFromSourceOnly(t *testing.T) {
	src, id := synthModel(t, 2<<20, 1<<20, 64<<10, 3)
	full := seedStore(t, src)
	n := newNode(t, openStore(t, t.TempDir(), 0), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Pull(ctx, id, PullOptions{Sources: []Source{newFakeSource("http://whole", full)}}); err != nil {
		t.Fatal(err)
	}
	sameShards(t, n.Store(), src, id)
}

// Sources.Manifest takes the first manifest that hashes to the ID and
// names every source that failed.
func TestSourcesManifest(t *testing.T) {
	src, id := synthModel(t, 1<<20, 1<<20, 64<<10, 1)
	_, other := synthModel(t, 1<<20, 1<<20, 64<<10, 2)
	full := seedStore(t, src)
	liar := newFakeSource("http://liar", full)
	liar.manifest = []byte(`{"not":"it"}`)
	empty := newFakeSource("http://empty", openStore(t, t.TempDir(), 0))
	good := newFakeSource("http://good", full)
	ctx := context.Background()

	man, _, err := NewSources(liar, empty, good).Manifest(ctx, id, time.Second)
	if err != nil || rdrr.Sum(man) != id {
		t.Fatalf("%d bytes, %v; want the good source's manifest", len(man), err)
	}
	_, _, err = NewSources(liar, empty, good).Manifest(ctx, other, time.Second)
	if !errors.Is(err, shardproto.ErrNotFound) || !errors.Is(err, shardproto.ErrBadManifest) {
		t.Fatalf("%v: want not-found and bad-manifest", err)
	}
	for _, name := range []string{"http://liar", "http://empty", "http://good"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("%v does not name %s", err, name)
		}
	}
	if _, _, err := NewSources().Manifest(ctx, id, 0); err == nil {
		t.Error("no sources: no error")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := NewSources(empty).Manifest(cctx, id, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
