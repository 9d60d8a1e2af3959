package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/testmodel"
	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// convertSmallShards converts stories260K into an RDRR directory cut into
// several shards.
func convertSmallShards(t *testing.T) (string, *rdrr.Manifest, rdrr.ModelID) {
	t.Helper()
	dir, rm := testmodel.Open(t, testenv.Path(t, "models/stories260K.gguf"), rdrr.WriterOptions{ShardSize: 256 << 10, BlockSize: 64 << 10})
	m, id := rm.Manifest, rm.ID
	if len(m.Shards) < 3 {
		t.Fatalf("%d shards; want several", len(m.Shards))
	}
	return dir, m, id
}

// seedNode starts an in-process swarm node serving dir's model.
func seedNode(t *testing.T, dir string, edit func(*swarm.NodeOptions)) *swarm.Node {
	t.Helper()
	s, err := swarm.Open(t.TempDir(), swarm.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.ImportDir(ctx, dir); err != nil {
		t.Fatal(err)
	}
	o := swarm.NodeOptions{Host: p2p.Options{Listen: []string{"/ip4/127.0.0.1/tcp/0"}, FrameTimeout: 5 * time.Second},
		LookupTimeout: 3 * time.Second}
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

// partialStore is a store holding model dir without shard drop (the zero
// hash: the whole model).
func partialStore(t *testing.T, dir string, drop rdrr.Hash) string {
	t.Helper()
	sd := t.TempDir()
	s, err := swarm.Open(sd, swarm.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.ImportDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if drop == (rdrr.Hash{}) {
		return sd
	}
	if err := os.Remove(filepath.Join(sd, "shards", drop.String())); err != nil {
		t.Fatal(err)
	}
	s, err = swarm.Open(sd, swarm.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := s.Status(id)
	s.Close()
	if st.CompleteShards != st.Shards-1 {
		t.Fatalf("partial store holds %d of %d shards", st.CompleteShards, st.Shards)
	}
	return sd
}

type runOut struct {
	Tokens      []int   `json:"tokens"`
	Text        string  `json:"text"`
	OffloadUsed bool    `json:"offload_used"`
	OffloadPeer string  `json:"offload_peer"`
	OffloadB    float64 `json:"offload_bytes"`
}

func runJSON(t *testing.T, args ...string) runOut {
	t.Helper()
	out, err := doppler(t, "", append([]string{"run", "--prompt-tokens", "1,403,407,261,378", "--temp", "0", "-n", "16", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("run %v: %v\n%s", args, err, out)
	}
	var r runOut
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(r.Tokens) == 0 {
		t.Fatalf("no tokens: %s", out)
	}
	return r
}

// TestRunFetchesMissingShards: doppler run -m ID --peer B with a store that
// lacks a shard B has matches a full local run, and the shard came from B.
func TestRunFetchesMissingShards(t *testing.T) {
	dir, m, id := convertSmallShards(t)
	t.Setenv("DOPPLER_CACHE", t.TempDir())
	want := runJSON(t, "-m", dir)
	b := seedNode(t, dir, nil)
	drop := m.Shards[len(m.Shards)/2].Hash
	sd := partialStore(t, dir, drop)
	got := runJSON(t, "-m", id.String(), "--store", sd, "--peer", b.Addrs()[0])
	if fmt.Sprint(got.Tokens) != fmt.Sprint(want.Tokens) {
		t.Fatalf("run through the swarm: %v, local: %v", got.Tokens, want.Tokens)
	}
	if up := b.Host().Stats().BlocksServed; up == 0 {
		t.Fatal("the peer served no block")
	}
	s, err := swarm.Open(sd, swarm.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Has(drop) {
		t.Fatal("the missing shard is not in the store after the run")
	}
}

// TestRunOffload: doppler run --offload force to an in-process node serving
// prefills gives the output of a local run, with the KV cache from the peer.
func TestRunOffload(t *testing.T) {
	dir, _, id := convertSmallShards(t)
	t.Setenv("DOPPLER_CACHE", t.TempDir())
	want := runJSON(t, "-m", dir)
	b := seedNode(t, dir, func(o *swarm.NodeOptions) { o.Host.AnnounceInterval = time.Second })
	load, closeGPU, err := prefillLoader("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeGPU)
	p, err := b.ServePrefill(swarm.PrefillOptions{Load: load, Warmup: []rdrr.ModelID{id}, WarmupTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().TokS == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	sd := partialStore(t, dir, rdrr.Hash{}) // the whole model: offload is about prefill
	got := runJSON(t, "-m", id.String(), "--store", sd, "--peer", b.Addrs()[0], "--offload", "force", "--offload-peers", b.ID())
	if fmt.Sprint(got.Tokens) != fmt.Sprint(want.Tokens) {
		t.Fatalf("with offload: %v, local: %v", got.Tokens, want.Tokens)
	}
	if !got.OffloadUsed || got.OffloadPeer != b.ID() || got.OffloadB == 0 || p.Stats().Served != 1 {
		t.Fatalf("offload not used: %+v, server %+v", got, p.Stats())
	}
	// Not allowed to that peer: local prefill, same output.
	got = runJSON(t, "-m", id.String(), "--store", sd, "--peer", b.Addrs()[0], "--offload", "force")
	if got.OffloadUsed || fmt.Sprint(got.Tokens) != fmt.Sprint(want.Tokens) {
		t.Fatalf("offload without --offload-peers/--offload-any: %+v", got)
	}
	if _, err := doppler(t, "", "run", "-m", dir, "--prompt-tokens", "1,2", "--offload", "force"); err == nil {
		t.Fatal("--offload without a swarm was accepted")
	}
}
