//go:build !js

package swarm

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// Gatekeeper prefetch. A node running an MoE model with expert paging
// records, per token, the (layer, expert)s its router chose (the engine's
// routing hook, ExpertTracker.OnRoute) in a bounded sketch of counts and co-firing pairs, and gossips
// it as a wire.Usage on the model's usage topic every UsageInterval. A
// gatekeeper (ExpertOptions.Gatekeeper, `doppler node --gatekeeper`) keeps
// every peer's latest Usage (and its own), clusters the experts that fire
// together (ComputeClusters) and publishes wire.Clusters when they change,
// every ClustersInterval and when a peer joins the topic. Nodes keep the
// latest clusters any gatekeeper sent and, through the engine's hint hook
// (ExpertTracker.Hints), read a whole cluster ahead when a token picks one
// of its members. The swarm knows no engine: the caller hooks the two
// methods into it (cmd/node's engine wiring does).
//
// Trust: any peer may act as a gatekeeper, and a node uses the clusters it
// received last. Hints only decide what is read ahead: every expert is
// still verified block by block and the output never changes; a lying
// gatekeeper can waste read-ahead bandwidth (bounded by the engine's
// read-ahead limit and maxHints per layer), not corrupt anything.

// ExpertOptions configures usage gossip and the gatekeeper role. Zero
// values take the defaults shown.
type ExpertOptions struct {
	// Gatekeeper makes the node aggregate usage and publish clusters for
	// every model it follows.
	Gatekeeper bool
	// UsageInterval: how often a node gossips its usage when it changed (30s).
	UsageInterval time.Duration
	// ClustersInterval: how often a gatekeeper re-publishes its clusters (30s).
	ClustersInterval time.Duration
	// UsageTTL: a peer's usage is forgotten this long after it was
	// received (10m).
	UsageTTL time.Duration
	// Cluster tunes the clustering.
	Cluster ClusterOptions
	// GossipPairs bounds the co-firing pairs in one Usage (4096, at most
	// wire.MaxUsagePairs); SketchPairs the pairs a node counts (32768).
	GossipPairs, SketchPairs int
}

func (o *ExpertOptions) fill() {
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&o.UsageInterval, 30*time.Second)
	def(&o.ClustersInterval, 30*time.Second)
	def(&o.UsageTTL, 10*time.Minute)
	o.Cluster.fill()
	if o.GossipPairs <= 0 || o.GossipPairs > wire.MaxUsagePairs {
		o.GossipPairs = min(4096, wire.MaxUsagePairs)
	}
	if o.SketchPairs < o.GossipPairs {
		o.SketchPairs = max(32768, o.GossipPairs)
	}
}

const (
	maxTokenExperts = 512     // (layer, expert)s of one token counted
	maxHints        = 256     // experts one ExpertHints call returns
	maxGatekeepers  = 64      // gatekeepers whose versions a node remembers
	maxUsagePeers   = 256     // peers whose usage a gatekeeper keeps
	maxAggPairs     = 1 << 16 // pairs a gatekeeper clusters
	halfLife        = 1 << 16 // tokens after which the sketch halves
)

// usageSketch counts experts and co-firing pairs within bounds: above
// limit pairs (or halfLife tokens) every count is halved and zeros dropped.
type usageSketch struct {
	mu        sync.Mutex
	limit     int
	stats     *UsageStats
	cur       []wire.Expert // the current token's experts
	lastLayer int
	gen       uint64 // tokens counted, ever
}

func newUsageSketch(limit int) *usageSketch {
	if limit <= 0 {
		limit = 32768
	}
	return &usageSketch{limit: limit, stats: newUsageStats(), lastLayer: -1}
}

// route records one MoE layer's choices; a layer not after the previous
// one starts a new token.
func (s *usageSketch) route(layer int, experts []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if layer <= s.lastLayer {
		s.flushLocked()
	}
	s.lastLayer = layer
	for _, e := range experts {
		if layer >= 0 && layer <= math.MaxUint16 && e >= 0 && e <= math.MaxUint16 && len(s.cur) < maxTokenExperts {
			s.cur = append(s.cur, wire.Expert{Layer: uint16(layer), Expert: uint16(e)})
		}
	}
}

// flushLocked counts the current token.
func (s *usageSketch) flushLocked() {
	if len(s.cur) == 0 {
		return
	}
	slices.SortFunc(s.cur, cmpExpert)
	s.cur = slices.Compact(s.cur)
	st := s.stats
	st.Tokens++
	s.gen++
	for i, a := range s.cur {
		st.Counts[a]++
		for _, b := range s.cur[i+1:] {
			st.Pairs[pairKey{a, b}]++
		}
	}
	s.cur = s.cur[:0]
	for i := 0; i < 64 && (len(st.Pairs) > s.limit || st.Tokens >= halfLife); i++ {
		halve(st)
	}
	st.prune(s.limit)
}

