//go:build !js

package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// ErrNoManifest: no reachable peer served the model's manifest.
var ErrNoManifest = errors.New("no reachable peer has the model")

// NodeOptions configures a Node. Zero values take the defaults shown.
type NodeOptions struct {
	// Host configures the libp2p host (listen addresses, key file,
	// bootstrap peers, mDNS, NAT, limits).
	Host p2p.Options
	// Fetch holds the defaults of every fetch the node runs (Pull and the
	// shard source); Progress and Shards are set per call.
	Fetch FetchOptions
	// ReprovideInterval: how often DHT provider records are renewed (1h).
	ReprovideInterval time.Duration
	// ProvideRetry: how soon a failed provide is tried again (10s); a node
	// that starts alone provides once it has DHT peers.
	ProvideRetry time.Duration
	// LookupTimeout bounds one DHT lookup and one manifest request (10s).
	LookupTimeout time.Duration
	// Discover: how often a running fetch looks for more providers on the DHT (5s).
	Discover time.Duration
	// AnnounceDelay coalesces bursts of store changes into one
	// announcement (20ms).
	AnnounceDelay time.Duration
	// UploadCapacity is announced as wire.Inventory.UploadFree (bytes/s; 0 = unknown).
	UploadCapacity uint64
	// Experts configures expert-usage gossip and the gatekeeper role
	// (gatekeeper.go).
	Experts ExpertOptions
	// WrapProvider, for tests, wraps what the host serves (lying peers).
	WrapProvider func(p2p.Provider) p2p.Provider
	Logger       *slog.Logger
}

func (o *NodeOptions) fill() {
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&o.ReprovideInterval, time.Hour)
	def(&o.ProvideRetry, 10*time.Second)
	def(&o.LookupTimeout, 10*time.Second)
	def(&o.Discover, 5*time.Second)
	def(&o.AnnounceDelay, 20*time.Millisecond)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Host.Logger == nil {
		o.Host.Logger = o.Logger
	}
}

// Node is a store on the network: it serves the store's shards over p2p,
// announces what it holds (gossip inventories per model and DHT provider
// records for model IDs and shard hashes), and fetches models from other
// nodes. It implements PeerSet from the gossiped inventories and the DHT.
type Node struct {
	store *Store
	host  *p2p.Host
	opts  NodeOptions
	log   *slog.Logger

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // re-sync inventories now
	provK  chan struct{} // new keys to provide
	syncMu sync.Mutex    // one sync at a time: a later one never announces older holdings

	mu      sync.Mutex
	tracked map[rdrr.ModelID]*tracked
	remotes map[string]*p2p.Remote
	provide map[rdrr.Hash]time.Time // key → next provide
	fetchMu map[rdrr.Hash]*sync.Mutex
	xp      experts                 // expert usage and clusters (gatekeeper.go)
	speeds  map[rdrr.ModelID]speeds // measured tokens/s, announced (offload.go)
	offload offloadState            // prefill offload client state (offload.go)
}

// tracked is a model the node follows: subscribed to its topic.
type tracked struct {
	index    map[rdrr.Hash]int              // shard → index in the manifest's table
	shards   []rdrr.Hash                    // the manifest's shard table (Holding's fast path)
	view     map[string]wire.Bitmap         // peer → shards announced (latest Peers snapshot)
	part     map[string]map[int]wire.Bitmap // peer → shard index → blocks of a shard held partly (same snapshot)
	partOf   map[string]*wire.Partial       // peer → the Partial list part[peer] was made from
	assumed  map[string]bool                // DHT providers of the model and the peer that served its manifest
	lastInv  string                         // the last inventory announced (bitmap + models)
	announce bool                           // announcing (the model is in the store)
	cancel   context.CancelFunc             // ends the subscription
}

