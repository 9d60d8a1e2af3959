package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// storeFlagHelp explains --store.
const storeFlagHelp = "shard store directory (default $DOPPLER_STORE, else the user cache dir's doppler/store)"

// defaultStore is $DOPPLER_STORE, else <user cache dir>/doppler/store.
func defaultStore() (string, error) {
	if d := os.Getenv("DOPPLER_STORE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no store directory (pass --store or set DOPPLER_STORE): %w", err)
	}
	return filepath.Join(d, "doppler", "store"), nil
}

// openStore opens --store (or the default).
func openStore(flag string) (*swarm.Store, error) {
	dir := flag
	if dir == "" {
		var err error
		if dir, err = defaultStore(); err != nil {
			return nil, err
		}
	}
	s, err := swarm.Open(dir, swarm.StoreOptions{Logger: slog.Default()})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	return s, nil
}

// netFlags are the network flags of seed, pull and node.
type netFlags struct {
	store      string
	listen     []string
	bootstrap  []string
	key        string
	mdns, nat  bool
	wait       time.Duration // fetches give up after this long with no progress (pull's --wait)
	ephemeral  bool          // no --key: a fresh key (run, which may share a store with a node)
	gatekeeper bool          // aggregate expert usage and publish clusters (seed, node)
	superSeed  bool          // send each block to one peer at a time (seed, node)
	metrics    *swarmMetrics // node --http: count what the host serves (/metrics)
	ca         []string      // pull --ca: PEM certificates the seeds' TLS may chain to
}

func (f *netFlags) register(cmd *cobra.Command, bootstrap bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.store, "store", "", storeFlagHelp)
	fl.StringArrayVar(&f.listen, "listen", nil, "multiaddr to listen on, repeatable (default /ip4/127.0.0.1/tcp/0 and /ip4/127.0.0.1/udp/0/quic-v1)")
	if bootstrap {
		fl.StringArrayVar(&f.bootstrap, "bootstrap", nil, "peer to join through, a full multiaddr with /p2p/<peer-id>; repeatable")
	}
	fl.StringVar(&f.key, "key", "", "node key file (default <store>/node.key, created with mode 0600)")
	fl.BoolVar(&f.mdns, "mdns", false, "discover peers on the local network (mDNS)")
	fl.BoolVar(&f.nat, "nat", false, "enable AutoNAT, relays, hole punching and UPnP")
}

// registerGatekeeper adds --gatekeeper (seed and node).
func (f *netFlags) registerGatekeeper(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.gatekeeper, "gatekeeper", false,
		"act as a gatekeeper: aggregate the expert usage peers gossip for the models this node follows and publish expert clusters (read-ahead hints)")
}

// registerSuperSeed adds --super-seed (seed: on by default, node: off).
func (f *netFlags) registerSuperSeed(cmd *cobra.Command, def bool) {
	cmd.Flags().BoolVar(&f.superSeed, "super-seed", def,
		"send each block to one peer, not again to another until the first has had time to share it on (BitTorrent's initial seeding): the seed's upload goes to blocks the swarm lacks")
}

// checkListen rejects malformed listen multiaddrs with a one-line error.
func checkListen(addrs []string) error {
	for _, a := range addrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return fmt.Errorf("bad multiaddr %q for --listen: %v", a, err)
		}
	}
	return nil
}

// checkPeers rejects peer addresses that are not full multiaddrs with /p2p/<id>.
func checkPeers(flag string, addrs []string) error {
	for _, a := range addrs {
		if _, err := peer.AddrInfoFromString(a); err != nil {
			return fmt.Errorf("bad multiaddr %q for %s (want e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo…): %v", a, flag, err)
		}
	}
	return nil
}

// startNode puts store on the network.
func (f *netFlags) startNode(ctx context.Context, store *swarm.Store) (*swarm.Node, error) {
	if err := checkListen(f.listen); err != nil {
		return nil, err
	}
	if err := checkPeers("--bootstrap", f.bootstrap); err != nil {
		return nil, err
	}
	key := f.key
	if key == "" && !f.ephemeral {
		key = filepath.Join(store.Dir(), "node.key")
	}
	o := swarm.NodeOptions{
		Host: p2p.Options{Listen: f.listen, KeyFile: key, Bootstrap: f.bootstrap, MDNS: f.mdns, NAT: f.nat,
			Logger: slog.Default()},
		Fetch:   swarm.FetchOptions{WaitPeers: f.wait},
		Experts: swarm.ExpertOptions{Gatekeeper: f.gatekeeper},
		Logger:  slog.Default(),
	}
	if f.superSeed {
		o.Host.SuperSeed = p2p.SeedSpread
	}
	if f.metrics != nil {
		o.WrapProvider = f.metrics.libp2pProvider
	}
	n, err := swarm.NewNode(ctx, store, o)
	if err == nil && f.metrics != nil {
		f.metrics.setNode(n)
	}
	return n, err
}

