package swarm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

// synthModel writes an RDRR directory of about size bytes of random F32
// tensors, cut into shards of shardSize with blocks of blockSize.
func synthModel(t testing.TB, size, shardSize, blockSize int64, seed uint64) (string, rdrr.ModelID) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), fmt.Sprintf("model-%d", seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := rdrr.NewWriter(dir, rdrr.WriterOptions{ShardSize: shardSize, BlockSize: blockSize})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	const cols = 1024
	tensorBytes := min(size, 3<<20) // tensors span shards
	for i := 0; int64(i)*tensorBytes < size; i++ {
		rows := int64(tensorBytes / (cols * 4))
		if err := w.AddTensor(fmt.Sprintf("blk.%d.ffn_up.weight", i), quant.F32, []int64{rows, cols}, io.LimitReader(rng, rows*cols*4)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := rdrr.Config{Architecture: "llama", ContextLength: 128, HiddenSize: 64, Layers: 1, Heads: 1, KVHeads: 1, HeadDim: 64,
		FFN: 128, VocabSize: 32, NormEps: 1e-5, Activation: "silu", Rope: rdrr.RoPE{Theta: 10000, Dim: 64, Style: "normal"}}
	id, err := w.Finish(&rdrr.Manifest{Name: fmt.Sprintf("synthetic-%d", seed), Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return dir, id
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func openStore(t testing.TB, dir string, quota int64, clock ...Clock) *Store {
	t.Helper()
	o := StoreOptions{Quota: quota, Logger: testLogger(t)}
	if len(clock) > 0 {
		o.Clock = clock[0]
	}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func readManifest(t testing.TB, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, rdrr.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameShards fails unless every shard of the model is complete in s and
// byte-identical to the source directory.
func sameShards(t testing.TB, s *Store, src string, id rdrr.ModelID) {
	t.Helper()
	m, ok := s.manifest(id)
	if !ok {
		t.Fatalf("%s: model %s missing", s.Dir(), id.Short())
	}
	for _, sh := range m.Shards {
		if !s.Has(sh.Hash) {
			t.Fatalf("%s: shard %s not complete", s.Dir(), sh.Hash.Short())
		}
		got, err := os.ReadFile(s.shardPath(sh.Hash))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(src, sh.Hash.String()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: shard %s differs from the source", s.Dir(), sh.Hash.Short())
		}
	}
	md, err := s.OpenModel(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range m.Tensors {
		if _, err := md.ReadTensor(context.Background(), tn.Name); err != nil {
			t.Fatalf("%s: %v", s.Dir(), err)
		}
	}
}

// swarmOf adds n empty stores to net as peers peer-0 … peer-(n-1), each
// serving slots requests at once at perBlock a block.
func swarmOf(t *testing.T, net *testNet, src string, n, slots int, perBlock time.Duration) []*Store {
	t.Helper()
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = emptyStore(t, src)
		net.add(newStorePeer(peerName(i), stores[i], slots, perBlock), stores[i].Has)
	}
	return stores
}

// fetchAll has every store fetch model id at once (options from opts with
// Seed i+1) and checks each ends with the source's shards.
func fetchAll(t *testing.T, net *testNet, src string, id rdrr.ModelID, stores []*Store, opts FetchOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := opts
			o.Seed = uint64(i + 1)
			errs[i] = stores[i].Fetch(ctx, id, net.view(peerName(i)), o)
		}()
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("%s: %v", peerName(i), errs[i])
		}
		sameShards(t, s, src, id)
	}
}
