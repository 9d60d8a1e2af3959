package p2p

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/leaktest"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

// TestMain fails the package when goroutines outlive the hosts: the
// baseline is taken after one host has been started and closed, so
// libp2p's once-per-process goroutines are not counted.
func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	h, err := New(ctx, Options{}, nil)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "warm-up host:", err)
		os.Exit(1)
	}
	h.Close()
	base := leaktest.Baseline(2 * time.Second)
	code := m.Run()
	if code == 0 {
		if n := leaktest.Settle(base, 5*time.Second); n > base {
			fmt.Fprintf(os.Stderr, "goroutine leak: %d goroutines, %d before the tests\n%s\n", n, base, leaktest.Stacks())
			code = 1
		}
	}
	os.Exit(code)
}

// fixture is one small model held in memory: two shards of 1 KiB blocks,
// the first with a short last block.
type fixture struct {
	id       rdrr.ModelID
	manifest []byte
	sig      []byte
	m        *rdrr.Manifest
	data     map[rdrr.Hash][]byte
}

func newFixture(t testing.TB, seed uint64, sign bool) *fixture {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	f := &fixture{data: map[rdrr.Hash][]byte{}}
	m := &rdrr.Manifest{
		Format: rdrr.Format,
		Config: rdrr.Config{Architecture: "llama", Layers: 1, HiddenSize: 32, Heads: 2, KVHeads: 1, HeadDim: 16,
			FFN: 64, VocabSize: 10, NormEps: 1e-5, Activation: "silu", Rope: rdrr.RoPE{Theta: 10000, Dim: 16, Style: "normal"}},
	}
	for i, size := range []int{37*1024 + 300, 8 * 1024} {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		sh := rdrr.Shard{Hash: rdrr.Sum(b), Size: int64(size), BlockSize: 1024}
		for off := 0; off < size; off += 1024 {
			sh.Blocks = append(sh.Blocks, rdrr.Sum(b[off:min(off+1024, size)]))
		}
		sh.Root = rdrr.MerkleRoot(sh.Blocks)
		m.Shards = append(m.Shards, sh)
		m.Tensors = append(m.Tensors, rdrr.Tensor{Name: fmt.Sprintf("t%d", i), DType: quant.F32, Shape: []int64{4, 8}, Size: 128, Shard: i})
		f.data[sh.Hash] = b
	}
	raw, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rdrr.ParseManifest(raw); err != nil {
		t.Fatal(err)
	}
	f.manifest, f.m, f.id = raw, m, rdrr.Sum(raw)
	if sign {
		_, key, _ := ed25519.GenerateKey(nil)
		if f.sig, err = rdrr.Sign(raw, key); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// memProvider serves fixtures from memory.
type memProvider struct {
	mu     sync.Mutex
	models []*fixture
}

func (p *memProvider) Manifest(id rdrr.ModelID) ([]byte, []byte, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.models {
		if f.id == id {
			return f.manifest, f.sig, true
		}
	}
	return nil, nil, false
}

func (p *memProvider) Shard(h rdrr.Hash) (rdrr.Shard, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.models {
		for _, s := range f.m.Shards {
			if s.Hash == h {
				return s, true
			}
		}
	}
	return rdrr.Shard{}, false
}

func (p *memProvider) ReadBlock(h rdrr.Hash, i int, buf []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.models {
		if b, ok := f.data[h]; ok {
			sh, _ := func() (rdrr.Shard, bool) {
				for _, s := range f.m.Shards {
					if s.Hash == h {
						return s, true
					}
				}
				return rdrr.Shard{}, false
			}()
			start := int64(i) * sh.BlockSize
			end := min(start+sh.BlockSize, sh.Size)
			return copy(buf, b[start:end]), nil
		}
	}
	return 0, fmt.Errorf("no shard %s", h.Short())
}

// testOptions are short, loopback-only settings.
func testOptions() Options {
	return Options{
		RequestTimeout:   time.Second,
		FrameTimeout:     time.Second,
		DialTimeout:      3 * time.Second,
		AnnounceInterval: 200 * time.Millisecond,
		AnnounceJitter:   50 * time.Millisecond,
	}
}

func newHost(t *testing.T, prov Provider, edit func(*Options)) *Host {
	t.Helper()
	o := testOptions()
	if edit != nil {
		edit(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := New(ctx, o, prov)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	for _, a := range h.Addrs() {
		if !strings.HasPrefix(a, "/ip4/127.0.0.1/") {
			t.Fatalf("host advertises a non-loopback address %s", a)
		}
	}
	return h
}

func connect(t *testing.T, from, to *Host) {
	t.Helper()
	// Generous: a loaded 2-core machine has taken over 5 s to dial.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, err := from.Connect(ctx, to.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	if id != to.ID() {
		t.Fatalf("connected to %s, want %s", id, to.ID())
	}
}

// quiet makes a host's gossip refresh only hourly: what others learn of
// it comes from the exchange under test (a first announcement, a direct
// ask, a watch).
func quiet(o *Options) { o.AnnounceInterval, o.AnnounceJitter = time.Hour, time.Millisecond }

// quietPair starts two quiet hosts, b connected to a.
func quietPair(t *testing.T) (a, b *Host) {
	t.Helper()
	a = newHost(t, nil, quiet)
	b = newHost(t, nil, quiet)
	connect(t, b, a)
	return a, b
}