// printReady prints the contract lines scripts read: one "listening
// <multiaddr>/p2p/<id>" per address, then one "listening <url>" per URL
// (node --http), and one "serving <model-id>" per model.
func printReady(w io.Writer, n *swarm.Node, models []rdrr.ModelID, urls ...string) {
	for _, a := range n.Addrs() {
		fmt.Fprintf(w, "listening %s\n", a)
	}
	for _, u := range urls {
		fmt.Fprintf(w, "listening %s\n", u)
	}
	for _, id := range models {
		fmt.Fprintf(w, "serving %s\n", id)
	}
	if f, ok := w.(*os.File); ok {
		f.Sync()
	}
}

// completeModels lists the models held complete, first ones first.
func completeModels(s *swarm.Store, first ...rdrr.ModelID) []rdrr.ModelID {
	out := append([]rdrr.ModelID(nil), first...)
	for _, id := range s.Models() {
		st, _ := s.Status(id)
		if st.CompleteShards == st.Shards && !contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func contains(ids []rdrr.ModelID, id rdrr.ModelID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// parseModelID parses a full model ID, or a unique prefix (8+ hex digits)
// of a model in the store (s may be nil).
func parseModelID(s *swarm.Store, arg string) (rdrr.ModelID, error) {
	if id, err := rdrr.ParseHash(arg); err == nil {
		return id, nil
	}
	if s != nil && len(arg) >= 8 && isHex(arg) {
		var found []rdrr.ModelID
		for _, id := range s.Models() {
			if strings.HasPrefix(id.String(), strings.ToLower(arg)) {
				found = append(found, id)
			}
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
			return rdrr.ModelID{}, fmt.Errorf("unknown model id %s (not in store %s)", arg, s.Dir())
		default:
			return rdrr.ModelID{}, fmt.Errorf("model id prefix %s is ambiguous: %d models in the store", arg, len(found))
		}
	}
	if s != nil {
		if id, ok := modelByName(s, arg); ok {
			return id, nil
		}
		if !isHex(arg) {
			return rdrr.ModelID{}, fmt.Errorf("bad model id %q: not a file, 64 hex digits, a unique ID prefix or the name of a model in store %s (doppler list)", arg, s.Dir())
		}
	}
	return rdrr.ModelID{}, fmt.Errorf("bad model id %q (want 64 hex digits, a unique prefix, or the name of a model in the store)", arg)
}

// modelByName finds the model of the store named name (info.json's name;
// the first one, by ID, when several share it).
func modelByName(s *swarm.Store, name string) (rdrr.ModelID, bool) {
	for _, id := range s.Models() {
		if st, ok := s.Status(id); ok && st.Name == name {
			return id, true
		}
	}
	return rdrr.ModelID{}, false
}

func isHex(s string) bool {
	for _, c := range strings.ToLower(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}

// looksLikeModelID: not a path on disk, and hex.
func looksLikeModelID(arg string) bool {
	if _, err := os.Stat(arg); err == nil {
		return false
	}
	return len(arg) >= 8 && isHex(arg)
}

// oneLine flattens a multi-line error (libp2p dial errors list every
// address tried) into one line.
func oneLine(err error) error {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ; ")), " ")
	if msg == err.Error() {
		return err
	}
	return fmt.Errorf("%s%w", msg, errSilent{err})
}

// errSilent wraps an error for errors.Is without adding to the message.
type errSilent struct{ err error }

func (e errSilent) Error() string { return "" }
func (e errSilent) Unwrap() error { return e.err }

// serveUntilDone waits for Ctrl-C, then closes the node.
func serveUntilDone(ctx context.Context, n *swarm.Node) error {
	<-ctx.Done()
	slog.Info("shutting down")
	return n.Close()
}

func newSeed() *cobra.Command {
	var (
		nf netFlags
		pf prefillFlags
	)
	cmd := &cobra.Command{
		Use:   "seed DIR|GGUF|HF-DIR|MODEL_ID",
		Short: "Import a model into the store (converting it if needed), announce it and serve it until Ctrl-C",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := checkListen(nf.listen); err != nil {
				return err
			}
			store, err := openStore(nf.store)
			if err != nil {
				return err
			}
			defer store.Close()
			id, err := importModel(ctx, store, args[0])
			if err != nil {
				return err
			}
			n, err := nf.startNode(ctx, store)
			if err != nil {
				return err
			}
			stop, err := pf.start(n, completeModels(store, id))
			if err != nil {
				n.Close()
				return err
			}
			defer stop()
			printReady(cmd.OutOrStdout(), n, completeModels(store, id))
			return serveUntilDone(ctx, n)
		},
	}
	nf.register(cmd, true)
	nf.registerGatekeeper(cmd)
	nf.registerSuperSeed(cmd, true)
	pf.register(cmd)
	return cmd
}

func newNodeCmd() *cobra.Command {
	var (
		nf    netFlags
		pf    prefillFlags
		hf    httpFlags
		pulls []string
		stats string
		evil  string
		esrc  string
	)
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Join the swarm (through --bootstrap peers) and serve the store until Ctrl-C; with --http also to browsers (seed, signaling, WebRTC)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if evil != "" {
				if len(pulls) != 1 {
					return errors.New("--evil needs one --pull MODEL_ID")
				}
				return runEvilNode(ctx, cmd.OutOrStdout(), evil, esrc, pulls[0], nf.listen, nf.bootstrap)
			}
			if err := hf.check(); err != nil {
				return err
			}
			store, err := openStore(nf.store)
			if err != nil {
				return err
			}
			defer store.Close()
			ids := make([]rdrr.ModelID, 0, len(pulls))
			for _, a := range pulls {
				id, err := parseModelID(store, a)
				if err != nil {
					return fmt.Errorf("--pull: %w", err)
				}
				ids = append(ids, id)
			}
			if len(ids) > 0 && len(nf.bootstrap) == 0 && !nf.mdns {
				return errors.New("--pull needs peers to pull from: pass --bootstrap (or --mdns)")
			}
			if hf.addr != "" || stats != "" {
				nf.metrics = newSwarmMetrics(store)
			}
			n, err := nf.startNode(ctx, store)
			if err != nil {
				return err
			}
			if len(nf.bootstrap) > 0 && len(n.Host().Peers()) == 0 {
				n.Close()
				return errors.New("no bootstrap peer reachable")
			}
			np := newNodePulls(cmd.OutOrStdout(), n, nf.metrics, stats)
			defer np.finish()
			stop, err := pf.start(n, completeModels(store))
			if err != nil {
				n.Close()
				return err
			}
			defer stop()
			models := completeModels(store)
			if hf.addr == "" {
				printReady(cmd.OutOrStdout(), n, models)
				np.start(ctx, ids)
				return serveUntilDone(ctx, n)
			}
			nf.metrics.setPrefill(pf.srv)
			site, err := startSite(ctx, hf, store, models, true, nf.metrics)
			if err != nil {
				n.Close()
				return err
			}
			printReady(cmd.OutOrStdout(), n, models, site.URLs()...)
			np.start(ctx, ids)
			werr := site.Run(ctx)
			slog.Info("shutting down")
			return errors.Join(werr, n.Close())
		},
	}
	nf.register(cmd, true)
	nf.registerGatekeeper(cmd)
	nf.registerSuperSeed(cmd, false)
	pf.register(cmd)
	hf.register(cmd, "", "also serve browsers over HTTP on this address (port 0 picks a free one): the page at /d, the seed, signaling at /signal, WebRTC answered for every model held complete")
	fl := cmd.Flags()
	fl.StringArrayVar(&pulls, "pull", nil, "fetch this model (an ID) from the swarm while serving, and keep re-sharing it; prints \"pulled <id> ...\" when it is complete, retries (with a backoff) while no peer holds a missing shard; repeatable")
	fl.StringVar(&stats, "stats", "", "write the node's transfer figures (JSON: pulls, bytes served, what it measured of each peer) to this file on each pull's end and on exit")
	fl.MarkHidden("stats")
	fl.StringVar(&evil, "evil", "", "run a malicious peer of the --pull model instead, of this kind (the swarm bench's link mode)")
	fl.StringVar(&esrc, "evil-src", "", "with --evil: the model's RDRR directory")
	fl.MarkHidden("evil")
	fl.MarkHidden("evil-src")
	return cmd
}

func newPull() *cobra.Command {
	var (
		nf     netFlags
		peers  []string
		seeds  []string
		out    string
		wait   time.Duration
		linger time.Duration
	)
	cmd := &cobra.Command{
		Use:   "pull MODEL_ID|LINK",
		Short: "Fetch a model from HTTP seeds and peers (or a doppler share link's) into the store, verifying every block; -o writes an RDRR directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			src, err := parseSources(args[0], seeds, peers)
			if err != nil {
				return err
			}
			if err := checkPeers("--peer", src.peers); err != nil {
				return err
			}
			clients, err := src.clients(nf.ca)
			if err != nil {
				return err
			}
			if wait <= 0 {
				return fmt.Errorf("--wait %v: must be > 0", wait)
			}
			if len(src.peers) == 0 && len(clients) == 0 && len(nf.bootstrap) == 0 && !nf.mdns {
				return errors.New("no peers: pass --seed URL or --peer MULTIADDR (or --bootstrap, --mdns)")
			}
			store, err := openStore(nf.store)
			if err != nil {
				return err
			}
			defer store.Close()
			id, err := src.model(store)
			if err != nil {
				return err
			}
			if out != "" {
				if ents, err := os.ReadDir(out); err == nil && len(ents) > 0 {
					return fmt.Errorf("-o %s: exists and is not empty", out)
				}
			}
			nf.wait = wait
			n, err := nf.startNode(ctx, store)
			if err != nil {
				return err
			}
			defer n.Close()
			progress, finish := pullProgress(id)
			pctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			if len(nf.bootstrap) == 0 && !nf.mdns { // the sources are all there is
				var w *badSources
				clients, w = watchSources(store, id, clients, src.peers)
				watched := make(chan struct{})
				go func() { defer close(watched); w.run(pctx, cancel) }()
				defer func() { cancel(nil); <-watched }()
			}
			err = n.Pull(pctx, id, swarm.PullOptions{Peers: src.peers, Sources: clients, Progress: progress})
			finish()
			if cause := context.Cause(pctx); errors.Is(cause, errAllBad) {
				return cause
			}
			if err != nil {
				if errors.Is(err, swarm.ErrNoPeers) {
					return fmt.Errorf("model %s: no peers reachable with the missing shards within %v%s", id.Short(), wait, blame(store, id))
				}
				return tlsHint(oneLine(err))
			}
			st, _ := store.Status(id)
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "pulled %s %s: %d shards, %s verified\n", id, st.Name, st.Shards, humanBytes(st.Bytes))
			if out != "" {
				if err := store.Export(ctx, id, out); err != nil {
					return fmt.Errorf("-o %s: %w", out, err)
				}
				fmt.Fprintf(w, "wrote %s\n", out)
			}
			// Keep serving the peers still fetching what this node holds.
			n.Linger(ctx, id, swarm.LingerOptions{Max: linger})
			return nil
		},
	}
	nf.register(cmd, true)
	fl := cmd.Flags()
	fl.StringArrayVar(&peers, "peer", nil, "peer to fetch from, a full multiaddr with /p2p/<peer-id>; repeatable")
	fl.StringArrayVar(&seeds, "seed", nil, "HTTP seed to fetch from: the http(s) URL of a doppler serve or node --http; repeatable")
	fl.StringArrayVar(&nf.ca, "ca", nil, "trust the TLS certificates in this PEM file besides the system's (a self-signed https --seed: the serve's --tls-cert); repeatable")
	fl.StringVarP(&out, "output", "o", "", "also write the model as an RDRR directory here (atomically)")
	fl.DurationVar(&wait, "wait", 30*time.Second, "give up when no reachable peer or seed has held a missing shard for this long (slow or busy sources are waited for; --peer addresses that do not answer are dialled again until then)")
	fl.DurationVar(&linger, "linger", 5*time.Second, "after the pull, keep serving while connected peers still fetch shards this node holds, for at most this long (0: exit at once)")
	return cmd
}