func halve(st *UsageStats) {
	st.Tokens /= 2
	for k, n := range st.Counts {
		if n /= 2; n == 0 {
			delete(st.Counts, k)
		} else {
			st.Counts[k] = n
		}
	}
	for k, n := range st.Pairs {
		if n /= 2; n == 0 {
			delete(st.Pairs, k)
		} else {
			st.Pairs[k] = n
		}
	}
}

// usage returns the counts as a wire.Usage (the pairs most frequent
// first, then sorted) and the generation they cover.
func (s *usageSketch) usage(id rdrr.ModelID, pairs int) (*wire.Usage, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	u := &wire.Usage{Model: id, Tokens: st.Tokens}
	for e, n := range st.Counts {
		u.Counts = append(u.Counts, wire.ExpertCount{E: e, N: clamp32(n)})
	}
	if len(u.Counts) > wire.MaxUsageCounts {
		slices.SortFunc(u.Counts, func(a, b wire.ExpertCount) int { return int(b.N) - int(a.N) })
		u.Counts = u.Counts[:wire.MaxUsageCounts]
	}
	slices.SortFunc(u.Counts, func(a, b wire.ExpertCount) int { return cmpExpert(a.E, b.E) })
	keys := make([]pairKey, 0, len(st.Pairs))
	for k := range st.Pairs {
		keys = append(keys, k)
	}
	sortPairs(keys, st.Pairs)
	keys = keys[:min(len(keys), pairs)]
	slices.SortFunc(keys, func(a, b pairKey) int {
		if pairLess(a, b) {
			return -1
		}
		if pairLess(b, a) {
			return 1
		}
		return 0
	})
	for _, k := range keys {
		u.Pairs = append(u.Pairs, wire.ExpertPair{A: k.a, B: k.b, N: clamp32(st.Pairs[k])})
	}
	return u, s.gen
}

func clamp32(n uint64) uint32 { return uint32(min(n, math.MaxUint32)) }

// clusterSet is one Clusters message, indexed for hints.
type clusterSet struct {
	from     string
	version  uint64
	clusters [][]wire.Expert // members sorted by (layer, expert)
	of       map[wire.Expert]int
}

func newClusterSet(c *wire.Clusters) *clusterSet {
	cs := &clusterSet{from: c.Peer, version: c.Version, clusters: c.Clusters, of: map[wire.Expert]int{}}
	for i, cl := range c.Clusters {
		for _, e := range cl {
			cs.of[e] = i
		}
	}
	return cs
}

// ExpertTracker follows one model's expert usage on a node: engine hooks
// (OnRoute records, Hints reads clusters ahead), usage gossip and the
// latest clusters from gatekeepers.
type ExpertTracker struct {
	n      *Node
	id     rdrr.ModelID
	sketch *usageSketch

	mu       sync.Mutex
	cur      *clusterSet
	versions map[string]uint64 // gatekeeper → latest version seen
	seen     map[string]time.Time
	changed  chan struct{} // closed and replaced when clusters change
}

func newTracker(n *Node, id rdrr.ModelID) *ExpertTracker {
	return &ExpertTracker{n: n, id: id, sketch: newUsageSketch(n.opts.Experts.SketchPairs),
		versions: map[string]uint64{}, seen: map[string]time.Time{}, changed: make(chan struct{})}
}

// OnRoute is the engine's routing hook: it records the experts a token
// chose in one MoE layer (a layer not after the previous one starts the
// next token).
func (x *ExpertTracker) OnRoute(layer int, experts []int) { x.sketch.route(layer, experts) }

// Hints is the engine's read-ahead hook: for each chosen expert that
// belongs to a cluster, the cluster's other members, those of later
// layers first (they are needed by this token), then the earlier layers
// (for the next one). At most maxHints.
func (x *ExpertTracker) Hints(layer int, experts []int) []ExpertRef {
	x.mu.Lock()
	cs := x.cur
	x.mu.Unlock()
	if cs == nil || layer < 0 || layer > math.MaxUint16 {
		return nil
	}
	chosen := func(e wire.Expert) bool {
		return int(e.Layer) == layer && slices.Contains(experts, int(e.Expert))
	}
	var out []ExpertRef
	var done []int
	for _, e := range experts {
		if e < 0 || e > math.MaxUint16 {
			continue
		}
		ci, ok := cs.of[wire.Expert{Layer: uint16(layer), Expert: uint16(e)}]
		if !ok || slices.Contains(done, ci) {
			continue
		}
		done = append(done, ci)
		cl := cs.clusters[ci]
		start, _ := slices.BinarySearchFunc(cl, wire.Expert{Layer: uint16(layer) + 1}, cmpExpert)
		if layer == math.MaxUint16 {
			start = len(cl)
		}
		for i := range cl {
			m := cl[(start+i)%len(cl)]
			if chosen(m) {
				continue
			}
			if len(out) == maxHints {
				return out
			}
			out = append(out, ExpertRef{Layer: int(m.Layer), Expert: int(m.Expert)})
		}
	}
	return out
}

