package prefilltest

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
	"github.com/doppler-llm/doppler/swarm"
)

// genTokens is how many tokens each generation in the suite decodes.
const genTokens = 12

// clientContext is the KV cache length of the client's sessions.
const clientContext = 128

// storiesDir converts stories260K into an RDRR directory.
func storiesDir(t *testing.T) (string, rdrr.ModelID) {
	t.Helper()
	src := testenv.Path(t, "models/stories260K.gguf")
	dir := filepath.Join(t.TempDir(), "stories")
	id, err := convert.ToRDRR(context.Background(), src, dir, convert.Options{})
	if err != nil {
		t.Fatalf("convert %s: %v", src, err)
	}
	return dir, id
}

// logger writes a node's log into the test's.
func logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-min(len(p), 1)]))
	return len(p), nil
}

// node starts a swarm node on loopback whose store holds dir's model.
func node(t *testing.T, dir string, edit func(*swarm.NodeOptions)) *swarm.Node {
	t.Helper()
	s, err := swarm.Open(t.TempDir(), swarm.StoreOptions{Logger: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.ImportDir(ctx, dir); err != nil {
		t.Fatalf("import %s: %v", dir, err)
	}
	o := swarm.NodeOptions{
		Host:          p2p.Options{Listen: []string{"/ip4/127.0.0.1/tcp/0"}, FrameTimeout: 5 * time.Second},
		Fetch:         swarm.FetchOptions{Poll: 20 * time.Millisecond, WaitPeers: 15 * time.Second},
		LookupTimeout: 3 * time.Second,
		Discover:      time.Second,
		Logger:        logger(t),
	}
	if edit != nil {
		edit(&o)
	}
	n, err := swarm.NewNode(ctx, s, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// prefillNode is a node holding the model and serving prefills through
// load; it returns once the warm-up measured a prefill speed.
func prefillNode(t *testing.T, dir string, id rdrr.ModelID, load swarm.PrefillLoader, edit func(*swarm.PrefillOptions)) (*swarm.Node, *swarm.PrefillServer) {
	t.Helper()
	// Re-announce every second: a newcomer that missed the greeting learns
	// the prefill speed soon.
	n := node(t, dir, func(o *swarm.NodeOptions) { o.Host.AnnounceInterval = time.Second })
	o := swarm.PrefillOptions{Load: load, Context: clientContext, Warmup: []rdrr.ModelID{id}, WarmupTokens: 32, Logger: logger(t)}
	if edit != nil {
		edit(&o)
	}
	p, err := n.ServePrefill(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().TokS <= 0 {
		if time.Now().After(deadline) {
			t.Fatal("no prefill speed measured 30s after start (warm-up failed or too slow)")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n, p
}

// testPrompt is n token ids below 512 (stories260K's vocabulary), BOS first.
func testPrompt(n int) []int {
	p := []int{1}
	for i := 1; i < n; i++ {
		p = append(p, (i*37+5)%500+3)
	}
	return p
}

// greedy continues session s with ids and then genTokens argmax tokens,
// which it returns.
func greedy(s swarm.PrefillSession, ids []int) ([]int, error) {
	var out []int
	for range genTokens {
		logits, err := s.Forward(ids)
		if err != nil {
			return nil, err
		}
		next := 0
		for i, v := range logits {
			if v > logits[next] {
				next = i
			}
		}
		out = append(out, next)
		ids = []int{next}
	}
	return out, nil
}

type client struct {
	n    *swarm.Node
	rm   *rdrr.Model
	id   rdrr.ModelID
	load swarm.PrefillLoader
	want []int // greedy tokens without offload
}

func newClient(t *testing.T, dir string, id rdrr.ModelID, load swarm.PrefillLoader, prompt []int, peers ...*swarm.Node) *client {
	t.Helper()
	n := node(t, dir, nil)
	for _, p := range peers {
		if _, errs := n.Connect(context.Background(), p.Addrs()[:1]); len(errs) > 0 {
			t.Fatal(errs)
		}
	}
	rm, err := n.Store().OpenModel(id)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{n: n, rm: rm, id: id, load: load}
	if c.want, err = greedy(c.session(t), prompt); err != nil {
		t.Fatalf("generate without offload: %v", err)
	}
	return c
}

func (c *client) session(t *testing.T) swarm.PrefillSession {
	t.Helper()
	s, err := c.load(context.Background(), c.rm, swarm.PrefillLoad{Context: clientContext, Logger: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// generate offloads under p, then generates; it checks the output equals
// the run without offload.
func (c *client) generate(t *testing.T, prompt []int, p swarm.OffloadPolicy) swarm.OffloadResult {
	t.Helper()
	s := c.session(t)
	res, err := c.n.Offload(context.Background(), c.id, c.rm.Manifest.Config, s, prompt, p)
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
	out, err := greedy(s, rest)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out, c.want) {
		t.Fatalf("offload %+v: tokens %v, without offload %v", res, out, c.want)
	}
	return res
}

// Offload checks prefill offload between nodes whose models load must put
// on the GPU (or stand in for one, as Reference does): with --offload
// force the output equals a local run's and the KV cache came from the
// peer; a peer not allowed is not asked; auto decides by the estimate; a
// lying peer is caught by the check and never asked again; a stalling
// peer and a busy one cost a bounded wait, then a local prefill.
func Offload(t *testing.T, load swarm.PrefillLoader) {
	dir, id := storiesDir(t)
	prompt := testPrompt(40)
	srv, sp := prefillNode(t, dir, id, load, nil)
	liar, lp := prefillNode(t, dir, id, load, func(o *swarm.PrefillOptions) {
		o.Tamper = func(kv []byte) {
			for i := 1; i < len(kv); i += 2 {
				kv[i] ^= 0x80 // negate every f16
			}
		}
	})
	slow, _ := prefillNode(t, dir, id, load, func(o *swarm.PrefillOptions) { o.Stall = 20 * time.Second; o.Queue = 1 })
	c := newClient(t, dir, id, load, prompt, srv, liar, slow)

	t.Run("force", func(t *testing.T) {
		before := c.n.Host().Stats().Peers[srv.ID()].Downloaded
		res := c.generate(t, prompt, swarm.OffloadPolicy{Mode: swarm.OffloadForce, Peers: []string{srv.ID()}, Wait: 10 * time.Second})
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
		res := c.generate(t, prompt, swarm.OffloadPolicy{Mode: swarm.OffloadForce, Peers: []string{"12D3KooWNotThisOne"}, Wait: 100 * time.Millisecond})
		if res.Used {
			t.Fatalf("offloaded to a peer not allowed: %+v", res)
		}
	})
	t.Run("auto", func(t *testing.T) {
		// Auto decides by the estimate; either way the output is the same.
		res := c.generate(t, prompt, swarm.OffloadPolicy{Mode: swarm.OffloadAuto, Peers: []string{srv.ID()}})
		t.Logf("auto: used %v, estimate %v vs local %v (%s)", res.Used, res.Estimate, res.Local, res.Reason)
		if res.Local <= 0 {
			t.Fatalf("no local estimate: %+v", res)
		}
		res = c.generate(t, prompt, swarm.OffloadPolicy{Mode: swarm.OffloadAuto, Peers: []string{srv.ID()}, LocalTokS: 1e-3})
		if !res.Used {
			t.Fatalf("a very slow local prefill did not offload: %+v", res)
		}
	})
	t.Run("liar", func(t *testing.T) {
		res := c.generate(t, prompt, swarm.OffloadPolicy{Mode: swarm.OffloadForce, Peers: []string{liar.ID()}, Wait: 10 * time.Second})
		if res.Used || !res.Rejected || res.Peer != liar.ID() {
			t.Fatalf("a tampered KV cache was not rejected: %+v", res)
		}
		if lp.Stats().Served != 1 {
			t.Fatalf("liar stats %+v", lp.Stats())
		}
		// The liar is never asked again.
		res = c.generate(t, prompt, swarm.OffloadPolicy{Mode: swarm.OffloadForce, Peers: []string{liar.ID()}, Wait: 100 * time.Millisecond})
		if res.Used || res.Peer != "" {
			t.Fatalf("asked the liar again: %+v", res)
		}
	})
	t.Run("stall and busy", func(t *testing.T) {
		pol := swarm.OffloadPolicy{Mode: swarm.OffloadForce, Peers: []string{slow.ID()}, Wait: 10 * time.Second, Timeout: time.Second}
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

// ProtocolErrors checks that malformed prefill requests and answers end
// in errors, never a crash or an unbounded allocation, with the prefill
// service's models loaded by load.
func ProtocolErrors(t *testing.T, load swarm.PrefillLoader) {
	dir, id := storiesDir(t)
	srv, _ := prefillNode(t, dir, id, load, nil)
	cli := node(t, dir, nil)
	if _, errs := cli.Connect(context.Background(), srv.Addrs()[:1]); len(errs) > 0 {
		t.Fatal(errs)
	}
	r := cli.Host().Remote(srv.ID())
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