// pullProgress is a bar with bytes, rate and peers on a terminal, and
// nothing otherwise.
func pullProgress(id rdrr.ModelID) (func(done, total int64, peers int), func()) {
	var bar interface {
		Set64(int64) error
		Describe(string)
		Finish() error
	}
	started := false
	update := func(done, total int64, peers int) {
		if !started {
			started = true
			if b := newProgress("pulling "+id.Short(), total); b != nil {
				bar = b
			}
		}
		if bar != nil {
			bar.Describe(fmt.Sprintf("pulling %s from %d peers", id.Short(), peers))
			bar.Set64(done)
		}
	}
	return update, func() {
		if bar != nil {
			bar.Finish()
		}
	}
}

func newList() *cobra.Command {
	var storeFlag string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the models in the store: id, name, shards held, bytes held of the model's; and the bytes the store uses on disk",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := openStore(storeFlag)
			if err != nil {
				return err
			}
			defer store.Close()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL ID\tNAME\tSHARDS\tBYTES")
			ids := store.Models()
			for _, id := range ids {
				st, _ := store.Status(id)
				fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s / %s\n", id, st.Name, st.CompleteShards, st.Shards, humanBytes(st.HaveBytes), humanBytes(st.Bytes))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// Models may share shards; the store holds each once.
			fmt.Fprintf(cmd.OutOrStdout(), "total: %d models, %s on disk in %s\n", len(ids), humanBytes(store.Used()), store.Dir())
			return nil
		},
	}
	cmd.Flags().StringVar(&storeFlag, "store", "", storeFlagHelp)
	return cmd
}

