package p2p

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/p2p/wire"
)

// Protocol IDs.
const (
	ManifestProtocol = "/doppler/manifest/1"
	ShardProtocol    = "/doppler/shard/1"
	DHTPrefix        = "/doppler"
	// InventoryTopicPrefix + model ID (lower-case hex) is a model's gossip topic.
	InventoryTopicPrefix = "/doppler/inv/"
)

// DefaultListen is used when Options.Listen is empty: loopback only.
var DefaultListen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

// Provider is what the host serves (the swarm's store implements it).
type Provider = shardproto.Provider

// SeedSpread is the super-seed window doppler seed uses (Options.SuperSeed).
const SeedSpread = 2 * time.Second

// Options configures a Host. Zero values take the documented defaults.
type Options struct {
	// Listen multiaddrs; default DefaultListen. When every address is a
	// loopback one, the host also dials and advertises loopback only.
	Listen []string
	// KeyFile holds the node's ed25519 libp2p key (protobuf, as libp2p's
	// crypto.MarshalPrivateKey writes), created with mode 0600 when missing.
	// Empty: an ephemeral key.
	KeyFile string
	// Bootstrap multiaddrs (with /p2p/<id>) dialled at start; no others.
	Bootstrap []string
	// MDNS turns on local-network discovery.
	MDNS bool
	// NAT turns on AutoNAT, relays, hole punching and UPnP port mapping.
	NAT    bool
	Logger *slog.Logger

	// Limits; defaults in parentheses.
	MaxConns   int   // connection manager high water mark (192); low is 3/4 of it
	MaxMemory  int64 // resource manager memory (1 GiB)
	MaxFDs     int   // resource manager file descriptors (512)
	MaxServing int   // concurrent inbound streams served (64); more get CodeBusy
	// UploadSlots is how many block requests are answered at once (4);
	// more are answered CodeBusy at once, so that their senders ask
	// another holder instead of queueing here: a node's upload is split
	// among few requests, each block leaves it soon and can be shared on,
	// and requests spread over the holders that have upload to spare
	// (BitTorrent's unchoke slots, without the tit-for-tat).
	UploadSlots int
	// SuperSeed, when set, makes the host a super-seed (BitTorrent's
	// initial seeding): a block it sent to one peer is not sent to another
	// for SuperSeed plus as long as the send took (nor while it is being
	// sent), a wait that doubles with each send of the block (up to 16×);
	// such a request is answered CodeBusy and its sender finds the block
	// at the first receiver. For a node that seeds a new model to a
	// swarm (doppler seed sets it), not for peers sharing what they
	// fetched.
	SuperSeed           time.Duration
	MaxBlocksPerRequest int           // largest BlocksRequest.Count served (1024)
	RequestTimeout      time.Duration // server: time to read a request (10 s)
	FrameTimeout        time.Duration // both sides: time to write or read one frame (30 s)
	DialTimeout         time.Duration // per dial (10 s)

	// ServeUnverified, for tests only, serves blocks exactly as the Provider
	// returns them, skipping the hash check before sending, so a Provider
	// wrapper that flips or truncates bytes makes a lying peer.
	ServeUnverified bool

	// Gossip.
	AnnounceInterval time.Duration // re-announcement period (30 s)
	AnnounceJitter   time.Duration // ± uniform jitter on each period (AnnounceInterval/5)
	// GossipBudget is the inventory announcements per minute a model's
	// topic may carry in all: each host publishes at most its share,
	// GossipBudget / the peers announcing there, so what each peer
	// receives stays bounded as the swarm grows (600).
	GossipBudget int
	// Now is the clock for inventory expiry (time.Now).
	Now func() time.Time

	// Libp2p, when set, is the libp2p host to run on instead of one the
	// Host starts (go-libp2p's mocknet in simulations): Listen, KeyFile,
	// NAT and the connection limits are then its own. Close closes it.
	Libp2p host.Host
	// NoDHT runs without the DHT: Provide and FindProviders do nothing,
	// and only peers with known addresses are reached (a swarm of
	// thousands in one process, where every peer joins through a few).
	NoDHT bool
}

