package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/quant"
	"github.com/doppler-llm/doppler/swarm"
)

// benchWithSwarm is the bench command with its swarm subcommand.
func benchWithSwarm() *cobra.Command {
	c := newBench()
	c.AddCommand(newBenchSwarm())
	return c
}

// benchSwarmOptions are bench swarm's flags.
type benchSwarmOptions struct {
	sizeS, shardS, blockS string
	peers                 int
	dir                   string
	noHTTP                bool
	perPeer, parallel     int
}

func newBenchSwarm() *cobra.Command {
	var o benchSwarmOptions
	cmd := &cobra.Command{
		Use:   "swarm",
		Short: "1 seed + N peers on loopback pull a synthetic model over p2p, then over plain HTTP from the seed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.sizeS, "size", "1GiB", "model size")
	fl.StringVar(&o.shardS, "shard", "64MiB", "shard size")
	fl.StringVar(&o.blockS, "block", "1MiB", "block size (power of two, ≤ 1 MiB)")
	fl.IntVar(&o.peers, "peers", 9, "peers pulling from the seed")
	fl.StringVar(&o.dir, "dir", "", "work directory (default: a temporary one, removed after)")
	fl.BoolVar(&o.noHTTP, "no-http", false, "skip the HTTP comparison")
	fl.IntVar(&o.perPeer, "per-peer", 0, "fetch requests in flight to one peer (0: swarm default)")
	fl.IntVar(&o.parallel, "parallel", 0, "fetch requests in flight in all (0: swarm default)")
	return cmd
}

// run writes a synthetic model, pulls it to the peers over p2p, then
// over plain HTTP, and reports both.
func (o *benchSwarmOptions) run(ctx context.Context, w io.Writer) error {
	size, err := parseSize(o.sizeS)
	if err != nil {
		return err
	}
	shard, err := parseSize(o.shardS)
	if err != nil {
		return err
	}
	block, err := parseSize(o.blockS)
	if err != nil {
		return err
	}
	if o.peers < 1 || o.peers > 64 {
		return fmt.Errorf("--peers %d: want 1 … 64", o.peers)
	}
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "doppler-bench-swarm-"); err != nil {
			return err
		}
		defer os.RemoveAll(o.dir)
	}
	src := filepath.Join(o.dir, "model")
	t0 := time.Now()
	id, err := synthFlat(src, size, shard, block)
	if err != nil {
		return err
	}
	m, err := rdrr.OpenDir(src)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "model %s: %s in %d shards of %s, %s blocks (written in %v)\n", id.Short(), humanBytes(m.Manifest.TotalSize()),
		len(m.Manifest.Shards), humanBytes(shard), humanBytes(block), time.Since(t0).Round(time.Millisecond))
	p2pTime, err := o.pullP2P(ctx, w, src, id, m.Manifest.TotalSize())
	if err != nil || o.noHTTP {
		return err
	}
	one, err := httpPull(ctx, src, m.Manifest, o.dir, 1)
	if err != nil {
		return err
	}
	cpu0 := cpuTime()
	all, err := httpPull(ctx, src, m.Manifest, o.dir, o.peers)
	if err != nil {
		return err
	}
	httpCPU := cpuTime() - cpu0
	fmt.Fprintf(w, "http: 1 client in %v; %d parallel clients in %v (seed uploaded %d×; cpu %v)\n",
		one.Round(time.Millisecond), o.peers, all.Round(time.Millisecond), o.peers, httpCPU.Round(10*time.Millisecond))
	fmt.Fprintf(w, "p2p / http(%d clients) time: %.2f; p2p / one http download: %.2f\n", o.peers,
		p2pTime.Seconds()/all.Seconds(), p2pTime.Seconds()/one.Seconds())
	return nil
}