func newRm() *cobra.Command {
	var storeFlag string
	cmd := &cobra.Command{
		Use:   "rm MODEL_ID",
		Short: "Remove a model and the shards no other model uses from the store",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := openStore(storeFlag)
			if err != nil {
				return err
			}
			defer store.Close()
			id, err := parseModelID(store, args[0])
			if err != nil {
				return err
			}
			if _, ok := store.Status(id); !ok {
				return fmt.Errorf("unknown model id %s (not in store %s)", id, store.Dir())
			}
			if err := store.Remove(id); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", id)
			return nil
		},
	}
	cmd.Flags().StringVar(&storeFlag, "store", "", storeFlagHelp)
	return cmd
}

// openStoreModel opens -m MODEL_ID from --store for run: the model must be
// complete in the store. It returns the model and a func that closes the store.
func openStoreModel(storeFlag, arg string) (*rdrr.Model, func(), error) {
	store, err := openStore(storeFlag)
	if err != nil {
		return nil, nil, err
	}
	id, err := parseModelID(store, arg)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	st, ok := store.Status(id)
	if !ok {
		store.Close()
		return nil, nil, fmt.Errorf("unknown model id %s (not in store %s; doppler pull it first)", id, store.Dir())
	}
	if st.CompleteShards < st.Shards {
		store.Close()
		return nil, nil, fmt.Errorf("model %s: the store holds %d of %d shards; run doppler pull first", id.Short(), st.CompleteShards, st.Shards)
	}
	m, err := store.OpenModel(id)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return m, func() { store.Close() }, nil
}