func (o *Options) fill() {
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	if len(o.Listen) == 0 {
		o.Listen = DefaultListen
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 192
	}
	if o.MaxMemory <= 0 {
		o.MaxMemory = 1 << 30
	}
	if o.MaxFDs <= 0 {
		o.MaxFDs = 512
	}
	if o.MaxServing <= 0 {
		o.MaxServing = 64
	}
	if o.UploadSlots <= 0 {
		o.UploadSlots = 4
	}
	if o.MaxBlocksPerRequest <= 0 {
		o.MaxBlocksPerRequest = 1024
	}
	def(&o.RequestTimeout, 10*time.Second)
	def(&o.FrameTimeout, 30*time.Second)
	def(&o.DialTimeout, 10*time.Second)
	def(&o.AnnounceInterval, 30*time.Second)
	if o.GossipBudget <= 0 {
		o.GossipBudget = 600
	}
	if o.AnnounceJitter < 0 {
		o.AnnounceJitter = 0
	} else if o.AnnounceJitter == 0 {
		o.AnnounceJitter = o.AnnounceInterval / 5
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Host is a DOPPLER node on the network: a libp2p host with the DHT,
// gossipsub and the stream protocols. It is safe for concurrent use.
type Host struct {
	opts     Options
	log      *slog.Logger
	h        host.Host
	dht      *dht.IpfsDHT
	ps       *pubsub.PubSub
	prov     Provider
	loopback bool

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines
	sem    chan struct{}  // serving slots
	upload chan struct{}  // upload slots (Options.UploadSlots)
	spread spread         // blocks sent, as a super-seed (Options.SuperSeed)

	stats   stats
	serving servingState // block requests served per peer (server.go)
	bufs    bufPool
	direct  direct   // direct inventory exchange (direct.go)
	watch   watchers // inventory watches served (watch.go)
	gossip
	closeOnce sync.Once
}

// New starts a host listening on opts.Listen and serving prov (nil serves
// nothing). ctx bounds the start only (bootstrap dials); the host lives
// until Close.
func New(ctx context.Context, opts Options, prov Provider) (*Host, error) {
	opts.fill()
	if opts.Libp2p != nil {
		return start(ctx, opts, prov, opts.Libp2p, false)
	}
	key, err := loadKey(opts.KeyFile)
	if err != nil {
		return nil, err
	}
	listen := make([]ma.Multiaddr, 0, len(opts.Listen))
	loopback := true
	for _, s := range opts.Listen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %w", s, err)
		}
		listen = append(listen, a)
		loopback = loopback && manet.IsIPLoopback(a)
	}
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	// The resource manager's own Prometheus reporter is on unless told
	// otherwise (libp2p.DisableMetrics does not reach a manager built
	// here): it formats a timestamp for every stream opened and closed,
	// 1% of a pulling node's CPU, for metrics nothing registers.
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.Scale(opts.MaxMemory, opts.MaxFDs)),
		rcmgr.WithMetricsDisabled())
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(opts.MaxConns*3/4, opts.MaxConns, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("connection manager: %w", err)
	}
	lopts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrs(listen...),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.DisableMetrics(),
		libp2p.WithDialTimeout(opts.DialTimeout),
		libp2p.UserAgent("doppler"),
		libp2p.Muxer(yamux.ID, muxer()),
	}
	if loopback {
		lopts = append(lopts,
			libp2p.AddrsFactory(func(as []ma.Multiaddr) []ma.Multiaddr { return filterLoopback(as) }),
			libp2p.ConnectionGater(loopbackGater{}))
	}
	if opts.NAT {
		lopts = append(lopts, libp2p.NATPortMap(), libp2p.EnableNATService(), libp2p.EnableHolePunching(),
			libp2p.EnableAutoNATv2(), libp2p.EnableRelay())
	} else {
		lopts = append(lopts, libp2p.DisableRelay(), libp2p.ForceReachabilityPrivate())
	}
	h, err := libp2p.New(lopts...)
	if err != nil {
		cm.Close()
		rm.Close()
		return nil, fmt.Errorf("libp2p: %w", err)
	}
	return start(ctx, opts, prov, h, loopback)
}