// Clusters returns the clusters in use (nil when none came yet), their
// gatekeeper and version.
func (x *ExpertTracker) Clusters() (clusters [][]wire.Expert, from string, version uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.cur == nil {
		return nil, "", 0
	}
	return x.cur.clusters, x.cur.from, x.cur.version
}

// Changed returns a channel closed when the clusters in use change.
func (x *ExpertTracker) Changed() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.changed
}

// Usage returns the node's own usage counts as they would be gossiped.
func (x *ExpertTracker) Usage() *wire.Usage {
	u, _ := x.sketch.usage(x.id, x.n.opts.Experts.GossipPairs)
	u.Peer = x.n.ID()
	return u
}

// accept takes clusters from a gatekeeper unless that gatekeeper already
// sent a newer version.
func (x *ExpertTracker) accept(c *wire.Clusters) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if v, ok := x.versions[c.Peer]; ok && v >= c.Version {
		return
	}
	if _, ok := x.versions[c.Peer]; !ok && len(x.versions) >= maxGatekeepers {
		p := oldestPeer(x.seen)
		delete(x.versions, p)
		delete(x.seen, p)
	}
	x.versions[c.Peer], x.seen[c.Peer] = c.Version, time.Now()
	x.cur = newClusterSet(c)
	close(x.changed)
	x.changed = make(chan struct{})
	if x.n.log != nil {
		x.n.log.Debug("swarm: expert clusters", "model", x.id.Short(), "from", shortID(c.Peer), "version", c.Version, "clusters", len(c.Clusters))
	}
}

// usageLoop gossips the usage every UsageInterval once there is any.
func (x *ExpertTracker) usageLoop(ctx context.Context, gk *gatekeeperModel) {
	o := x.n.opts.Experts
	var seq uint64
	t := time.NewTicker(o.UsageInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Re-sent unchanged too (a new Seq), so gatekeepers that joined
		// later or lost the message get it and their copy does not expire.
		u, gen := x.sketch.usage(x.id, o.GossipPairs)
		if gen == 0 {
			continue
		}
		seq = max(seq+1, uint64(time.Now().UnixNano()))
		u.Seq = seq
		if gk != nil {
			u.Peer = x.n.ID()
			gk.add(u)
		}
		pctx, cancel := context.WithTimeout(ctx, x.n.opts.LookupTimeout)
		err := x.n.host.PublishUsage(pctx, u)
		cancel()
		if err != nil && ctx.Err() == nil {
			x.n.log.Debug("swarm: publish usage", "model", x.id.Short(), "err", err)
		}
	}
}

// gatekeeperModel aggregates one model's usage and publishes clusters.
type gatekeeperModel struct {
	n     *Node
	id    rdrr.ModelID
	dirty chan struct{} // new usage
	greet chan struct{} // a peer joined

	mu       sync.Mutex
	peers    map[string]*wire.Usage
	received map[string]time.Time
	version  uint64
	clusters [][]wire.Expert
}

