package swarmbench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/swarm"
)

// inRun is one in-process run (loopback or sim): the seed and the honest
// and malicious peers, every one a real swarm.Node (the malicious ones
// bare libp2p hosts running RunEvil) in this process.
type inRun struct {
	e   *runEnv
	o   *Options
	sim *simNet // nil on loopback
	rng *rand.Rand
	// maxOpen bounds the shard files each store keeps open (0: the default).
	maxOpen int

	seed *member
	mu   sync.Mutex
	// honest holds every honest peer started: the first plan.honest
	// ones, then the replacements of the churned.
	honest []*member
	evil   []host.Host
	t0     time.Time
}

// member is one honest node (or the seed) and its pull.
type member struct {
	name   string
	dir    string
	store  *swarm.Store
	node   *swarm.Node
	victim bool               // churned: killed mid-transfer
	cancel context.CancelFunc // ends its pull
	ended  chan struct{}      // closed when its pull returned
	took   time.Duration      // from t0 to the pull's end
	err    error
	closed bool
	up     time.Time // when its node started
	// What it measured, read at the end of the p2p phase or at its kill.
	stats     p2p.Stats
	peerStats []swarm.PeerStats
}

// runInProcess runs ModeLoopback and ModeSim.
func runInProcess(ctx context.Context, e *runEnv) error {
	o := e.o
	r := &inRun{e: e, o: o, rng: rand.New(rand.NewPCG(o.Seed, 0x51))}
	// Every node's files: one per shard it serves, two per shard it
	// fetches (data and sidecar; 8 requests in flight) and, on loopback,
	// its TCP connections. When the process may not hold that many (a
	// thousand simulated stores of 16 shards against a hard limit of
	// 20,000: 941 pulls failed with "too many open files"), each store
	// keeps fewer shard files open (swarm.StoreOptions.MaxOpenFiles).
	nodes := 1 + e.plan.honest + len(e.plan.evil) + len(e.plan.killAt)
	conns := 0
	if o.Mode == ModeLoopback {
		conns = min(nodes-1, 64)
	}
	files := len(e.man.Shards) + 16
	if limit, err := raiseOpenFiles(uint64(nodes*(files+conns)) + 1024); err != nil {
		files = max(4, (int(limit)-1024)/nodes-conns)
		fmt.Fprintf(o.Progress, "open files: %v; each store keeps at most %d shard files open\n", err, files)
		r.maxOpen = files
	}
	if o.Mode == ModeSim {
		r.sim = newSimNet(o.Rate, o.Latency)
		defer r.sim.Close()
	}
	defer r.closeAll()
	if err := r.p2p(ctx); err != nil {
		return err
	}
	if o.NoHTTP {
		return nil
	}
	return httpBaseline(ctx, e)
}

// hostOptions are a new node's host options: its own loopback host, or
// a shaped host on the simulated network.
func (r *inRun) hostOptions() (p2p.Options, error) {
	if r.sim == nil {
		return p2p.Options{Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: r.o.Logger, UploadSlots: r.o.UploadSlots}, nil
	}
	h, err := r.sim.host()
	if err != nil {
		return p2p.Options{}, err
	}
	return p2p.Options{Libp2p: h, NoDHT: true, Logger: r.o.Logger, UploadSlots: r.o.UploadSlots}, nil
}

// start opens a store in Dir/name (the seed's with the model imported)
// and starts a node on it.
func (r *inRun) start(ctx context.Context, name string, fetchSeed uint64, isSeed bool) (*member, error) {
	m := &member{name: name, dir: filepath.Join(r.o.Dir, name), ended: make(chan struct{})}
	log := r.o.Logger.With("node", name)
	s, err := swarm.Open(m.dir, swarm.StoreOptions{Logger: log, MaxOpenFiles: r.maxOpen})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if isSeed {
		if _, err := s.ImportDir(ctx, r.e.src); err != nil {
			s.Close()
			return nil, fmt.Errorf("%s: import: %w", name, err)
		}
	}
	hopts, err := r.hostOptions()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: host: %w", name, err)
	}
	hopts.Logger = log
	if isSeed {
		hopts.SuperSeed = p2p.SeedSpread // as doppler seed
	}
	n, err := swarm.NewNode(ctx, s, swarm.NodeOptions{Host: hopts, Logger: log,
		Fetch: swarm.FetchOptions{Seed: fetchSeed, WaitPeers: time.Minute, PerPeer: r.o.PerPeer, Parallel: r.o.Parallel,
			RequestTimeout: r.o.RequestTimeout}}) // as doppler node --pull
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: node: %w", name, err)
	}
	m.store, m.node, m.up = s, n, time.Now()
	return m, nil
}