// NewNode starts a libp2p host serving store and announces every model the
// store holds. ctx bounds the start only; the node lives until Close (which
// does not close the store).
func NewNode(ctx context.Context, store *Store, opts NodeOptions) (*Node, error) {
	opts.fill()
	var prov p2p.Provider = store
	if opts.WrapProvider != nil {
		prov = opts.WrapProvider(prov)
	}
	h, err := p2p.New(ctx, opts.Host, prov)
	if err != nil {
		return nil, err
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{store: store, host: h, opts: opts, log: opts.Logger.With("node", shortID(h.ID())),
		ctx: nctx, cancel: cancel, kick: make(chan struct{}, 1), provK: make(chan struct{}, 1),
		tracked: map[rdrr.ModelID]*tracked{}, remotes: map[string]*p2p.Remote{},
		provide: map[rdrr.Hash]time.Time{}, fetchMu: map[rdrr.Hash]*sync.Mutex{}}
	changes, stop := store.Changes()
	blocks, stopBlocks := store.BlockChanges()
	n.sync()
	n.goBackground(func() {
		defer stop()
		defer stopBlocks()
		n.announceLoop(changes, blocks)
	})
	n.goBackground(n.provideLoop)
	return n, nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[len(id)-8:]
	}
	return id
}

func (n *Node) goBackground(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// Store returns the node's store.
func (n *Node) Store() *Store { return n.store }

// Host returns the node's libp2p host (addresses, traffic counters).
func (n *Node) Host() *p2p.Host { return n.host }

// ID returns the node's peer ID.
func (n *Node) ID() string { return n.host.ID() }

// Addrs returns the node's full multiaddrs (…/p2p/<id>).
func (n *Node) Addrs() []string { return n.host.Addrs() }

// Close stops announcing and closes the host. The store stays open.
func (n *Node) Close() error {
	n.cancel()
	err := n.host.Close()
	n.wg.Wait()
	return err
}

// Connect dials peers given as full multiaddrs, in parallel, each bounded
// by the host's dial timeout, and returns the IDs of those reached and the
// errors of the others.
func (n *Node) Connect(ctx context.Context, addrs []string) ([]string, []error) {
	ids := make([]string, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = n.host.Connect(ctx, a)
		}()
	}
	wg.Wait()
	var ok []string
	var bad []error
	for i := range addrs {
		if errs[i] != nil {
			bad = append(bad, errs[i])
		} else {
			ok = append(ok, ids[i])
		}
	}
	return ok, bad
}

func (n *Node) remote(id string) *p2p.Remote {
	r, ok := n.remotes[id]
	if !ok {
		r = n.host.Remote(id)
		n.remotes[id] = r
	}
	return r
}

// track subscribes to a model's topic once. Called with n.mu held.
func (n *Node) track(id rdrr.ModelID) (*tracked, error) {
	if t, ok := n.tracked[id]; ok {
		return t, nil
	}
	ctx, cancel := context.WithCancel(n.ctx)
	if err := n.host.Subscribe(ctx, id, nil); err != nil {
		cancel()
		return nil, err
	}
	t := &tracked{view: map[string]wire.Bitmap{}, part: map[string]map[int]wire.Bitmap{}, assumed: map[string]bool{}, cancel: cancel}
	n.tracked[id] = t
	n.gatekeep(id)
	return t, nil
}