// add keeps u as its peer's latest usage unless a newer one is held.
func (g *gatekeeperModel) add(u *wire.Usage) {
	g.mu.Lock()
	if old, ok := g.peers[u.Peer]; ok && old.Seq >= u.Seq {
		g.mu.Unlock()
		return
	}
	if _, ok := g.peers[u.Peer]; !ok && len(g.peers) >= maxUsagePeers {
		p := oldestPeer(g.received)
		delete(g.peers, p)
		delete(g.received, p)
	}
	g.peers[u.Peer], g.received[u.Peer] = u, time.Now()
	g.mu.Unlock()
	signal(g.dirty)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// recompute clusters the unexpired usage; it reports whether the clusters
// changed (and then bumps the version).
func (g *gatekeeperModel) recompute() bool {
	o := g.n.opts.Experts
	g.mu.Lock()
	st := newUsageStats()
	for p, u := range g.peers {
		if time.Since(g.received[p]) > o.UsageTTL {
			delete(g.peers, p)
			delete(g.received, p)
			continue
		}
		st.add(u)
	}
	g.mu.Unlock()
	st.prune(maxAggPairs)
	cl := ComputeClusters(st, o.Cluster)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.version != 0 && sameClusters(cl, g.clusters) {
		return false
	}
	if g.version == 0 && len(cl) == 0 {
		return false
	}
	g.clusters = cl
	g.version = max(g.version+1, uint64(time.Now().UnixNano()))
	g.n.log.Info("swarm: gatekeeper clusters", "model", g.id.Short(), "version", g.version, "clusters", len(cl), "peers", len(g.peers))
	return true
}

func (g *gatekeeperModel) publish(ctx context.Context) {
	g.mu.Lock()
	if g.version == 0 {
		g.mu.Unlock()
		return
	}
	c := &wire.Clusters{Model: g.id, Version: g.version, Clusters: g.clusters}
	g.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, g.n.opts.LookupTimeout)
	defer cancel()
	if err := g.n.host.PublishUsage(pctx, c); err != nil && ctx.Err() == nil {
		g.n.log.Debug("swarm: publish clusters", "model", g.id.Short(), "err", err)
	}
}

// loop recomputes on new usage (bursts coalesced over coalesce) and
// publishes on change, every ClustersInterval and when a peer joins.
func (g *gatekeeperModel) loop(ctx context.Context) {
	const coalesce = 50 * time.Millisecond
	t := time.NewTicker(g.n.opts.Experts.ClustersInterval)
	defer t.Stop()
	for {
		var changed, again bool
		select {
		case <-ctx.Done():
			return
		case <-g.dirty:
			d := time.NewTimer(coalesce)
			select {
			case <-ctx.Done():
				d.Stop()
				return
			case <-d.C:
			}
			changed = g.recompute()
		case <-g.greet:
			again = true
		case <-t.C:
			again = true
		}
		if changed || again {
			g.publish(ctx)
		}
	}
}

// experts is a node's per-model usage state.
type experts struct {
	once   sync.Once // fills NodeOptions.Experts
	mu     sync.Mutex
	models map[rdrr.ModelID]*ExpertTracker
}

// Experts returns the expert tracker of a model, subscribing to the
// model's usage topic and starting its usage gossip on first use (and,
// on a gatekeeper, the aggregation). Hook its OnRoute and Hints into the
// engine that runs the model.
func (n *Node) Experts(id rdrr.ModelID) (*ExpertTracker, error) {
	n.xp.once.Do(n.opts.Experts.fill)
	n.xp.mu.Lock()
	defer n.xp.mu.Unlock()
	if x, ok := n.xp.models[id]; ok {
		return x, nil
	}
	o := &n.opts.Experts
	x := newTracker(n, id)
	var gk *gatekeeperModel
	if o.Gatekeeper {
		gk = &gatekeeperModel{n: n, id: id, dirty: make(chan struct{}, 1), greet: make(chan struct{}, 1),
			peers: map[string]*wire.Usage{}, received: map[string]time.Time{}}
	}
	handle := func(m wire.Message) {
		switch v := m.(type) {
		case *wire.Usage:
			if gk != nil {
				gk.add(v)
			}
		case *wire.Clusters:
			x.accept(v)
		}
	}
	var onJoin func(string)
	if gk != nil {
		onJoin = func(string) { signal(gk.greet) }
	}
	if err := n.host.SubscribeUsage(n.ctx, id, handle, onJoin); err != nil {
		return nil, err
	}
	if n.xp.models == nil {
		n.xp.models = map[rdrr.ModelID]*ExpertTracker{}
	}
	n.xp.models[id] = x
	n.goBackground(func() { x.usageLoop(n.ctx, gk) })
	if gk != nil {
		n.goBackground(func() { gk.loop(n.ctx) })
	}
	return x, nil
}

// gatekeep starts the gatekeeper of a model the node begins to follow
// (called from track, with n.mu held: it does not block).
func (n *Node) gatekeep(id rdrr.ModelID) {
	if !n.opts.Experts.Gatekeeper {
		return
	}
	n.goBackground(func() {
		if _, err := n.Experts(id); err != nil && n.ctx.Err() == nil {
			n.log.Warn("swarm: gatekeeper", "model", id.Short(), "err", err)
		}
	})
}

// oldestPeer returns the peer heard from longest ago in heard ("" if
// none): the one a full table drops to make room.
func oldestPeer(heard map[string]time.Time) string {
	var oldest string
	for p, t := range heard {
		if oldest == "" || t.Before(heard[oldest]) {
			oldest = p
		}
	}
	return oldest
}
