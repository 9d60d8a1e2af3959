package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/swarm/swarmbench"
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
	uploadSlots           int
	link                  string
	sim                   bool
	latency               time.Duration
	churn, malicious      float64
	kinds                 string
	degree                int
	timeout               time.Duration
	requestTimeout        time.Duration
	seed                  uint64
	json                  bool
	cpuProfile            string
}

func newBenchSwarm() *cobra.Command {
	var o benchSwarmOptions
	cmd := &cobra.Command{
		Use:   "swarm",
		Short: "1 seed + N peers pull a synthetic model over p2p, then over plain HTTP from the seed",
		Long: `1 seed + N peers pull a synthetic model over the swarm, then the same
peers download it from the seed over plain HTTP, and the two are compared.

Where the nodes run:
  (default)          every node in this process on 127.0.0.1, unshaped: the
                     CPU binds, so it measures the data path's cost;
  --sim --link RATE  every node in this process on go-libp2p's mocknet, each
                     node's upload and download capped at RATE, every link
                     --latency long: 100 or 1,000 peers on one machine;
  --link RATE        real processes, each node a 'doppler node' in its own
                     network namespace on one bridge, upload and download
                     capped at RATE with tc tbf (root only).

RATE is written as tc writes it: 40mbit, 500kbit, 5mbps (bytes). --json
prints one line with stable keys (docs/swarm-bench.md). Without -v the
nodes' logs are dropped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var log *slog.Logger
			if v, _ := cmd.Flags().GetBool("verbose"); v {
				log = slog.Default()
			}
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.sizeS, "size", "1GiB", "model size")
	fl.StringVar(&o.shardS, "shard", "64MiB", "shard size")
	fl.StringVar(&o.blockS, "block", "1MiB", "block size (power of two, ≤ 1 MiB)")
	fl.IntVar(&o.peers, "peers", 9, "peers pulling from the seed, honest and malicious")
	fl.StringVar(&o.dir, "dir", "", "work directory (default: a temporary one, removed after)")
	fl.BoolVar(&o.noHTTP, "no-http", false, "skip the HTTP comparison")
	fl.IntVar(&o.perPeer, "per-peer", 0, "fetch requests in flight to one peer (0: swarm default)")
	fl.IntVar(&o.parallel, "parallel", 0, "fetch requests in flight in all (0: swarm default)")
	fl.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to `FILE` (in-process runs: every node; go tool pprof reads it)")
	fl.IntVar(&o.uploadSlots, "upload-slots", 0, "block requests a node answers at once, in-process runs (0: p2p default)")
	fl.StringVar(&o.link, "link", "", "cap every node's upload and download at RATE (e.g. 40mbit); alone: real processes in network namespaces (root)")
	fl.BoolVar(&o.sim, "sim", false, "run every node in this process on a simulated network (needs --link RATE)")
	fl.DurationVar(&o.latency, "latency", 20*time.Millisecond, "one-way latency of every link (--sim)")
	fl.Float64Var(&o.churn, "churn", 0, "fraction of the honest peers killed mid-transfer, each replaced by a fresh one")
	fl.Float64Var(&o.malicious, "malicious", 0, "fraction of the peers that misbehave")
	fl.StringVar(&o.kinds, "malicious-kinds", "", "comma-separated kinds the malicious peers take in turn (default: all: "+kindList()+")")
	fl.IntVar(&o.degree, "degree", 0, "peers each peer dials at start besides the seed (--sim; 0: 4)")
	fl.DurationVar(&o.timeout, "timeout", 10*time.Minute, "bound on the p2p phase and on the HTTP phase, each")
	fl.DurationVar(&o.requestTimeout, "request-timeout", 0, "the fetchers' stall timeout floor (0: swarm default)")
	fl.Uint64Var(&o.seed, "seed", 1, "seed of the choice of malicious and churned peers and the kill times")
	fl.BoolVar(&o.json, "json", false, "print one JSON line of figures on stdout (progress goes to stderr)")
	return cmd
}

func kindList() string {
	var s []string
	for _, k := range swarmbench.EvilKinds {
		s = append(s, string(k))
	}
	return strings.Join(s, ",")
}

// options turns the flags into the harness's options.
func (o *benchSwarmOptions) options() (swarmbench.Options, error) {
	so := swarmbench.Options{Peers: o.peers, Dir: o.dir, NoHTTP: o.noHTTP, PerPeer: o.perPeer, Parallel: o.parallel, UploadSlots: o.uploadSlots,
		Churn: o.churn, Malicious: o.malicious, Degree: o.degree, Timeout: o.timeout, RequestTimeout: o.requestTimeout, Seed: o.seed}
	var err error
	if so.ModelBytes, err = parseSize(o.sizeS); err != nil {
		return so, fmt.Errorf("--size: %w", err)
	}
	if so.ShardBytes, err = parseSize(o.shardS); err != nil {
		return so, fmt.Errorf("--shard: %w", err)
	}
	if so.BlockBytes, err = parseSize(o.blockS); err != nil {
		return so, fmt.Errorf("--block: %w", err)
	}
	if o.link != "" {
		if so.Rate, err = swarmbench.ParseRate(o.link); err != nil {
			return so, fmt.Errorf("--link: %w", err)
		}
	}
	switch {
	case o.sim && o.link == "":
		return so, fmt.Errorf("--sim needs --link RATE (e.g. --sim --link 20mbit)")
	case o.sim:
		so.Mode, so.Latency = swarmbench.ModeSim, o.latency
	case o.link != "":
		so.Mode = swarmbench.ModeLink
		if so.Binary, err = os.Executable(); err != nil {
			return so, err
		}
	default:
		so.Mode = swarmbench.ModeLoopback
	}
	if o.kinds != "" {
		for _, s := range strings.Split(o.kinds, ",") {
			k, err := swarmbench.ParseEvilKind(strings.TrimSpace(s))
			if err != nil {
				return so, fmt.Errorf("--malicious-kinds: %w", err)
			}
			so.Kinds = append(so.Kinds, k)
		}
	}
	return so, nil
}

// run runs the benchmark: progress and a summary on out, or with --json
// progress on errOut and one JSON line on out.
func (o *benchSwarmOptions) run(ctx context.Context, out, errOut io.Writer, log *slog.Logger) error {
	so, err := o.options()
	if err != nil {
		return err
	}
	so.Logger, so.Progress = log, out
	if o.json {
		so.Progress = errOut
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile %s: %w", o.cpuProfile, err)
		}
		defer pprof.StopCPUProfile()
	}
	r, err := swarmbench.Run(ctx, so)
	if err != nil {
		return err
	}
	if o.json {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\n", b)
	}
	if n := len(r.Failed); n > 0 {
		const show = 5 // the JSON line has them all
		more := ""
		if n > show {
			more = fmt.Sprintf("; and %d more", n-show)
		}
		return fmt.Errorf("%d of %d honest pulls failed: %s%s", n, r.HonestPeers, strings.Join(r.Failed[:min(n, show)], "; "), more)
	}
	if r.BadBytesStored > 0 {
		return fmt.Errorf("%d bad bytes stored by honest peers", r.BadBytesStored)
	}
	return nil
}