// start runs the Host's services on h.
func start(ctx context.Context, opts Options, prov Provider, h host.Host, loopback bool) (*Host, error) {
	var err error
	hctx, cancel := context.WithCancel(context.Background())
	n := &Host{opts: opts, log: opts.Logger.With("peer", h.ID().ShortString()), h: h, prov: prov,
		loopback: loopback, ctx: hctx, cancel: cancel, sem: make(chan struct{}, opts.MaxServing),
		upload: make(chan struct{}, opts.UploadSlots), spread: spread{window: opts.SuperSeed}}
	n.bufs = newBufPool(maxIdleBufs)
	n.stats.init()
	n.gossip.init(n.opts.Now)
	dopts := []dht.Option{dht.Mode(dht.ModeServer), dht.ProtocolPrefix(DHTPrefix)}
	if loopback {
		dopts = append(dopts, dht.AddressFilter(filterLoopback))
	}
	if !opts.NoDHT {
		if n.dht, err = dht.New(h, dopts...); err != nil {
			n.Close()
			return nil, fmt.Errorf("dht: %w", err)
		}
	}
	if n.ps, err = pubsub.NewGossipSub(hctx, h, pubsub.WithMaxMessageSize(1<<20),
		pubsub.WithRawTracer(&n.gossip.tr), pubsub.WithAppSpecificRpcInspector(n.gossip.inspect),
		pubsub.WithFloodPublish(false), pubsub.WithGossipSubParams(gossipParams())); err != nil {
		n.Close()
		return nil, fmt.Errorf("gossipsub: %w", err)
	}
	h.SetStreamHandler(ManifestProtocol, serveOne[*wire.ManifestRequest](n, "manifest"))
	h.SetStreamHandler(ShardProtocol, serveOne[*wire.BlocksRequest](n, "shard"))
	n.startDirect()
	if opts.MDNS {
		if err := n.startMDNS(); err != nil {
			n.Close()
			return nil, err
		}
	}
	for _, b := range opts.Bootstrap {
		if _, err := n.Connect(ctx, b); err != nil {
			n.log.Warn("bootstrap peer unreachable", "addr", b, "err", err)
		}
	}
	if len(opts.Bootstrap) > 0 && n.dht != nil {
		if err := n.dht.Bootstrap(hctx); err != nil {
			n.log.Warn("dht bootstrap", "err", err)
		}
	}
	n.log.Info("host started", "addrs", n.Addrs())
	return n, nil
}

// ID returns the host's peer ID.
func (n *Host) ID() string { return n.h.ID().String() }

// Addrs returns the host's full multiaddrs (…/p2p/<id>) with real ports.
func (n *Host) Addrs() []string {
	var out []string
	for _, a := range n.h.Addrs() {
		out = append(out, a.String()+"/p2p/"+n.h.ID().String())
	}
	return out
}

// Connect dials a full multiaddr (with /p2p/<id>) and returns the peer's ID.
func (n *Host) Connect(ctx context.Context, addr string) (string, error) {
	ai, err := peer.AddrInfoFromString(addr)
	if err != nil {
		return "", fmt.Errorf("peer address %q: %w", addr, err)
	}
	if ai.ID == n.h.ID() {
		return "", fmt.Errorf("peer address %q: that is this host", addr)
	}
	ctx, cancel := context.WithTimeout(ctx, n.opts.DialTimeout)
	defer cancel()
	if err := n.h.Connect(ctx, *ai); err != nil {
		return "", fmt.Errorf("connect %s: %w", addr, err)
	}
	return ai.ID.String(), nil
}