// bootstrap is whom peer self dials: the seed and, in sim, Degree
// random other peers that are up.
func (r *inRun) bootstrap(self *member) []string {
	addrs := []string{r.seed.node.Addrs()[0]}
	if r.sim == nil {
		return addrs
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var live []*member
	for _, m := range r.honest {
		if !m.closed && m != self {
			live = append(live, m)
		}
	}
	for _, i := range r.rng.Perm(len(live))[:min(r.o.Degree, len(live))] {
		addrs = append(addrs, live[i].node.Addrs()[0])
	}
	return addrs
}

// pull starts m's pull of the model in the background; wg counts it.
func (r *inRun) pull(ctx context.Context, m *member, wg *sync.WaitGroup) {
	pctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	addrs := r.bootstrap(m)
	wg.Go(func() {
		defer close(m.ended)
		err := m.node.Pull(pctx, r.e.id, swarm.PullOptions{Peers: addrs})
		r.mu.Lock()
		m.err, m.took = err, time.Since(r.t0)
		r.mu.Unlock()
	})
}

// kill closes m abruptly mid-transfer: its connections drop, its pull
// ends, and its store is closed as it was.
func (r *inRun) kill(m *member) {
	m.stats, m.peerStats = m.node.Host().Stats(), m.store.PeerStats()
	m.node.Close()
	m.cancel()
	<-m.ended
	m.store.Close()
	r.mu.Lock()
	m.closed, m.victim = true, true
	r.mu.Unlock()
}

// startEvil starts the malicious peers, each connected to the seed and
// to some honest peers (every one on loopback, 2×Degree in sim); gossip
// makes them known to the rest.
func (r *inRun) startEvil(ctx context.Context) error {
	for i, kind := range r.e.plan.evil {
		var h host.Host
		var err error
		if r.sim != nil {
			h, err = r.sim.host()
		} else {
			h, err = libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
		}
		if err != nil {
			return fmt.Errorf("malicious peer %d: %w", i, err)
		}
		r.evil = append(r.evil, h)
		targets := []*member{r.seed}
		if r.sim == nil {
			targets = append(targets, r.honest...)
		} else {
			for _, j := range r.rng.Perm(len(r.honest))[:min(2*r.o.Degree, len(r.honest))] {
				targets = append(targets, r.honest[j])
			}
		}
		var infos []peer.AddrInfo
		for _, m := range targets {
			ai, err := peer.AddrInfoFromString(m.node.Addrs()[0])
			if err != nil {
				return err
			}
			infos = append(infos, *ai)
		}
		go func() {
			if err := RunEvil(ctx, h, kind, r.e.src, r.e.id, infos); err != nil {
				r.o.Logger.Warn("swarmbench: malicious peer", "kind", kind, "err", err)
			}
		}()
	}
	return nil
}

// p2p runs the swarm phase and fills the p2p figures of the Result.
func (r *inRun) p2p(ctx context.Context) error {
	o, e, res := r.o, r.e, r.e.res
	var err error
	if r.seed, err = r.start(ctx, "seed", 1<<32, true); err != nil {
		return err
	}
	for i := range e.plan.honest {
		m, err := r.start(ctx, fmt.Sprintf("peer%d", i), uint64(i+1), false)
		if err != nil {
			return err
		}
		r.honest = append(r.honest, m)
	}
	ectx, stopEvil := context.WithCancel(ctx)
	defer stopEvil()
	if err := r.startEvil(ectx); err != nil {
		return err
	}
	if o.Browsers > 0 {
		defer o.BrowserFleet.Close()
		if err := o.BrowserFleet.Start(ctx, BrowserSeed{Model: e.id, Store: r.seed.store, Node: r.seed.node}, o.Browsers); err != nil {
			return fmt.Errorf("browsers: %w", err)
		}
	}
	fmt.Fprintf(o.Progress, "%s: seed, %d honest and %d malicious peers, %d browsers started\n", o.Mode, e.plan.honest, len(e.plan.evil), o.Browsers)

	pctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	r.t0 = time.Now()
	cpu0 := cpuTime()
	for _, m := range r.honest {
		r.pull(pctx, m, &wg)
	}
	var browsers *BrowserRun
	if o.Browsers > 0 {
		wg.Go(func() { browsers = r.browsers(pctx) })
	}
	victims := r.rng.Perm(len(r.honest))[:len(e.plan.killAt)]
	for k, vi := range victims {
		v, at := r.honest[vi], e.plan.killAt[k]
		wg.Go(func() {
			t := time.NewTimer(time.Until(r.t0.Add(at)))
			defer t.Stop()
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			r.kill(v)
			fmt.Fprintf(o.Progress, "%6.1fs: churn: %s killed\n", time.Since(r.t0).Seconds(), v.name)
			m, err := r.start(pctx, fmt.Sprintf("fresh%d", k), uint64(1<<16+k), false)
			if err != nil {
				o.Logger.Warn("swarmbench: fresh peer", "err", err)
				return
			}
			r.mu.Lock()
			r.honest = append(r.honest, m)
			r.mu.Unlock()
			r.pull(pctx, m, &wg)
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			r.mu.Lock()
			n, up := 0, 0
			var down, gossip uint64
			for _, m := range r.honest {
				if !m.victim && m.took > 0 && m.err == nil {
					n++
				}
				if !m.closed {
					st := m.node.Host().Stats()
					down += st.Downloaded
					gossip += st.Gossip.BytesSent
					up++
				}
			}
			r.mu.Unlock()
			el := time.Since(r.t0).Seconds()
			copies := float64(down) / float64(res.ModelBytes)
			seed := r.seed.node.Host().Stats()
			seedUp := float64(seed.Uploaded) / float64(res.ModelBytes)
			fmt.Fprintf(o.Progress, "%6.1fs: %d/%d honest peers complete; %.1f copies downloaded, seed sent %.2f; gossip sent: seed %s, a peer %s; %.2f cores busy\n",
				el, n, e.plan.honest, copies, seedUp, human(int64(seed.Gossip.BytesSent)),
				human(int64(gossip)/int64(max(up, 1))), (cpuTime()-cpu0).Seconds()/el)
		}
	}
	wall, cpu := time.Since(r.t0), cpuTime()-cpu0
	if o.Browsers > 0 {
		o.BrowserFleet.Close() // before the seed's store closes
	}

	// Figures, read while every node is still up.
	total := float64(res.ModelBytes)
	res.SeedUploadRatio = float64(r.seed.node.Host().Stats().Uploaded) / total
	var last time.Duration
	var gossipMsgs, gossipBytes float64
	for _, m := range r.honest {
		if m.victim {
			res.Churned++
			continue
		}
		m.stats, m.peerStats = m.node.Host().Stats(), m.store.PeerStats()
		g, mins := m.stats.Gossip, time.Since(m.up).Minutes()
		gossipMsgs += float64(g.MessagesSent+g.MessagesReceived) / mins
		gossipBytes += float64(g.BytesSent+g.BytesReceived) / mins
		if m.err != nil {
			res.Failed = append(res.Failed, fmt.Sprintf("%s: %v", m.name, m.err))
			last = max(last, wall)
			continue
		}
		last = max(last, m.took)
		res.MaxDownloadRatio = max(res.MaxDownloadRatio, float64(m.stats.Downloaded)/total)
	}
	if n := float64(len(r.honest) - res.Churned); n > 0 {
		res.GossipMsgsPerPeerMin, res.GossipBytesPerPeerMin = gossipMsgs/n, gossipBytes/n
	}
	res.P2PSeconds = last.Seconds()
	if browsers != nil {
		addBrowsers(res, browsers, wall)
		last = time.Duration(res.P2PSeconds * float64(time.Second))
	}
	if last > 0 {
		res.CPUCoresBusy = cpu.Seconds() / wall.Seconds()
	}
	r.countBans()
	stopEvil()
	r.closeAll()
	return r.checkStores()
}

// countBans fills Banned, BadSenders and Unbanned from what every honest
// peer measured of its sources.
func (r *inRun) countBans() {
	res := r.e.res
	evil := map[string]bool{}
	for _, h := range r.evil {
		evil[h.ID().String()] = true
	}
	banned, senders := map[string]bool{}, map[string]bool{}
	for _, m := range r.honest {
		for _, ps := range m.peerStats {
			dropped := slices.Contains(ps.Dropped, r.e.id)
			if ps.BadBlocks > 0 {
				senders[ps.ID] = true
				if !dropped {
					res.Unbanned++
				}
			}
			if dropped && evil[ps.ID] {
				banned[ps.ID] = true
			}
		}
	}
	res.Banned, res.BadSenders = len(banned), len(senders)
}

// closeAll stops every node still up (the seed, the peers, the malicious
// hosts), a few at a time. It may be called again.
func (r *inRun) closeAll() {
	r.mu.Lock()
	ms := slices.Clone(r.honest)
	r.mu.Unlock()
	if r.seed != nil {
		ms = append(ms, r.seed)
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, m := range ms {
		if m.closed {
			continue
		}
		m.closed = true
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			m.node.Close()
			if m.cancel != nil {
				m.cancel()
				<-m.ended
			}
			m.store.Close()
		})
	}
	for _, h := range r.evil {
		h.Close()
	}
	r.evil = r.evil[:0:0]
	wg.Wait()
}

// checkStores checks every honest store, the churned ones' included,
// block by block (the nodes are closed), and counts the complete ones.
func (r *inRun) checkStores() error {
	res := r.e.res
	var errs []error
	for _, m := range r.honest {
		c, err := CheckStore(m.dir, r.e.id, r.e.man)
		if err != nil {
			errs = append(errs, fmt.Errorf("check %s: %w", m.name, err))
			continue
		}
		res.BadBytesStored += c.BadBytes
		if !m.victim && m.err == nil && c.Complete && c.BadBytes == 0 {
			res.HonestComplete++
		}
		if c.BadBytes > 0 {
			r.o.Logger.Error("swarmbench: bad bytes stored", "peer", m.name, "bytes", c.BadBytes, "shards", len(c.BadShards))
		}
	}
	return errors.Join(errs...)
}