// Peers implements PeerSet: the peers whose unexpired inventory names the
// model, and the DHT providers of the model that have not announced one.
func (n *Node) Peers(id rdrr.ModelID) []Peer {
	invs := n.host.Inventories(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.tracked[id]
	if !ok {
		return nil
	}
	// The maps are refilled in place, and a peer's partial map is made
	// again only when its inventory changed: a fetch reads them at every
	// scheduling pass, mostly for inventories it has already seen. The
	// host never changes an inventory it stored (a Have makes a new one,
	// wire.Inventory.Apply), so the first Partial's address tells.
	clear(t.view)
	if t.partOf == nil {
		t.partOf = map[string]*wire.Partial{}
	}
	out := make([]Peer, 0, len(invs)+len(t.assumed))
	for _, e := range invs {
		t.view[e.Peer] = e.Inv.Have
		switch {
		case len(e.Inv.Partial) == 0:
			delete(t.part, e.Peer)
			delete(t.partOf, e.Peer)
		case t.partOf[e.Peer] != &e.Inv.Partial[0] || len(t.part[e.Peer]) != len(e.Inv.Partial):
			pm := make(map[int]wire.Bitmap, len(e.Inv.Partial))
			for _, p := range e.Inv.Partial {
				pm[int(p.Shard)] = p.Blocks
			}
			t.part[e.Peer], t.partOf[e.Peer] = pm, &e.Inv.Partial[0]
		}
		out = append(out, n.remote(e.Peer))
	}
	for p := range t.part {
		if _, ok := t.view[p]; !ok { // its inventory expired
			delete(t.part, p)
			delete(t.partOf, p)
		}
	}
	for p := range t.assumed {
		if _, ok := t.view[p]; !ok && p != n.host.ID() {
			out = append(out, n.remote(p))
		}
	}
	return out
}

// Has implements PeerSet: the peer's latest inventory has the shard's bit
// set; an assumed holder (see assume) without an inventory is taken to
// hold every shard (a probe tells). See Holding.
func (n *Node) Has(p Peer, shard rdrr.Hash) bool {
	var has [1]bool
	var part [1]wire.Bitmap
	n.Holding(p, []rdrr.Hash{shard}, has[:], part[:])
	return has[0]
}

// sync makes the announcements match the store: every model held is
// tracked and its inventory announced when it changed; models removed
// stop being announced; models newly complete are queued for the DHT.
// Only whole models are provided there: discovery looks up model IDs
// alone, and a node holding part of a model is found through the
// inventories of the peers it is connected to. A provider record per
// shard cost every node one DHT lookup per shard as it arrived (12% of
// the CPU of 20 pulling nodes, docs/swarm-bench.md) and was never read.
func (n *Node) sync() {
	if n.ctx.Err() != nil {
		return
	}
	n.syncMu.Lock()
	defer n.syncMu.Unlock()
	models := n.store.Models()
	var complete []rdrr.ModelID
	type inv struct {
		id      rdrr.ModelID
		have    wire.Bitmap
		partial []wire.Partial
	}
	var invs []inv
	var keys []rdrr.Hash
	for _, id := range models {
		m, ok := n.store.manifest(id)
		if !ok {
			continue
		}
		have, all := HaveBitmap(m, n.store)
		if all {
			complete = append(complete, id)
			keys = append(keys, id)
		}
		var partial []wire.Partial
		if !all {
			partial = PartialShards(m, n.store)
		}
		invs = append(invs, inv{id, have, partial})
	}
	if len(complete) > wire.MaxModels {
		complete = complete[:wire.MaxModels]
	}
	present := map[rdrr.ModelID]bool{}
	for _, v := range invs {
		present[v.id] = true
		n.mu.Lock()
		t, err := n.track(v.id)
		if err != nil {
			n.mu.Unlock()
			n.log.Warn("swarm: cannot follow model", "model", v.id.Short(), "err", err)
			continue
		}
		if t.index == nil {
			if m, ok := n.store.manifest(v.id); ok {
				t.index = make(map[rdrr.Hash]int, len(m.Shards))
				for i, sh := range m.Shards {
					t.index[sh.Hash] = i
					t.shards = append(t.shards, sh.Hash)
				}
			}
		}
		sp := n.speeds[v.id]
		key := fmt.Sprintf("%x|%v|%v|%v", v.have.Bits, complete, sp, v.partial)
		changed := key != t.lastInv || !t.announce
		t.lastInv, t.announce = key, true
		n.mu.Unlock()
		if !changed {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.opts.LookupTimeout)
		err = n.host.Announce(ctx, wire.Inventory{Model: v.id, Have: v.have, Models: complete, UploadFree: n.opts.UploadCapacity,
			PrefillTokS: sp.prefill, DecodeTokS: sp.decode, Partial: v.partial})
		cancel()
		if err != nil && n.ctx.Err() == nil {
			n.log.Warn("swarm: announce", "model", v.id.Short(), "err", err)
		}
	}
	n.mu.Lock()
	for id, t := range n.tracked {
		if t.announce && !present[id] {
			t.announce, t.lastInv = false, ""
			n.host.StopAnnouncing(id)
		}
	}
	want := map[rdrr.Hash]bool{}
	added := false
	for _, k := range keys {
		want[k] = true
		if _, ok := n.provide[k]; !ok {
			n.provide[k] = time.Time{}
			added = true
		}
	}
	for k := range n.provide {
		if !want[k] {
			delete(n.provide, k)
		}
	}
	n.mu.Unlock()
	if added {
		select {
		case n.provK <- struct{}{}:
		default:
		}
	}
}

// announceLoop re-syncs after store changes and blocks written into
// partial shards, coalescing bursts.
func (n *Node) announceLoop(changes, blocks <-chan struct{}) {
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-changes:
		case <-blocks:
		case <-n.kick:
		}
		t := time.NewTimer(n.opts.AnnounceDelay)
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		n.sync()
	}
}