// runSwarm are doppler run's swarm flags: with --peer, --bootstrap or
// --mdns, run joins the swarm and -m MODEL_ID may name a model whose
// shards the store lacks (they are fetched from peers, verified).
type runSwarm struct {
	peers, bootstrap, listen []string
	key                      string
	mdns                     bool

	offload      string // auto, force, off; "" = auto when joined, else off
	offloadPeers string // comma-separated peer IDs
	offloadAny   bool
}

func (f *runSwarm) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVar(&f.peers, "peer", nil, "with -m MODEL_ID: join the swarm through this peer (a full multiaddr with /p2p/<peer-id>); repeatable")
	fl.StringArrayVar(&f.bootstrap, "bootstrap", nil, "with -m MODEL_ID: join the swarm through this bootstrap peer; repeatable")
	fl.StringArrayVar(&f.listen, "listen", nil, "with --peer/--bootstrap: multiaddr to listen on (default loopback only)")
	fl.StringVar(&f.key, "key", "", "with --peer/--bootstrap: node key file (default: a fresh key per run)")
	fl.BoolVar(&f.mdns, "mdns", false, "with -m MODEL_ID: discover peers on the local network (mDNS)")
	fl.StringVar(&f.offload, "offload", "", "prefill offload: auto (when a peer's estimate beats local prefill), force, or off; default auto when joined to the swarm, else off")
	fl.StringVar(&f.offloadPeers, "offload-peers", "", "peer IDs (comma-separated) a prefill may be offloaded to")
	fl.BoolVar(&f.offloadAny, "offload-any", false, "allow offloading a prefill to any peer that advertises the model and a prefill speed")
}

