package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/internal/testenv"
	"github.com/doppler-llm/doppler/internal/testmodel"
	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// pagedGolden is the part of a golden/*.once.json these tests use.
type pagedGolden struct {
	PromptTokens []int `json:"promptTokens"`
	Generated    []int `json:"generated"`
}

func readPagedGolden(t *testing.T, name string) pagedGolden {
	t.Helper()
	b, err := os.ReadFile(testenv.Path(t, "golden/"+name+".once.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g pagedGolden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.PromptTokens) == 0 || len(g.Generated) < pagedTokens {
		t.Fatalf("golden %s: %d prompt tokens, %d generated", name, len(g.PromptTokens), len(g.Generated))
	}
	return g
}

const pagedTokens = 16

// convertMoE converts a shared MoE GGUF into an RDRR directory (each
// expert in shards of its own, blocks small enough that an expert shard
// has several) and returns the manifest and the expert-only shards.
func convertMoE(t *testing.T, name string) (string, *rdrr.Manifest, rdrr.ModelID, map[rdrr.Hash]int64) {
	t.Helper()
	dir, rm := testmodel.Open(t, testenv.Path(t, "models/"+name+".gguf"), rdrr.WriterOptions{BlockSize: 64 << 10})
	m, id := rm.Manifest, rm.ID
	// Expert shards per the manifest's experts table, less any shard a
	// dense tensor also uses (none, as the writer lays them out).
	dense := map[int]bool{}
	for _, tn := range m.Tensors {
		if tn.Experts == 0 {
			for _, p := range tn.Pieces() {
				dense[p.Shard] = true
			}
		}
	}
	experts := map[rdrr.Hash]int64{}
	for _, e := range m.Experts {
		for _, i := range e.Shards {
			if !dense[i] {
				experts[m.Shards[i].Hash] = m.Shards[i].Size
			}
		}
	}
	if len(experts) == 0 || len(experts) == len(m.Shards) {
		t.Fatalf("%s: %d expert shards of %d", name, len(experts), len(m.Shards))
	}
	return dir, m, id, experts
}

// denseStore is a store holding model dir's manifest and dense shards but
// none of its expert shards.
func denseStore(t *testing.T, dir string, id rdrr.ModelID, m *rdrr.Manifest, experts map[rdrr.Hash]int64) string {
	t.Helper()
	sd := t.TempDir()
	s, err := swarm.Open(sd, swarm.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportDir(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for h := range experts {
		if err := os.Remove(filepath.Join(sd, "shards", h.String())); err != nil {
			t.Fatal(err)
		}
	}
	s, err = swarm.Open(sd, swarm.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, _ := s.Status(id)
	if st.CompleteShards != len(m.Shards)-len(experts) {
		t.Fatalf("dense store holds %d of %d shards; want all but the %d expert shards", st.CompleteShards, st.Shards, len(experts))
	}
	return sd
}

// heldExperts returns the expert shards store sd holds, checking that each
// file hashes to its name, and their bytes.
func heldExperts(t *testing.T, sd string, experts map[rdrr.Hash]int64) (n int, bytes int64) {
	t.Helper()
	for h, size := range experts {
		b, err := os.ReadFile(filepath.Join(sd, "shards", h.String()))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if rdrr.Hash(sha256.Sum256(b)) != h {
			t.Fatalf("expert shard %s in the store does not hash to its name", h.Short())
		}
		n++
		bytes += size
	}
	return n, bytes
}

type pagedOut struct {
	Tokens       []int   `json:"tokens"`
	ExpertHits   uint64  `json:"expert_hits"`
	ExpertMisses uint64  `json:"expert_misses"`
	ExpertBytes  uint64  `json:"expert_bytes_paged"`
	ExpertStall  float64 `json:"expert_stall_ms"`
	OffloadUsed  bool    `json:"offload_used"`
}

// runPaged runs the golden's prompt greedily for pagedTokens tokens.
func runPaged(t *testing.T, g pagedGolden, args ...string) pagedOut {
	t.Helper()
	ids := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(g.PromptTokens)), ","), "[]")
	out, err := doppler(t, "", append([]string{"run", "--prompt-tokens", ids, "--temp", "0", "-n", fmt.Sprint(pagedTokens),
		"--ignore-eos", "--ctx", "64", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("run %v: %v\n%s", args, err, out)
	}
	var r pagedOut
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return r
}

func sameTokens(t *testing.T, what string, got, want []int) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: %v, golden %v", what, got, want)
	}
}

// TestRunExpertPaging (issue 7): doppler run --expert-cache 2 (2 of 4
// experts of each layer resident) gives the golden greedy output with
// misses and paged bytes counted; with the expert shards only on a peer
// (the run's store holds the manifest and the dense shards), the output
// is the same and the experts' bytes came from that peer.
func TestRunExpertPaging(t *testing.T) {
	t.Setenv("DOPPLER_CACHE", t.TempDir())
	for _, name := range []string{"tiny-mixtral-F32", "tiny-gptoss-F32"} {
		t.Run(name, func(t *testing.T) {
			g := readPagedGolden(t, name)
			want := g.Generated[:pagedTokens]
			dir, m, id, experts := convertMoE(t, name)

			all := runPaged(t, g, "-m", dir)
			sameTokens(t, "all experts resident", all.Tokens, want)
			if all.ExpertHits+all.ExpertMisses+all.ExpertBytes != 0 {
				t.Fatalf("paging counters without --expert-cache: %+v", all)
			}
			loc := runPaged(t, g, "-m", dir, "--expert-cache", "2")
			sameTokens(t, "--expert-cache 2", loc.Tokens, want)
			if loc.ExpertMisses == 0 || loc.ExpertHits == 0 || loc.ExpertBytes == 0 {
				t.Fatalf("--expert-cache 2: counters %+v; want hits, misses and bytes paged", loc)
			}
			t.Logf("local: %d hits, %d misses, %d bytes paged, %.1f ms stalled", loc.ExpertHits, loc.ExpertMisses, loc.ExpertBytes, loc.ExpertStall)

			a := seedNode(t, dir, nil)
			sd := denseStore(t, dir, id, m, experts)
			got := runPaged(t, g, "-m", id.String(), "--store", sd, "--peer", a.Addrs()[0], "--expert-cache", "2", "--offload", "off")
			sameTokens(t, "experts from a peer", got.Tokens, want)
			if got.ExpertMisses == 0 || got.ExpertBytes == 0 {
				t.Fatalf("experts from a peer: counters %+v", got)
			}
			n, held := heldExperts(t, sd, experts)
			st := a.Host().Stats()
			t.Logf("peer: %d of %d expert shards fetched (%d bytes); peer uploaded %d bytes in %d blocks; %d bytes paged, %.1f ms stalled",
				n, len(experts), held, st.Uploaded, st.BlocksServed, got.ExpertBytes, got.ExpertStall)
			if n == 0 || held == 0 {
				t.Fatal("no expert shard came from the peer into the store")
			}
			if st.Uploaded < uint64(held) {
				t.Fatalf("the peer uploaded %d bytes, less than the %d bytes of expert shards the store now holds", st.Uploaded, held)
			}
		})
	}
}

// expertFlipProv serves expert shards' blocks with one byte flipped.
type expertFlipProv struct {
	p2p.Provider
	experts map[rdrr.Hash]int64
	flipped atomic.Int64
}

func (f *expertFlipProv) ReadBlock(h rdrr.Hash, i int, p []byte) (int, error) {
	n, err := f.Provider.ReadBlock(h, i, p)
	if _, ok := f.experts[h]; ok && err == nil && n > 0 {
		f.flipped.Add(1)
		p[n/2] ^= 0x40
	}
	return n, err
}

// TestRunExpertPagingLyingPeer (issue 7): the experts are on an honest
// peer and on one that corrupts every expert block it serves; the bad
// blocks are rejected, the experts come from the honest peer and the
// output is the golden's.
func TestRunExpertPagingLyingPeer(t *testing.T) {
	const name = "tiny-mixtral-F32"
	g := readPagedGolden(t, name)
	dir, m, id, experts := convertMoE(t, name)
	flip := &expertFlipProv{experts: experts}
	liar := seedNode(t, dir, func(o *swarm.NodeOptions) {
		o.Host.ServeUnverified = true
		o.WrapProvider = func(p p2p.Provider) p2p.Provider { flip.Provider = p; return flip }
	})
	honest := seedNode(t, dir, nil)
	sd := denseStore(t, dir, id, m, experts)
	start := time.Now()
	got := runPaged(t, g, "-m", id.String(), "--store", sd, "--peer", liar.Addrs()[0], "--peer", honest.Addrs()[0],
		"--expert-cache", "2", "--offload", "off")
	sameTokens(t, "with a lying peer", got.Tokens, g.Generated[:pagedTokens])
	n, held := heldExperts(t, sd, experts) // every file hashes to its name
	hs := honest.Host().Stats()
	t.Logf("%v: liar corrupted %d blocks (%d frames sent); honest peer sent %d blocks, %d bytes; store holds %d expert shards (%d bytes)",
		time.Since(start).Round(time.Millisecond), flip.flipped.Load(), liar.Host().Stats().BlocksServed, hs.BlocksServed, hs.Uploaded, n, held)
	if flip.flipped.Load() == 0 {
		t.Fatal("the lying peer was never asked for an expert block")
	}
	if n == 0 || hs.Uploaded < uint64(held) {
		t.Fatalf("the honest peer uploaded %d bytes for %d bytes of expert shards held", hs.Uploaded, held)
	}
}