// provideLoop puts DHT provider records for the keys sync queued, renews
// them every ReprovideInterval and retries failures after ProvideRetry.
func (n *Node) provideLoop() {
	for {
		now := time.Now()
		var due []rdrr.Hash
		next := now.Add(n.opts.ProvideRetry)
		n.mu.Lock()
		for k, at := range n.provide {
			if !at.After(now) {
				due = append(due, k)
			} else if at.Before(next) {
				next = at
			}
		}
		n.mu.Unlock()
		slices.SortFunc(due, func(a, b rdrr.Hash) int { return slices.Compare(a[:], b[:]) })
		for _, k := range due {
			if n.ctx.Err() != nil {
				return
			}
			ctx, cancel := context.WithTimeout(n.ctx, n.opts.LookupTimeout)
			err := n.host.Provide(ctx, k)
			cancel()
			at := time.Now().Add(n.opts.ReprovideInterval)
			if err != nil {
				at = time.Now().Add(n.opts.ProvideRetry)
				n.log.Debug("swarm: provide", "key", k.Short(), "err", err)
			}
			n.mu.Lock()
			if _, ok := n.provide[k]; ok {
				n.provide[k] = at
			}
			n.mu.Unlock()
		}
		if len(due) > 0 {
			continue
		}
		t := time.NewTimer(max(time.Until(next), 10*time.Millisecond))
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-n.provK:
		case <-t.C:
		}
		t.Stop()
	}
}

// discoverEnough is how many peers' inventories of a model make a
// fetching node skip a round of DHT lookups: it is in the model's swarm
// already, and gossip and watches tell it of the others. Each lookup
// asks a dozen or more DHT servers; at 20 real pulling nodes the rounds
// of all nodes were most of the DHT's 8% of the CPU.
const discoverEnough = 8