// pullP2P starts a seed holding the model in src and o.peers peers that
// know only the seed's address, pulls id to every peer and reports time,
// CPU and upload/download ratios.
func (o *benchSwarmOptions) pullP2P(ctx context.Context, w io.Writer, src string, id rdrr.ModelID, total int64) (time.Duration, error) {
	quiet := slog.New(slog.DiscardHandler)
	opts := func(seed uint64) swarm.NodeOptions {
		return swarm.NodeOptions{Host: p2p.Options{Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet},
			Fetch: swarm.FetchOptions{Seed: seed, WaitPeers: time.Minute, PerPeer: o.perPeer, Parallel: o.parallel}, Logger: quiet}
	}
	start := func(name string, seed uint64) (*swarm.Node, func(), error) {
		s, err := swarm.Open(filepath.Join(o.dir, name), swarm.StoreOptions{Logger: quiet})
		if err != nil {
			return nil, nil, err
		}
		if seed == 0 {
			if _, err := s.ImportDir(ctx, src); err != nil {
				s.Close()
				return nil, nil, err
			}
		}
		n, err := swarm.NewNode(ctx, s, opts(seed))
		if err != nil {
			s.Close()
			return nil, nil, err
		}
		return n, func() { n.Close(); s.Close() }, nil
	}
	seed, stop, err := start("seed", 0)
	if err != nil {
		return 0, err
	}
	defer stop()
	nodes := make([]*swarm.Node, o.peers)
	for i := range nodes {
		var stop func()
		if nodes[i], stop, err = start(fmt.Sprintf("peer%d", i), uint64(i+1)); err != nil {
			return 0, err
		}
		defer stop()
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	t0, cpu0 := time.Now(), cpuTime()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = n.Pull(pctx, id, swarm.PullOptions{Peers: seed.Addrs()[:1]}) })
	}
	wg.Wait()
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	up := float64(seed.Host().Stats().Uploaded) / float64(total)
	fmt.Fprintf(w, "p2p:  %d peers pulled in %v (%s/s per peer); seed uploaded %.2f× the model; cpu %v (%.2f cores)\n", o.peers,
		elapsed.Round(time.Millisecond), humanBytes(int64(float64(total)/elapsed.Seconds())), up,
		cpu.Round(10*time.Millisecond), cpu.Seconds()/elapsed.Seconds())
	for i, n := range nodes {
		st := n.Host().Stats()
		fmt.Fprintf(w, "      peer %d: uploaded %.2f×, downloaded %.2f×\n", i, float64(st.Uploaded)/float64(total), float64(st.Downloaded)/float64(total))
	}
	return elapsed, nil
}

// synthFlat writes an RDRR directory of about size bytes of random F32.
func synthFlat(dir string, size, shard, block int64) (rdrr.ModelID, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return rdrr.ModelID{}, err
	}
	w, err := rdrr.NewWriter(dir, rdrr.WriterOptions{ShardSize: shard, BlockSize: block})
	if err != nil {
		return rdrr.ModelID{}, err
	}
	rng := rand.NewChaCha8([32]byte{'d', 'o', 'p'})
	const cols = 4096
	tensor := min(size, 48<<20)
	for i := 0; int64(i)*tensor < size; i++ {
		rows := min(tensor, size-int64(i)*tensor) / (cols * 4)
		if rows == 0 {
			break
		}
		if err := w.AddTensor(fmt.Sprintf("blk.%d.ffn_up.weight", i), quant.F32, []int64{rows, cols}, io.LimitReader(rng, rows*cols*4)); err != nil {
			return rdrr.ModelID{}, err
		}
	}
	cfg := rdrr.Config{Architecture: "llama", ContextLength: 128, HiddenSize: 64, Layers: 1, Heads: 1, KVHeads: 1, HeadDim: 64,
		FFN: 128, VocabSize: 32, NormEps: 1e-5, Activation: "silu", Rope: rdrr.RoPE{Theta: 10000, Dim: 64, Style: "normal"}}
	return w.Finish(&rdrr.Manifest{Name: "bench-swarm", Config: cfg})
}

// httpPull serves src from 127.0.0.1 and has n clients download every
// shard file in parallel (each to disk, hashed), returning the time until
// the last finished.
func httpPull(ctx context.Context, src string, m *rdrr.Manifest, dir string, n int) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(src)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String() + "/"
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := filepath.Join(dir, fmt.Sprintf("http%d", c))
			defer os.RemoveAll(out)
			if err := os.MkdirAll(out, 0o755); err != nil {
				errs[c] = err
				return
			}
			for _, sh := range m.Shards {
				if err := httpGet(ctx, base+sh.Hash.String(), filepath.Join(out, sh.Hash.String()), sh.Hash); err != nil {
					errs[c] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(t0), errors.Join(errs...)
}

func httpGet(ctx context.Context, url, path string, want rdrr.Hash) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), resp.Body); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.String() {
		return fmt.Errorf("GET %s: content hashes to %s", url, got[:12])
	}
	return f.Close()
}
