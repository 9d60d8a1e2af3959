package swarm

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/p2p"
)

// pullProfile, when set, is where BenchmarkSwarmPull writes a CPU profile
// of the pulls alone (go test -bench SwarmPull -args -pullprofile FILE);
// -cpuprofile would include writing the model and starting the nodes.
var pullProfile = flag.String("pullprofile", "", "CPU profile of BenchmarkSwarmPull's pulls only")

// cpuNow is the process's user + system CPU time so far.
func cpuNow(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSwarmPull is `doppler bench swarm --peers 9 --size 64MiB
// --shard 8MiB` as a Go benchmark: a seed and nine peers on loopback TCP
// (real libp2p hosts, real stores on disk), every peer pulling the whole
// model. It reports verified shard bytes stored per CPU-second of the
// whole process (MiB/cpu-s, issue #14's data-path figure) and the worst
// peer's download as a multiple of the model (max-dl-x).
func BenchmarkSwarmPull(b *testing.B) {
	for _, c := range []struct{ peers, size, shard int64 }{{9, 64 << 20, 8 << 20}} {
		b.Run(fmt.Sprintf("peers=%d/size=%dMiB/shard=%dMiB", c.peers, c.size>>20, c.shard>>20), func(b *testing.B) {
			benchSwarmPull(b, int(c.peers), c.size, c.shard)
		})
	}
}

func benchSwarmPull(b *testing.B, peers int, size, shard int64) {
	src, id := synthModel(b, size, shard, 1<<20, 14)
	quiet := slog.New(slog.DiscardHandler)
	start := func(s *Store, seed uint64) *Node {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n, err := NewNode(ctx, s, NodeOptions{
			Host:   p2p.Options{Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet},
			Fetch:  FetchOptions{Seed: seed, WaitPeers: time.Minute},
			Logger: quiet,
		})
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	open := func() *Store {
		s, err := Open(b.TempDir(), StoreOptions{Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	var cpu time.Duration
	var verified, worst int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		ss := open()
		if _, err := ss.ImportDir(context.Background(), src); err != nil {
			b.Fatal(err)
		}
		seed := start(ss, 0)
		nodes := make([]*Node, peers)
		for i := range nodes {
			nodes[i] = start(open(), uint64(i+1))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		if *pullProfile != "" {
			f, err := os.Create(*pullProfile)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		cpu0 := cpuNow(b)
		errs := make([]error, peers)
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() { errs[i] = n.Pull(ctx, id, PullOptions{Peers: seed.Addrs()[:1]}) })
		}
		wg.Wait()
		cpu += cpuNow(b) - cpu0
		b.StopTimer()
		if *pullProfile != "" {
			pprof.StopCPUProfile()
		}
		cancel()
		for i, n := range nodes {
			if errs[i] != nil {
				b.Fatalf("peer %d: %v", i, errs[i])
			}
			st, _ := n.Store().Status(id)
			if st.CompleteShards != st.Shards {
				b.Fatalf("peer %d: model incomplete after Pull", i)
			}
			verified += st.Bytes
			if fs := n.Store().Stats().Fetch; testing.Verbose() {
				b.Logf("peer %d: downloaded %.3f× the model; %d requests, %d endgame, %d cancelled, %d requeued",
					i, float64(n.Host().Stats().Downloaded)/float64(st.Bytes), fs.Requests, fs.Endgame, fs.Cancelled, fs.Requeued)
			}
			worst = max(worst, int64(float64(n.Host().Stats().Downloaded)/float64(st.Bytes)*1000))
		}
		for _, n := range append(nodes, seed) {
			n.Close()
			n.Store().Close()
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(verified)/(1<<20)/cpu.Seconds(), "MiB/cpu-s")
	b.ReportMetric(float64(worst)/1000, "max-dl-x")
	b.SetBytes(size * int64(peers))
}