// discover looks up DHT providers of a model until ctx ends, connects to
// them (so gossip flows) and keeps them as assumed holders. After the
// first lookup a round is skipped while the node knows discoverEnough
// peers of the model.
func (n *Node) discover(ctx context.Context, id rdrr.ModelID) {
	for first := true; ; first = false {
		if first || len(n.host.Inventories(id)) < discoverEnough {
			n.findProviders(ctx, id)
		}
		t := time.NewTimer(n.opts.Discover)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (n *Node) findProviders(ctx context.Context, id rdrr.ModelID) []string {
	lctx, cancel := context.WithTimeout(ctx, n.opts.LookupTimeout)
	defer cancel()
	ps, err := n.host.FindProviders(lctx, id, 20)
	if err != nil {
		n.log.Debug("swarm: find providers", "model", id.Short(), "err", err)
		return nil
	}
	var found []string
	connected := map[string]bool{}
	for _, p := range n.host.Peers() {
		connected[p] = true
	}
	for _, p := range ps {
		if p.ID == n.host.ID() {
			continue
		}
		found = append(found, p.ID)
		if !connected[p.ID] && len(p.Addrs) > 0 {
			// Connect so the gossip mesh includes it; failures leave it to
			// the fetcher's scoring.
			n.host.Connect(lctx, p.Addrs[0]+"/p2p/"+p.ID)
		}
	}
	for _, p := range found {
		n.assume(id, p)
	}
	return found
}

// assume keeps peer p as an assumed holder of model id (see Holding)
// until its inventory arrives: a DHT provider of the model, or the peer
// that served its manifest. A pull whose direct ask of that peer went
// unanswered (a seed that a thousand peers joined at once) then still has
// whom to ask, where it waited for gossip before: a thousand-peer
// simulation saw 405 pulls give up with the seed connected and holding
// every shard, its inventory not yet known to them.
func (n *Node) assume(id rdrr.ModelID, p string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.tracked[id]; ok && p != n.host.ID() {
		t.assumed[p] = true
	}
}

// Seed imports an RDRR directory into the store (verifying every block)
// and announces it; it returns the model ID.
func (n *Node) Seed(ctx context.Context, dir string) (rdrr.ModelID, error) {
	id, err := n.store.ImportDir(ctx, dir)
	if err != nil {
		return id, err
	}
	n.sync()
	return id, nil
}

// PullOptions tunes Pull.
type PullOptions struct {
	// Peers are full multiaddrs to dial first. Without any, the node uses
	// the peers it is connected to and the DHT.
	Peers []string
	// Sources (HTTP seeds) are asked first for the manifest, and for blocks
	// alongside the swarm's peers, as peers that hold every shard. With a
	// source, Pull needs no libp2p peer, and unreachable Peers are only
	// logged.
	Sources []Source
	// Progress is called with the verified bytes held, the model's size
	// and the peers in use.
	Progress func(done, total int64, peers int)
}

// Pull fetches model id: it connects to the given peers, gets the manifest
// from one of them (or a DHT provider), verified against the ID, adds it
// to the store and fetches every shard. It returns nil only when every
// shard is complete and verified in the store.
func (n *Node) Pull(ctx context.Context, id rdrr.ModelID, opts PullOptions) error {
	src := NewSources(opts.Sources...)
	if len(opts.Peers) > 0 {
		ok, errs := n.connectPatiently(ctx, opts.Peers, src.Len() == 0)
		if len(ok) == 0 && src.Len() == 0 {
			return fmt.Errorf("no peer reachable: %w", errors.Join(errs...))
		}
		for _, e := range errs {
			n.log.Warn("swarm: peer unreachable", "err", e)
		}
	}
	if len(n.host.Peers()) == 0 && src.Len() == 0 {
		return fmt.Errorf("model %s: not connected to any peer (pass --peer or --bootstrap)", id.Short())
	}
	n.mu.Lock()
	_, err := n.track(id)
	n.mu.Unlock()
	if err != nil {
		return err
	}
	if err := n.manifestFrom(ctx, id, src, opts.Peers); err != nil {
		return err
	}
	return n.fetch(ctx, id, nil, opts.Progress, src)
}

// connectPatiently dials peers, and when none answers and the pull has
// nothing else to fetch from (must), dials them again — after a second,
// doubling up to 8 s — until FetchOptions.WaitPeers has passed since the
// first try. A peer slow to answer is not gone: a seed that a thousand
// peers dial at once, a host short of CPU (a 1,000-peer simulation on two
// cores saw 13 pulls give up at once when identify timed out), one
// restarting. ctx ends it early.
func (n *Node) connectPatiently(ctx context.Context, peers []string, must bool) ([]string, []error) {
	o := n.opts.Fetch
	o.fill()
	deadline := time.Now().Add(o.WaitPeers)
	backoff := time.Second
	for {
		ok, errs := n.Connect(ctx, peers)
		if len(ok) > 0 || !must || time.Now().Add(backoff).After(deadline) {
			return ok, errs
		}
		n.log.Warn("swarm: no peer answered; dialing again", "in", backoff, "err", errors.Join(errs...))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ok, errs
		case <-t.C:
		}
		backoff = min(2*backoff, 8*time.Second)
	}
}

// manifestFrom adds the model's manifest to the store from the sources
// when it lacks it, else from the swarm (ensureManifest); with no libp2p
// peer, the sources' errors are the answer.
func (n *Node) manifestFrom(ctx context.Context, id rdrr.ModelID, src *Sources, redial []string) error {
	if _, _, ok := n.store.Manifest(id); ok || src.Len() == 0 {
		return n.ensureManifest(ctx, id, redial...)
	}
	man, sig, err := src.Manifest(ctx, id, n.opts.LookupTimeout)
	if err == nil {
		_, err = n.store.AddModel(man, sig)
	}
	if err == nil || ctx.Err() != nil || len(n.host.Peers()) == 0 {
		return err
	}
	if err2 := n.ensureManifest(ctx, id, redial...); err2 != nil {
		return errors.Join(err, err2)
	}
	return nil
}

// ensureManifest adds the model's manifest to the store from a peer when
// the store lacks it: connected peers first, then DHT providers. redial
// are the addresses the pull was given: one that was not reached, or
// whose connection dropped (a seed that a whole swarm dials at once), is
// dialled again between tries.
func (n *Node) ensureManifest(ctx context.Context, id rdrr.ModelID, redial ...string) error {
	if _, _, ok := n.store.Manifest(id); ok {
		return nil
	}
	try := func(peers []string) error {
		if len(peers) == 0 {
			return errors.New("no peer to ask") // (errors.Join of nothing is nil: not a success)
		}
		var errs []error
		for _, p := range peers {
			n.mu.Lock()
			r := n.remote(p)
			n.mu.Unlock()
			mctx, cancel := context.WithTimeout(ctx, n.opts.LookupTimeout)
			man, sig, err := r.Manifest(mctx, id)
			cancel()
			if err == nil {
				_, err = n.store.AddModel(man, sig)
			}
			if err == nil {
				n.assume(id, p)
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	// While a peer answered busy (its serving slots full: a seed that a
	// whole swarm asks at once) or timed out, or one of redial is not
	// reached or reached only now, the peers are asked again, with a
	// jittered backoff, for up to the fetch's WaitPeers: slow is not dead.
	wait := n.opts.Fetch.WaitPeers
	if wait <= 0 {
		wait = 30 * time.Second
	}
	deadline := time.Now().Add(wait)
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		err1 := try(n.host.Peers())
		if err1 == nil || ctx.Err() != nil {
			return err1
		}
		err2 := try(n.findProviders(ctx, id))
		if err2 == nil || ctx.Err() != nil {
			return err2
		}
		before := n.host.Peers()
		ok, errs := n.Connect(ctx, redial)
		again := len(errs) > 0 || slices.ContainsFunc(ok, func(p string) bool { return !slices.Contains(before, p) })
		if !again && !busyOrSlow(err1) && !busyOrSlow(err2) || time.Now().After(deadline) {
			return fmt.Errorf("model %s: %w (%w)", id.Short(), ErrNoManifest, errors.Join(err1, err2))
		}
		n.log.Debug("swarm: manifest: peers busy; asking again", "model", id.Short(), "in", backoff, "err", errors.Join(err1, err2))
		t := time.NewTimer(backoff/2 + time.Duration(rand.Int64N(int64(backoff))))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// busyOrSlow reports whether err (possibly joined) holds a busy answer or
// a timeout: a peer that is up but could not answer now.
func busyOrSlow(err error) bool {
	return isBusy(err) || errors.Is(err, p2p.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}

// fetch runs Store.Fetch with the node as the PeerSet and DHT discovery
// alongside.
func (n *Node) fetch(ctx context.Context, id rdrr.ModelID, shards []rdrr.Hash, progress func(done, total int64, peers int), src *Sources) error {
	n.mu.Lock()
	_, err := n.track(id)
	n.mu.Unlock()
	if err != nil {
		return err
	}
	n.sync() // index the model's shards; announce interest
	dctx, cancel := context.WithCancel(ctx)
	changed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.discover(dctx, id)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.refresh(dctx, id, func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()
	o := n.opts.Fetch
	o.Progress, o.Shards, o.Changed = progress, shards, changed
	var ps PeerSet = n
	if src.Len() > 0 {
		ps = nodeSources{n, src}
	}
	if err := n.store.Fetch(ctx, id, ps, o); err != nil {
		return err
	}
	// Announce the completed shards before returning, not after the
	// coalescing delay: a peer that asks for this node's inventory once
	// the pull has returned must hear that it holds them.
	n.sync()
	return nil
}

// nodeSources is the PeerSet of the node's peers and fixed sources; it
// keeps the node's ID (the fetcher's place on the territory ring).
type nodeSources struct {
	*Node
	src *Sources
}

func (w nodeSources) Peers(id rdrr.ModelID) []Peer {
	return append(w.Node.Peers(id), w.src.Peers(id)...)
}

func (w nodeSources) Has(p Peer, shard rdrr.Hash) bool {
	return w.src.Has(p, shard) || w.Node.Has(p, shard)
}

// Holding overrides the Node's (embedding would promote it past Has): a
// source holds what Sources.Has says, the node's peers what they announced.
func (w nodeSources) Holding(p Peer, shards []rdrr.Hash, has []bool, part []wire.Bitmap) {
	w.Node.Holding(p, shards, has, part)
	for s, h := range shards {
		if !has[s] && w.src.Has(p, h) {
			has[s], part[s] = true, wire.Bitmap{}
		}
	}
}

// Source returns a shard source for model id that reads from the store
// and fetches a missing shard from peers first.
func (n *Node) Source(id rdrr.ModelID) rdrr.ShardSource { return nodeSource{n, id} }

// OpenModel opens model id for the engine, getting its manifest from a
// peer when the store lacks it; shards come from the store, fetched from
// peers on first use.
func (n *Node) OpenModel(ctx context.Context, id rdrr.ModelID) (*rdrr.Model, error) {
	if err := n.ensureManifest(ctx, id); err != nil {
		return nil, err
	}
	b, sig, ok := n.store.Manifest(id)
	if !ok {
		return nil, fmt.Errorf("model %s: %w", id.Short(), ErrUnknownModel)
	}
	return rdrr.Open(b, sig, n.Source(id))
}

type nodeSource struct {
	n  *Node
	id rdrr.ModelID
}

// ReadShardAt implements rdrr.ShardSource.
func (s nodeSource) ReadShardAt(ctx context.Context, h rdrr.Hash, p []byte, off int64) error {
	err := s.n.store.ReadShardAt(ctx, h, p, off)
	if !errors.Is(err, ErrMissingBlock) {
		return err
	}
	s.n.mu.Lock()
	mu, ok := s.n.fetchMu[h]
	if !ok {
		mu = &sync.Mutex{}
		s.n.fetchMu[h] = mu
	}
	s.n.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if err := s.n.store.ReadShardAt(ctx, h, p, off); !errors.Is(err, ErrMissingBlock) {
		return err
	}
	if err := s.n.fetch(ctx, s.id, []rdrr.Hash{h}, nil, nil); err != nil {
		return err
	}
	return s.n.store.ReadShardAt(ctx, h, p, off)
}

// LingerOptions tunes Linger.
type LingerOptions struct {
	// Max is the longest Linger serves (0: it returns at once).
	Max time.Duration
	// Quiet: a peer that asked for no block within it is no longer
	// fetching from this node (1s).
	Quiet time.Duration
	// Poll is how often the peers are checked (100ms).
	Poll time.Duration
}

// Linger keeps serving model id after a pull: it returns once no peer
// still lacks a shard of it that this node holds while fetching from this
// node (a block request being answered, or one answered within Quiet), or
// after Max, or when ctx ends. A peer that announced no inventory for the
// model counts as lacking. It reports how long it waited.
func (n *Node) Linger(ctx context.Context, id rdrr.ModelID, o LingerOptions) time.Duration {
	if o.Quiet <= 0 {
		o.Quiet = time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 100 * time.Millisecond
	}
	start := time.Now()
	if o.Max <= 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, o.Max)
	defer cancel()
	for {
		needy := n.needy(id, o.Quiet)
		if len(needy) == 0 {
			return time.Since(start)
		}
		n.log.Debug("swarm: lingering; peers still fetch shards held here", "model", id.Short(), "peers", len(needy))
		t := time.NewTimer(o.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			n.log.Info("swarm: stopped lingering with peers still fetching", "model", id.Short(), "peers", len(needy), "after", time.Since(start).Round(time.Millisecond))
			return time.Since(start)
		case <-t.C:
		}
	}
}

// needy returns the peers fetching from this node (within quiet) that
// lack a shard of model id this node holds.
func (n *Node) needy(id rdrr.ModelID, quiet time.Duration) []string {
	m, ok := n.store.manifest(id)
	if !ok {
		return nil
	}
	mine, _ := HaveBitmap(m, n.store)
	invs := map[string]wire.Bitmap{}
	for _, e := range n.host.Inventories(id) {
		invs[e.Peer] = e.Inv.Have
	}
	var out []string
	for _, p := range n.host.Fetching(quiet) {
		have, ok := invs[p]
		if !ok || have.N != mine.N {
			out = append(out, p)
			continue
		}
		for i := range mine.N {
			if mine.Has(i) && !have.Has(i) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}
