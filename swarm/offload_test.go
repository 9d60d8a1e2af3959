package swarm

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/internal/testdata"
	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
)

var (
	gpuOnce sync.Once
	gpu     *kernels.Device
	gpuErr  error
)

func testGPU(t *testing.T) *kernels.Device {
	t.Helper()
	gpuOnce.Do(func() { gpu, gpuErr = kernels.Open(kernels.Options{}) })
	if gpuErr != nil {
		t.Fatalf("no GPU adapter (CI installs mesa-vulkan-drivers): %v", gpuErr)
	}
	return gpu
}

// storiesDir converts stories260K into an RDRR directory.
func storiesDir(t *testing.T) (string, rdrr.ModelID) {
	t.Helper()
	src := testdata.Path(t, "models/stories260K.gguf")
	dir := filepath.Join(t.TempDir(), "stories")
	id, err := convert.ToRDRR(context.Background(), src, dir, convert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return dir, id
}

// prefillNode is a node holding the model and serving prefills.
func prefillNode(t *testing.T, dir string, id rdrr.ModelID, edit func(*PrefillOptions)) (*Node, *PrefillServer) {
	t.Helper()
	// Re-announce every second: a newcomer that missed the greeting learns
	// the prefill speed soon.
	n := newNode(t, seedStore(t, dir), func(o *NodeOptions) { o.Host.AnnounceInterval = time.Second })
	o := PrefillOptions{Device: testGPU(t), Context: 128, Warmup: []rdrr.ModelID{id}, WarmupTokens: 32, Logger: testLogger(t)}
	if edit != nil {
		edit(&o)
	}
	p, err := n.ServePrefill(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	select {
	case <-p.warm:
	case <-time.After(30 * time.Second):
		t.Fatal("warm-up did not finish in 30s")
	}
	if p.Stats().TokS <= 0 {
		t.Fatal("no prefill speed measured")
	}
	return n, p
}

type offloadClient struct {
	n    *Node
	m    *engine.Model
	id   rdrr.ModelID
	want []int // greedy tokens without offload
}

const genTokens = 12

func testPrompt(n int) []int {
	p := []int{1}
	for i := 1; i < n; i++ {
		p = append(p, (i*37+5)%500+3)
	}
	return p
}

func newOffloadClient(t *testing.T, dir string, id rdrr.ModelID, prompt []int, peers ...*Node) *offloadClient {
	t.Helper()
	n := newNode(t, seedStore(t, dir), nil)
	for _, p := range peers {
		if _, err := n.host.Connect(context.Background(), p.Addrs()[0]); err != nil {
			t.Fatal(err)
		}
	}
	rm, err := n.Store().OpenModel(id)
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(context.Background(), testGPU(t), rm, engine.Options{Context: 128})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	c := &offloadClient{n: n, m: m, id: id}
	s := c.session(t)
	res, err := s.Generate(context.Background(), prompt, engine.GenerateOptions{MaxTokens: genTokens})
	if err != nil {
		t.Fatal(err)
	}
	c.want = res.Tokens
	return c
}

func (c *offloadClient) session(t *testing.T) *engine.Session {
	s, err := c.m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// generate offloads under p, then generates; it checks the output equals
// the run without offload.
func (c *offloadClient) generate(t *testing.T, prompt []int, p OffloadPolicy) OffloadResult {
	t.Helper()
	s := c.session(t)
	res, err := c.n.Offload(context.Background(), c.id, c.m, s, prompt, p)
	if err != nil {
		t.Fatal(err)
	}
	rest := prompt
	if res.Used {
		if s.Pos() != len(prompt)-1 {
			t.Fatalf("after offload the session holds %d positions, want %d", s.Pos(), len(prompt)-1)
		}
		rest = prompt[len(prompt)-1:]
	} else if s.Pos() != 0 {
		t.Fatalf("offload not used (%s) but the session holds %d positions", res.Reason, s.Pos())
	}
	out, err := s.Generate(context.Background(), rest, engine.GenerateOptions{MaxTokens: genTokens})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out.Tokens) != fmt.Sprint(c.want) {
		t.Fatalf("offload %+v: tokens %v, without offload %v", res, out.Tokens, c.want)
	}
	return res
}

// TestOffload: two nodes with --offload force give the output of a local
// run, and the KV cache came from the peer; a lying peer is caught by the
// check and the client prefills locally; a stalling peer and a busy one
// cost a bounded wait, then a local prefill.
func TestOffload(t *testing.T) {
	dir, id := storiesDir(t)
	prompt := testPrompt(40)
	srv, sp := prefillNode(t, dir, id, nil)
	liar, lp := prefillNode(t, dir, id, func(o *PrefillOptions) {
		o.Tamper = func(kv []byte) {
			for i := 1; i < len(kv); i += 2 {
				kv[i] ^= 0x80 // negate every f16
			}
		}
	})
	slow, _ := prefillNode(t, dir, id, func(o *PrefillOptions) { o.Stall = 20 * time.Second; o.Queue = 1 })
	c := newOffloadClient(t, dir, id, prompt, srv, liar, slow)

	t.Run("force", func(t *testing.T) {
		before := c.n.Host().Stats().Peers[srv.ID()].Downloaded
		res := c.generate(t, prompt, OffloadPolicy{Mode: OffloadForce, Peers: []string{srv.ID()}, Wait: 10 * time.Second})
		if !res.Used || res.Peer != srv.ID() {
			for _, e := range c.n.Host().Inventories(id) {
				t.Logf("inventory of %s: prefill %v models %d have %d/%d", e.Peer, e.Inv.PrefillTokS, len(e.Inv.Models), e.Inv.Have.Count(), e.Inv.Have.N)
			}
			t.Logf("srv %s liar %s slow %s", srv.ID(), liar.ID(), slow.ID())
			t.Fatalf("offload not used: %+v", res)
		}
		got := c.n.Host().Stats().Peers[srv.ID()].Downloaded - before
		if st := sp.Stats(); st.Served != 1 || st.Tokens != int64(len(prompt)) {
			t.Fatalf("server stats %+v", st)
		}
		if res.Received == 0 || got < res.Received || (!res.Compressed && res.Received != uint64(res.KVBytes)) {
			t.Fatalf("received %d payload bytes (%d on the wire) for a %d-byte KV cache", res.Received, got, res.KVBytes)
		}
		t.Logf("offloaded: %d KV bytes, %d received (compressed %v), %v, max |Δlogit| %g", res.KVBytes, res.Received, res.Compressed, res.Elapsed, res.MaxDiff)
	})
	t.Run("not allowed", func(t *testing.T) {
		res := c.generate(t, prompt, OffloadPolicy{Mode: OffloadForce, Peers: []string{"12D3KooWNotThisOne"}, Wait: 100 * time.Millisecond})
		if res.Used {
			t.Fatalf("offloaded to a peer not allowed: %+v", res)
		}
	})
	t.Run("auto", func(t *testing.T) {
		// Auto decides by the estimate; either way the output is the same.
		res := c.generate(t, prompt, OffloadPolicy{Mode: OffloadAuto, Peers: []string{srv.ID()}})
		t.Logf("auto: used %v, estimate %v vs local %v (%s)", res.Used, res.Estimate, res.Local, res.Reason)
		if res.Local <= 0 {
			t.Fatalf("no local estimate: %+v", res)
		}
		res = c.generate(t, prompt, OffloadPolicy{Mode: OffloadAuto, Peers: []string{srv.ID()}, LocalTokS: 1e-3})
		if !res.Used {
			t.Fatalf("a very slow local prefill did not offload: %+v", res)
		}
	})
	t.Run("liar", func(t *testing.T) {
		res := c.generate(t, prompt, OffloadPolicy{Mode: OffloadForce, Peers: []string{liar.ID()}, Wait: 10 * time.Second})
		if res.Used || !res.Rejected || res.Peer != liar.ID() {
			t.Fatalf("a tampered KV cache was not rejected: %+v", res)
		}
		if lp.Stats().Served != 1 {
			t.Fatalf("liar stats %+v", lp.Stats())
		}
		// The liar is never asked again.
		res = c.generate(t, prompt, OffloadPolicy{Mode: OffloadForce, Peers: []string{liar.ID()}, Wait: 100 * time.Millisecond})
		if res.Used || res.Peer != "" {
			t.Fatalf("asked the liar again: %+v", res)
		}
	})
	t.Run("stall and busy", func(t *testing.T) {
		pol := OffloadPolicy{Mode: OffloadForce, Peers: []string{slow.ID()}, Wait: 10 * time.Second, Timeout: time.Second}
		start := time.Now()
		res := c.generate(t, prompt, pol)
		if res.Used || res.Peer != slow.ID() || time.Since(start) > 8*time.Second {
			t.Fatalf("stalling peer: %+v after %v", res, time.Since(start))
		}
		// Its one queue slot is still taken by the stalled request: busy.
		start = time.Now()
		res = c.generate(t, prompt, pol)
		if res.Used || time.Since(start) > 4*time.Second {
			t.Fatalf("busy peer: %+v after %v", res, time.Since(start))
		}
		t.Logf("busy: %s", res.Reason)
	})
}

// TestPrefillProtocolErrors: malformed requests and answers end in errors,
// never a crash or an unbounded allocation.
func TestPrefillProtocolErrors(t *testing.T) {
	dir, id := storiesDir(t)
	srv, _ := prefillNode(t, dir, id, nil)
	cli := newNode(t, openStore(t, t.TempDir(), 0), nil)
	if _, err := cli.host.Connect(context.Background(), srv.Addrs()[0]); err != nil {
		t.Fatal(err)
	}
	r := cli.host.Remote(srv.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rm, err := rdrr.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rm.Manifest.Config
	kvb := func(n int) int { return n * cfg.Layers * 2 * cfg.KVHeads * cfg.HeadDim * 2 } // f16
	exp := p2p.PrefillExpect{KVBytes: kvb, Vocab: cfg.VocabSize}
	// Good request: the answer matches the expectation.
	res, _, err := r.Prefill(ctx, &wire.PrefillRequest{Model: id, KV: wire.KVF16, Tokens: []uint32{1, 2, 3}}, exp)
	if err != nil {
		t.Fatal(err)
	}
	if res.Positions != 3 || len(res.KV) != kvb(3) || len(res.Logits) != cfg.VocabSize {
		t.Fatalf("result: %d positions, %d KV bytes, %d logits", res.Positions, len(res.KV), len(res.Logits))
	}
	for _, c := range []struct {
		name string
		req  *wire.PrefillRequest
		exp  p2p.PrefillExpect
		want error
	}{
		{"unknown model", &wire.PrefillRequest{Model: rdrr.ModelID{1}, KV: wire.KVF16, Tokens: []uint32{1}}, exp, p2p.ErrNotFound},
		{"token outside the vocabulary", &wire.PrefillRequest{Model: id, KV: wire.KVF16, Tokens: []uint32{1, 99999}}, exp, p2p.ErrRemote},
		{"prompt past the context", &wire.PrefillRequest{Model: id, KV: wire.KVF16, Tokens: make([]uint32, wire.MaxPrefillTokens)}, exp, p2p.ErrRemote},
		{"unexpected KV size", &wire.PrefillRequest{Model: id, KV: wire.KVF16, Tokens: []uint32{1}}, p2p.PrefillExpect{KVBytes: func(int) int { return 7 }, Vocab: cfg.VocabSize}, p2p.ErrProtocol},
		{"unexpected vocabulary", &wire.PrefillRequest{Model: id, KV: wire.KVF16, Tokens: []uint32{1}}, p2p.PrefillExpect{KVBytes: kvb, Vocab: 100}, p2p.ErrProtocol},
	} {
		if _, _, err := r.Prefill(ctx, c.req, c.exp); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, _, err := r.Prefill(ctx, &wire.PrefillRequest{Model: id, KV: wire.KVF16, Tokens: []uint32{1, 2, 3}}, exp); err != nil {
		t.Fatalf("after bad requests: %v", err)
	}
}
