package swarmbench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// small is a model and links small enough for a test on 2 cores: 2 MiB
// in 4 shards, 20 Mbit/s per node (one download alone: about 0.9 s).
func small(t *testing.T, mode Mode, peers int) Options {
	return Options{Mode: mode, Peers: peers, ModelBytes: 2 << 20, ShardBytes: 512 << 10, BlockBytes: 64 << 10,
		Rate: 20e6, Latency: 10 * time.Millisecond, Dir: t.TempDir(), Timeout: 2 * time.Minute}
}

func run(t *testing.T, o Options) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	t.Logf("%s", b)
	return r
}

// TestRunHonest: every honest peer completes with nothing bad stored, on
// the simulated network (HTTP baseline included) and on loopback.
func TestRunHonest(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"sim", small(t, ModeSim, 8)},
		{"loopback", func() Options { o := small(t, ModeLoopback, 3); o.Rate, o.Latency = 0, 0; return o }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.o)
			if r.HonestPeers != tc.o.Peers || r.HonestComplete != r.HonestPeers || len(r.Failed) > 0 {
				t.Errorf("%d/%d honest peers complete (of %d), failed: %v", r.HonestComplete, r.HonestPeers, tc.o.Peers, r.Failed)
			}
			if r.BadBytesStored != 0 {
				t.Errorf("%d bad bytes stored", r.BadBytesStored)
			}
			// The seed sends every block at least once; in a swarm that
			// works the peers send each other much of it.
			if limit := max(1.5, 0.75*float64(tc.o.Peers)); r.SeedUploadRatio < 0.99 || r.SeedUploadRatio > limit {
				t.Errorf("seed uploaded %.2f× the model, want 1 … %.2f×", r.SeedUploadRatio, limit)
			}
			if r.MaxDownloadRatio < 0.99 || r.MaxDownloadRatio > 2 {
				t.Errorf("worst peer downloaded %.2f× the model, want 1 … 2×", r.MaxDownloadRatio)
			}
			// On a shaped link clients share the server's uplink, so
			// serving several takes at least as long as serving one; on
			// unshaped loopback both take milliseconds and either may
			// win by noise.
			slowest := r.OneHTTPSeconds
			if tc.o.Rate == 0 {
				slowest = 0
			}
			if r.P2PSeconds <= 0 || r.OneHTTPSeconds <= 0 || r.HTTPSeconds <= 0 || r.HTTPSeconds < slowest || r.HTTPClients != r.HonestPeers {
				t.Errorf("times: p2p %gs, one http %gs, http %gs with %d clients", r.P2PSeconds, r.OneHTTPSeconds, r.HTTPSeconds, r.HTTPClients)
			}
			if r.GossipMsgsPerPeerMin <= 0 || r.GossipBytesPerPeerMin <= 0 {
				t.Errorf("gossip %g msgs, %g bytes per peer per minute: want some", r.GossipMsgsPerPeerMin, r.GossipBytesPerPeerMin)
			}
		})
	}
	t.Run("sim rate binds", func(t *testing.T) {
		// One download alone takes about the model's bits over the rate:
		// the shaper, not the CPU, sets the pace.
		o := small(t, ModeSim, 1)
		r := run(t, o)
		want := float64(r.ModelBytes*8) / float64(o.Rate)
		if r.OneHTTPSeconds < 0.9*want || r.OneHTTPSeconds > 3*want {
			t.Errorf("one HTTP download took %.2fs at %s, want about %.2fs", r.OneHTTPSeconds, FormatRate(o.Rate), want)
		}
	})
}

// TestRunChurnMalicious: a third of the honest peers killed mid-transfer
// and as many malicious peers as honest ones, every kind: every honest
// peer (the fresh ones included) completes, no bad byte is stored, and
// every peer that sent a bad block is dropped by the peer it sent it to.
func TestRunChurnMalicious(t *testing.T) {
	o := small(t, ModeSim, 12)
	o.Churn, o.Malicious, o.NoHTTP = 0.34, 0.5, true
	// A staller holds a request for the stall timeout; the default (10 s
	// and up) would make this test a minute long.
	o.RequestTimeout = 2 * time.Second
	r := run(t, o)
	if r.Malicious != 6 || r.Churned != 2 || r.HonestPeers != 6 {
		t.Fatalf("%d malicious, %d churned, %d honest: want 6, 2, 6", r.Malicious, r.Churned, r.HonestPeers)
	}
	if r.HonestComplete != r.HonestPeers || len(r.Failed) > 0 {
		t.Errorf("%d/%d honest peers complete; failed: %v", r.HonestComplete, r.HonestPeers, r.Failed)
	}
	if r.BadBytesStored != 0 {
		t.Errorf("%d bad bytes stored", r.BadBytesStored)
	}
	if r.BadSenders == 0 || r.Unbanned != 0 || r.Banned != r.BadSenders {
		t.Errorf("%d bad senders, %d banned, %d (peer, sender) pairs not banned: want every bad sender banned", r.BadSenders, r.Banned, r.Unbanned)
	}
}

// TestResultKeys: the JSON keys the issue fixes stay spelled so.
func TestResultKeys(t *testing.T) {
	b, err := json.Marshal(Result{Failed: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"peers", "model_bytes", "p2p_s", "http_s", "one_http_s", "seed_upload_ratio",
		"max_download_ratio", "honest_peers", "honest_complete", "bad_bytes_stored", "banned", "cpu_cores_busy",
		"gossip_msgs_per_peer_min", "gossip_bytes_per_peer_min", "http_clients", "mode", "failed"} {
		if _, ok := m[k]; !ok {
			t.Errorf("key %q missing from %s", k, b)
		}
	}
}

// TestCheckStore: a flipped byte in a complete shard and in a held block
// of a partial one are both found.
func TestCheckStore(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "model")
	id, err := SynthModel(src, 1<<20, 256<<10, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	m, err := rdrr.OpenDir(src)
	if err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(dir, "store")
	s, err := swarm.Open(st, swarm.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportDir(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	s.Close()
	c, err := CheckStore(st, id, m.Manifest)
	if err != nil || !c.Complete || c.BadBytes != 0 {
		t.Fatalf("clean store: %+v, %v", c, err)
	}
	sh := m.Manifest.Shards[1]
	f, err := os.OpenFile(filepath.Join(st, "shards", sh.Hash.String()), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	f.ReadAt(b, sh.BlockSize+5)
	b[0] ^= 1
	f.WriteAt(b, sh.BlockSize+5)
	f.Close()
	c, err = CheckStore(st, id, m.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if c.BadBytes != int64(sh.BlockLen(1)) || !slices.Contains(c.BadShards, sh.Hash) {
		t.Errorf("one flipped byte in block 1 of %s: %+v, want %d bad bytes", sh.Hash.Short(), c, sh.BlockLen(1))
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"40mbit", 40e6, false}, {"500kbit", 500e3, false}, {"1gbit", 1e9, false}, {"5mbps", 40e6, false},
		{"1.5mbit", 1.5e6, false}, {"2000", 2000, false}, {" 20MBit ", 20e6, false},
		{"", 0, true}, {"fast", 0, true}, {"-1mbit", 0, true}, {"0", 0, true},
	} {
		got, err := ParseRate(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.err)
		}
		if err == nil && !strings.Contains(tc.in, ".") && !strings.Contains(tc.in, "bps") {
			if back, _ := ParseRate(FormatRate(got)); back != got {
				t.Errorf("FormatRate(%d) = %q does not parse back", got, FormatRate(got))
			}
		}
	}
}