// Peers returns the IDs of the peers the host is connected to.
func (n *Host) Peers() []string {
	var out []string
	for _, p := range n.h.Network().Peers() {
		out = append(out, p.String())
	}
	return out
}

// Close stops everything the host started and closes its connections.
func (n *Host) Close() error {
	var err error
	n.closeOnce.Do(func() {
		n.cancel()
		n.gossip.closeAll()
		if n.dht != nil {
			err = errors.Join(err, n.dht.Close())
		}
		err = errors.Join(err, n.h.Close())
		n.wg.Wait()
	})
	return err
}

// goBackground runs f in a goroutine that Close waits for.
func (n *Host) goBackground(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// loadKey reads or creates an ed25519 key file.
func loadKey(path string) (crypto.PrivKey, error) {
	if path == "" {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		return k, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, err
		}
		raw, err := crypto.MarshalPrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := writeKey(path, raw); err != nil {
			return nil, fmt.Errorf("node key %s: %w", path, err)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	if len(b) > 4096 {
		return nil, fmt.Errorf("node key %s: %d bytes is not a key", path, len(b))
	}
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("node key %s: %w", path, err)
	}
	if k.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("node key %s: %v key, want ed25519", path, k.Type())
	}
	return k, nil
}

// writeKey writes a new key file with mode 0600, atomically, never
// replacing an existing one.
func writeKey(path string, raw []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".key-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// Link fails if path exists, so two processes starting together agree.
	if err := os.Link(f.Name(), path); err != nil {
		return err
	}
	return nil
}

func filterLoopback(as []ma.Multiaddr) []ma.Multiaddr {
	out := make([]ma.Multiaddr, 0, len(as))
	for _, a := range as {
		if manet.IsIPLoopback(a) {
			out = append(out, a)
		}
	}
	return out
}

// loopbackGater refuses to dial anything but loopback addresses, and
// refuses inbound connections from elsewhere.
type loopbackGater struct{}

func (loopbackGater) InterceptPeerDial(peer.ID) bool { return true }
func (loopbackGater) InterceptAddrDial(_ peer.ID, a ma.Multiaddr) bool {
	return manet.IsIPLoopback(a)
}
func (loopbackGater) InterceptAccept(c network.ConnMultiaddrs) bool {
	return manet.IsIPLoopback(c.RemoteMultiaddr())
}
func (loopbackGater) InterceptSecured(network.Direction, peer.ID, network.ConnMultiaddrs) bool {
	return true
}
func (loopbackGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// gossipParams are gossipsub's parameters, for every topic this host
// joins (inventories and expert usage): a narrower mesh (D 4, from 6) and
// no lazy gossip (IHAVE/IWANT; the defaults send IHAVE to 6 peers or a
// quarter of the others every second). Both kinds of message are small,
// frequent and superseded by the next one, and a node also asks its
// neighbours for inventories directly, so a copy the mesh loses costs
// little, while every extra mesh link carries every message. Lazy gossip
// fed back on itself at scale: a seed, which has a connection to every
// peer, was offered each message by many of them, asked each for it
// (IWANT, before its own copy had been validated), and the answers filled
// its download link, which delayed its copies, which made it ask more —
// at 300 simulated peers on 2 Mbit/s links it sent 5.3 MB of IWANT in
// 60 s, and at 1,000 peers its gossip took 60 % of its uplink. With these
// and WithFloodPublish(false) the 300-peer simulation went from 82 to
// 61 s (docs/swarm-bench.md).
func gossipParams() pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.D, p.Dlo, p.Dhi, p.Dscore, p.Dout = 4, 3, 8, 2, 1
	p.Dlazy, p.GossipFactor = 0, 0
	return p
}