// offloadPolicy returns the prefill offload policy of the flags.
func (f *runSwarm) offloadPolicy() (swarm.OffloadPolicy, error) {
	mode, err := swarm.ParseOffloadMode(f.offload)
	if err != nil {
		return swarm.OffloadPolicy{}, fmt.Errorf("--offload: %w", err)
	}
	if f.offload == "" && f.joined() {
		mode = swarm.OffloadAuto
	}
	if mode != swarm.OffloadOff && !f.joined() {
		return swarm.OffloadPolicy{}, errors.New("--offload needs the swarm: pass --peer, --bootstrap or --mdns (with -m MODEL_ID)")
	}
	return swarm.OffloadPolicy{Mode: mode, Peers: swarm.ParsePeerList(f.offloadPeers), Any: f.offloadAny}, nil
}

// joined reports whether run was asked to join the swarm.
func (f *runSwarm) joined() bool { return len(f.peers) > 0 || len(f.bootstrap) > 0 || f.mdns }

// open starts a node over the store, joins the swarm and opens model arg
// through the node: its manifest from a peer when the store lacks it, its
// shards from the store or, when missing, from peers. done closes the node
// and the store.
func (f *runSwarm) open(ctx context.Context, storeFlag, arg string) (*rdrr.Model, *swarm.Node, func(), error) {
	if err := checkPeers("--peer", f.peers); err != nil {
		return nil, nil, nil, err
	}
	store, err := openStore(storeFlag)
	if err != nil {
		return nil, nil, nil, err
	}
	id, err := parseModelID(store, arg)
	if err != nil {
		store.Close()
		return nil, nil, nil, err
	}
	nf := netFlags{listen: f.listen, bootstrap: f.bootstrap, key: f.key, mdns: f.mdns, ephemeral: true}
	node, err := nf.startNode(ctx, store)
	if err != nil {
		store.Close()
		return nil, nil, nil, oneLine(err)
	}
	done := func() {
		node.Close()
		store.Close()
	}
	if len(f.peers) > 0 {
		ok, errs := node.Connect(ctx, f.peers)
		if len(ok) == 0 {
			done()
			return nil, nil, nil, oneLine(fmt.Errorf("no peer reachable: %w", errors.Join(errs...)))
		}
		for _, e := range errs {
			slog.Warn("peer unreachable", "err", e)
		}
	}
	rm, err := node.OpenModel(ctx, id)
	if err != nil {
		done()
		return nil, nil, nil, oneLine(err)
	}
	return rm, node, done, nil
}

// prefillFlags are seed's and node's prefill-offload service flags.
type prefillFlags struct {
	on      bool
	adapter string
	ctxLen  int
	srv     *swarm.PrefillServer // once started
}

func (f *prefillFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.on, "prefill", false, "serve prefill offload (/doppler/prefill/1) on this node's GPU for models held complete; the measured speed is announced")
	fl.StringVar(&f.adapter, "prefill-adapter", "", "with --prefill: GPU adapter to use (a substring of its name)")
	fl.IntVar(&f.ctxLen, "prefill-ctx", 0, "with --prefill: KV cache length of the service (default min(model's, 4096); longer prompts reload up to the model's)")
}

// start opens the GPU (through the engine wiring) and starts the prefill
// service, warming up (and so measuring and announcing) the given models
// in the background.
func (f *prefillFlags) start(n *swarm.Node, warm []rdrr.ModelID) (stop func(), err error) {
	if !f.on {
		return func() {}, nil
	}
	load, closeGPU, err := prefillLoader(f.adapter)
	if err != nil {
		return nil, fmt.Errorf("--prefill: %w", err)
	}
	p, err := n.ServePrefill(swarm.PrefillOptions{Load: load, Context: f.ctxLen, Warmup: warm, Logger: slog.Default()})
	if err != nil {
		closeGPU()
		return nil, err
	}
	f.srv = p
	return func() {
		p.Close()
		closeGPU()
	}, nil
}
