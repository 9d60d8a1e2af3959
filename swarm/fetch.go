package swarm

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// ErrNoPeers is returned by Fetch when no peer could supply the missing
// shards for FetchOptions.WaitPeers.
var ErrNoPeers = errors.New("no peer holds the missing shards")

// FetchOptions tunes Fetch. Zero values take the defaults shown.
type FetchOptions struct {
	Parallel         int // requests in flight in all (8)
	PerPeer          int // requests in flight to one peer (2)
	BlocksPerRequest int // blocks asked for in one request (16)
	// RequestTimeout is the floor of the stall timeout: a request is cut
	// off when no block arrives for max(RequestTimeout × 2^s, StallFactor ×
	// the time the peer's measured latency and throughput need for the
	// request's outstanding bytes), s being the peer's stalls in a row in
	// this fetch (at most 3). A slow link is thus waited for; only a peer
	// that stops making progress is cut off (10s).
	RequestTimeout time.Duration
	StallFactor    float64 // see RequestTimeout (3)
	// EndgameBlocks: when every missing block is already requested and at
	// most this many remain, idle peers are asked for the same blocks, one
	// block a request, the block expected last first; the first verified
	// copy wins and the others are cancelled (2×BlocksPerRequest).
	EndgameBlocks int
	// EndgameShare bounds the endgame: the blocks it asks of a second or
	// third peer add up to at most this share of the bytes the fetch
	// needs (at least one block), so a node downloads about 1 +
	// EndgameShare times what it lacks at most (0.02). A slow copy beyond
	// that is left to the stall detector.
	EndgameShare float64
	// MaxFailures consecutive failed requests (stall, error, short answer,
	// the peer going away) set a peer aside for Backoff; each time it is
	// set aside again the wait doubles, up to MaxBackoff. Then it is asked
	// again: a failure sets it aside again at once, a success clears its
	// record (3). Only a bad block drops a peer for the model.
	MaxFailures int
	Backoff     time.Duration // first set-aside (1s)
	MaxBackoff  time.Duration // longest set-aside (30s)
	// WaitPeers is how long Fetch waits, with nothing in flight and no
	// block arriving, while no peer it can reach holds a missing shard. A
	// peer counts as reachable while it is in the PeerSet, holds a missing
	// shard, has not sent a bad block and its latest request did not end
	// in an error of the connection (a set-aside, slow or busy peer is
	// still reachable) (30s).
	WaitPeers time.Duration
	// Poll is how often the PeerSet is read again while waiting (250ms).
	Poll time.Duration
	// Changed, when not nil, wakes the scheduling pass at once whenever a
	// value arrives: what a peer holds changed (Node: a watched peer
	// pushed its inventory), so a new block is asked for without waiting
	// for the next Poll.
	Changed <-chan struct{}
	// MaxPeers bounds the peers a fetch asks for blocks at one time, its
	// active set (48). Every peer of the PeerSet still counts in the
	// survey (who holds what, the territories), but the choice of whom to
	// ask, made on every pass, looks at the active set alone, so a pass
	// costs the same in a swarm of 50 peers or 5,000. The set keeps the
	// seeds, the peers with requests in flight and the members that still
	// hold something missing; the rest of its places go to other holders
	// at random, and one non-essential member is swapped for an outsider
	// at every survey, so every holder gets its turn.
	MaxPeers int
	// Progress, when set, is called (serially, throttled) with the verified
	// bytes of the model held, its total size, and the peers in use.
	Progress func(done, total int64, peers int)
	// Shards, when not empty, limits the fetch to these shards of the
	// model (the others are neither fetched nor waited for).
	Shards []rdrr.Hash
	Clock  Clock  // the wall clock by default
	Seed   uint64 // shuffles ties between equally rare shards; 0 = from the clock
}

func (o *FetchOptions) fill() {
	if o.Parallel <= 0 {
		o.Parallel = 8
	}
	if o.PerPeer <= 0 {
		o.PerPeer = 2
	}
	if o.BlocksPerRequest <= 0 {
		o.BlocksPerRequest = 16
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.StallFactor <= 0 {
		o.StallFactor = 3
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.Backoff)
	if o.EndgameBlocks <= 0 {
		o.EndgameBlocks = 2 * o.BlocksPerRequest
	}
	if o.EndgameShare <= 0 {
		o.EndgameShare = 0.02
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = 3
	}
	if o.WaitPeers <= 0 {
		o.WaitPeers = 30 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.MaxPeers <= 0 {
		o.MaxPeers = 48
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
}

// maxCopies bounds how many peers are asked for one block in the endgame.
const maxCopies = 3

// FetchStats are cumulative counters of every Fetch on a store.
type FetchStats struct {
	Requests  int   // requests sent
	Endgame   int   // of which endgame duplicates
	Cancelled int   // requests cancelled because other copies won
	Requeued  int   // blocks put back to be asked elsewhere (failed requests)
	SetAside  int   // times a peer was set aside after MaxFailures failures
	Busy      int   // requests answered busy (the peer's upload slots were full)
	Bytes     int64 // verified bytes written by fetches
}

// fshard is a shard being fetched.
type fshard struct {
	sh         rdrr.Shard
	idx        int // in the manifest's shard table
	have       []bool
	copies     []int // requests in flight that have not delivered the block
	missing    int
	completing bool
	done       bool
}

type request struct {
	peer    Peer
	id      string
	fs      *fshard
	first   int
	count   int
	got     []bool
	ngot    int
	endgame bool
	seed    bool // to a seed (see seedReqs)
	cancel  context.CancelFunc
	// superseded: cancelled because other copies of its blocks won.
	superseded bool
	timedOut   atomic.Bool
	bad        error // the bad block it sent, if any
	start      time.Time
	firstAt    time.Time
	lastAt     time.Time
	bytes      int64
	floor      time.Duration // the stall timeout's floor for this request
}

type fetcher struct {
	s     *Fetcher
	bs    BlockStore
	id    rdrr.ModelID
	peers PeerSet
	o     FetchOptions
	log   *slog.Logger
	ctx   context.Context
	wg    sync.WaitGroup
	wake  chan struct{}

	all     []rdrr.Hash // every shard of the model, in manifest order
	whole   bool        // fetching the whole model: territories apply
	selfKey uint64      // this node's place on the territory ring

	mu        sync.Mutex
	shards    []*fshard
	byIndex   []*fshard // by manifest index; nil where not fetched
	seen      map[string]*seenPeer
	idleSince time.Time // when the last request in flight ended
	began     time.Time // when the scheduling loop started
	order     []int     // tie-break order of shards (random)
	reqs      map[*request]bool
	perPeer   map[string]int
	// seedReqs counts the requests in flight to seeds: while one is, a
	// whole-model fetch keeps at most seedCompanions others (see best).
	seedReqs  int
	fails     map[string]int      // failed requests in a row, per peer
	stalls    map[string]int      // stalled requests in a row, per peer
	aside     map[string]setAside // peers set aside after failures
	busy      map[string]busyPeer // peers that answered busy: not asked until
	bad       map[string]bool     // peers that sent a bad block
	down      map[string]bool     // peers whose latest request failed on the connection
	done      int64
	total     int64
	lastBlock time.Time
	// partBlocks, per shard of the model: the blocks other peers were
	// last seen holding of it partly (summed over them); partGrew: when
	// that sum last changed. A shard whose sum has not moved for the
	// fallback wait has an owner that is not fetching it (gone, or set
	// on other work).
	partBlocks []int
	partGrew   []time.Time
	// dupBytes: bytes asked of endgame duplicates so far, at most dupBudget.
	dupBytes, dupBudget int64
	// lastHolder: when a scheduling pass last saw a reachable peer (see
	// FetchOptions.WaitPeers) holding a missing shard.
	lastHolder time.Time
	// surveyed: the latest survey, of surveyedPeers peers, taken at
	// surveyedAt; passes reuse it for surveyEvery.
	surveyed      *view
	surveyedAt    time.Time
	surveyedPeers int
	// active: the peers of the active set (MaxPeers) chosen at the latest
	// survey; nil while every peer fits.
	active   map[string]bool
	rng      *rand.Rand
	fatal    error
	progMu   sync.Mutex
	lastProg time.Time
}

// BlockStore is what a Fetcher writes verified blocks into: the node's
// Store, or the browser client's OPFS store.
type BlockStore interface {
	// Has reports whether shard h is held complete.
	Has(h rdrr.Hash) bool
	// HaveBlocks returns which blocks of shard h are held (nil: a shard of
	// no model the store knows).
	HaveBlocks(h rdrr.Hash) []bool
	// PutBlock hashes block index of shard h and keeps it; a block that
	// does not match the manifest is an error wrapping rdrr.ErrBadBlock,
	// and wrote is false when the block was held already.
	PutBlock(h rdrr.Hash, index int, data []byte) (wrote bool, err error)
	// Complete checks a shard whose every block is held and makes it
	// complete; ErrIncomplete (with HaveBlocks updated) sends the fetch
	// back for the blocks found bad.
	Complete(h rdrr.Hash) error
}

// Fetcher downloads models' shards into a BlockStore with the swarm's
// policy (rarest first, territories, several sources per shard, endgame,
// stalled requests cut off, bad peers dropped). What it learns of peers
// (speed, failures, peers dropped per model) lasts across fetches. It
// builds for GOOS=js: the browser client fetches with it.
type Fetcher struct {
	bs    BlockStore
	log   *slog.Logger
	peers *peerTable

	mu sync.Mutex
	st FetchStats
}

// FetcherOptions configures a Fetcher.
type FetcherOptions struct {
	Logger *slog.Logger
}

// NewFetcher returns a Fetcher writing into bs.
func NewFetcher(bs BlockStore, o FetcherOptions) *Fetcher {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Fetcher{bs: bs, log: log, peers: newPeerTable()}
}

// Stats returns the cumulative counters of the fetcher's fetches.
func (fr *Fetcher) Stats() FetchStats {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return fr.st
}

// PeerStats reports what the fetcher knows of each peer it has used.
func (fr *Fetcher) PeerStats() []PeerStats { return fr.peers.snapshot() }

func (fr *Fetcher) count(f func(st *FetchStats)) {
	fr.mu.Lock()
	f(&fr.st)
	fr.mu.Unlock()
}

// Fetch downloads every shard of model id (whose manifest is already in
// the store) that the store lacks, from the peers of peers, verifying each
// block before it is written. It resumes from the blocks already held
// (including a partial shard left by an earlier run), prefers the rarest
// shards, splits a shard's missing blocks into ranges fetched from several
// peers, cuts off requests that stall, drops for this model a peer that
// sends a bad block, and returns nil only when every shard is complete.
func (s *Store) Fetch(ctx context.Context, id rdrr.ModelID, peers PeerSet, opts FetchOptions) error {
	m, ok := s.manifest(id)
	if !ok {
		return fmt.Errorf("model %s: %w", id.Short(), ErrUnknownModel)
	}
	unpin := s.pinModel(m)
	defer unpin()
	var need int64
	for _, sh := range m.Shards {
		if len(opts.Shards) > 0 && !slices.Contains(opts.Shards, sh.Hash) || s.Has(sh.Hash) {
			continue
		}
		if !slices.Contains(s.HaveBlocks(sh.Hash), true) {
			need += sh.Size
		}
	}
	if err := s.makeRoom(need, nil); err != nil {
		return err
	}
	return s.fetch.Fetch(ctx, id, m, peers, opts)
}

// Fetch downloads every shard of model id (manifest m) that the
// BlockStore lacks, as Store.Fetch does.
func (fr *Fetcher) Fetch(ctx context.Context, id rdrr.ModelID, m *rdrr.Manifest, peers PeerSet, opts FetchOptions) error {
	opts.fill()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := &fetcher{
		s: fr, bs: fr.bs, id: id, peers: peers, o: opts, log: fr.log.With("model", id.Short()), ctx: ctx,
		wake: make(chan struct{}, 1), reqs: map[*request]bool{}, perPeer: map[string]int{},
		fails: map[string]int{}, stalls: map[string]int{}, aside: map[string]setAside{}, busy: map[string]busyPeer{}, bad: map[string]bool{},
		down: map[string]bool{}, seen: map[string]*seenPeer{},
		whole: len(opts.Shards) == 0, byIndex: make([]*fshard, len(m.Shards)),
		partBlocks: make([]int, len(m.Shards)), partGrew: make([]time.Time, len(m.Shards)),
	}
	only := map[rdrr.Hash]bool{}
	for _, h := range opts.Shards {
		only[h] = true
	}
	for i, sh := range m.Shards {
		f.all = append(f.all, sh.Hash)
		if len(only) > 0 && !only[sh.Hash] {
			continue
		}
		f.total += sh.Size
		if f.bs.Has(sh.Hash) {
			f.done += sh.Size
			continue
		}
		fs := &fshard{sh: sh, idx: i, have: f.bs.HaveBlocks(sh.Hash), copies: make([]int, len(sh.Blocks))}
		if fs.have == nil {
			return fmt.Errorf("shard %s: %w", sh.Hash.Short(), ErrUnknownShard)
		}
		f.count(fs)
		f.shards = append(f.shards, fs)
		f.byIndex[i] = fs
	}
	var largest int64
	for _, fs := range f.shards {
		largest = max(largest, fs.sh.BlockSize)
	}
	f.dupBudget = max(largest, int64(opts.EndgameShare*float64(f.total-f.done)))
	seed := opts.Seed
	if seed == 0 {
		seed = uint64(opts.Clock.Now().UnixNano())
	}
	f.rng = rand.New(rand.NewPCG(seed, 0xf37c4))
	f.order = f.rng.Perm(len(f.shards))
	// This node's place on the territory ring: from its peer ID when the
	// PeerSet has one (a Node), else from the seed.
	if self, ok := peers.(interface{ ID() string }); ok {
		f.selfKey = peerKey(id, self.ID())
	} else {
		f.selfKey = peerKey(id, fmt.Sprint(seed))
	}
	// Shards held whole (left by a run that stopped before Complete) are
	// checked and completed before anything is asked for.
	for _, fs := range f.shards {
		if fs.missing == 0 {
			fs.completing = true
			f.complete(fs)
		}
	}
	err := f.run()
	cancel()
	f.drain()
	if err != nil {
		return err
	}
	f.progress(true)
	return nil
}

// drain waits for the requests, which watch the cancelled ctx, to return;
// a Peer that ignores ctx is abandoned after a bounded wait (and logged).
func (f *fetcher) drain() {
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	limit := f.o.RequestTimeout<<3 + 5*time.Second
	timeout := make(chan struct{})
	t := f.o.Clock.AfterFunc(limit, func() { close(timeout) })
	defer t.Stop()
	select {
	case <-done:
	case <-timeout:
		f.log.Error("swarm: requests still running after cancel; a Peer ignores its context", "waited", limit)
	}
}

// count recomputes fs.missing and adds the held bytes to f.done.
func (f *fetcher) count(fs *fshard) {
	fs.missing = 0
	for i, ok := range fs.have {
		if ok {
			f.done += int64(fs.sh.BlockLen(i))
		} else {
			fs.missing++
		}
	}
}

func (f *fetcher) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// run is the scheduling loop: assign work, then wait for a request to end,
// a block to complete a shard, or the poll tick. It ends when every shard
// is complete, on a fatal error, when ctx ends, or after WaitPeers with
// nothing in flight and no reachable peer holding a missing shard.
func (f *fetcher) run() error {
	clock := f.o.Clock
	f.lastBlock = clock.Now()
	f.began = f.lastBlock
	f.idleSince = f.lastBlock
	f.lastHolder = f.lastBlock
	var lastPass time.Time
	for {
		f.mu.Lock()
		if f.fatal != nil {
			err := f.fatal
			f.mu.Unlock()
			return err
		}
		left := 0
		for _, fs := range f.shards {
			if !fs.done {
				left++
			}
		}
		if left == 0 {
			f.mu.Unlock()
			return nil
		}
		f.schedule()
		lastPass = clock.Now()
		idle := len(f.reqs) == 0
		waited := clock.Now().Sub(maxTime(f.lastBlock, f.lastHolder))
		f.mu.Unlock()
		if idle && waited > f.o.WaitPeers {
			return fmt.Errorf("model %s: %d shards missing, no reachable peer held one for %v: %w", f.id.Short(), left, f.o.WaitPeers, ErrNoPeers)
		}
		tick := make(chan struct{})
		t := clock.AfterFunc(f.o.Poll, func() { close(tick) })
		select {
		case <-f.ctx.Done():
			t.Stop()
			return f.ctx.Err()
		case <-f.wake:
		case <-f.o.Changed:
			// An inventory change alone: the pass waits for the gap since the
			// last one and takes the changes that arrive meanwhile with it.
			if d := changeGap - clock.Now().Sub(lastPass); d > 0 {
				gap := make(chan struct{})
				gt := clock.AfterFunc(d, func() { close(gap) })
				select {
				case <-f.ctx.Done():
				case <-f.wake:
				case <-gap:
				}
				gt.Stop()
			}
		case <-tick:
		}
		t.Stop()
	}
}

// changeGap is the least time between a scheduling pass and the next one
// an inventory change alone starts: with watches, a fetch on a 100-peer
// swarm was woken by a change ~10 times a second, three passes in four,
// and surveying every peer's inventory at each took a quarter of the
// swarm's CPU (docs/swarm-bench.md). A change within the gap rides along
// with the next pass; a freed request slot still starts one at once.
const changeGap = 50 * time.Millisecond

// candidate is a usable peer in one scheduling pass.
type candidate struct {
	p   Peer
	id  string
	has []bool // per shard of the model (f.all): announced complete
	// part, per shard of the model (nil when none): the blocks of a shard
	// this fetch lacks that the peer holds only partly, set only when they
	// include a block the fetch is missing (PartialSet).
	part []wire.Bitmap
	n    int     // shards held
	seed bool    // held every shard when this fetch first saw it
	load float64 // requests the swarm is expected to send it (see survey)
}

// seenPeer is what a fetch remembers of a peer from its first sighting.
type seenPeer struct {
	seed  bool // held every shard: a seed, whose upload is the scarce resource
	first int  // shards held then
	// fetcher: held nothing then, or its holdings changed since: a peer
	// that is itself downloading the model (and so gets a territory).
	fetcher bool
	// mark: its shards held complete and blocks held of partial ones, as
	// last seen; changed: when mark last changed.
	mark    [2]int
	changed time.Time
}

// view is one scheduling pass's picture of the swarm.
type view struct {
	cands   []candidate
	holders []int // per shard of the model
	// Territory: the model's shards, rotated by offset, are split into M
	// equal runs among the fetchers sorted by key; this node is rank r.
	offset, rank, fetchers int
	fallback               bool // idle long enough to ask a seed outside the territory
	// fallbackBusy: idle so long that a seed is asked outside the
	// territory even for a shard another peer is fetching (started).
	fallbackBusy bool
	// started, per shard: a peer other than a seed holds a block of it
	// (complete or partly), so its owner is fetching it.
	started []bool
	// peerHeld, per shard: a peer other than a seed, not set aside or busy
	// at the survey, holds it (complete, or a block the fetch is missing),
	// among all the peers surveyed, not only the active set.
	peerHeld []bool
	wait     time.Duration // the fallback wait (fallbackWait) at the survey
}

// pos is shard s's place in the rotated order; start is the first place
// of this node's territory.
func (v *view) pos(s int) int   { n := len(v.holders); return ((s-v.offset)%n + n) % n }
func (v *view) start() int      { n := len(v.holders); return (v.rank*n + v.fetchers - 1) / v.fetchers }
func (v *view) mine(s int) bool { return v.pos(s)*v.fetchers/len(v.holders) == v.rank }

// rot orders shards from the start of this node's territory, wrapping.
func (v *view) rot(s int) int { n := len(v.holders); return (v.pos(s) - v.start() + n) % n }

// seedOnly reports whether every holder of shard s is a seed: no other
// peer holds it complete or holds a block of it this fetch is missing,
// neither among all the peers surveyed (peerHeld) nor in the active set
// as it stands this pass.
func (v *view) seedOnly(s int) bool {
	if v.peerHeld != nil && v.peerHeld[s] {
		return false
	}
	for _, c := range v.cands {
		if (c.has[s] || c.partly(s)) && !c.seed {
			return false
		}
	}
	return true
}

// partly reports whether the candidate holds shard s only partly, with a
// block the fetch is missing among its blocks.
func (c *candidate) partly(s int) bool { return c.part != nil && c.part[s].N > 0 }

// blocks returns the blocks of shard s the candidate can be asked for:
// the zero Bitmap (every block) when it holds the shard complete.
func (c *candidate) blocks(s int) wire.Bitmap {
	if c.has[s] || c.part == nil {
		return wire.Bitmap{}
	}
	return c.part[s]
}

// supplies reports whether held (a partial holder's blocks; N == 0: every
// block) includes a block of fs that is missing and, outside the endgame,
// not asked for yet (in the endgame: asked of fewer than maxCopies).
func supplies(fs *fshard, held wire.Bitmap, endgame bool) bool {
	for b, ok := range fs.have {
		if ok || (held.N > 0 && !held.Has(b)) {
			continue
		}
		if fs.copies[b] == 0 || (endgame && fs.copies[b] < maxCopies) {
			return true
		}
	}
	return false
}

// peerKey places a peer on the territory ring of a model.
func peerKey(model rdrr.ModelID, id string) uint64 {
	h := sha256.New()
	h.Write(model[:])
	h.Write([]byte(id))
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// survey reads who holds what, classifies peers (seed, fetcher), weighs
// each holder's load and places this node on the territory ring. f.mu held.
func (f *fetcher) survey(usable []candidate) *view {
	n := len(f.all)
	v := &view{cands: usable, holders: make([]int, n), started: make([]bool, n), peerHeld: make([]bool, n)}
	lack := make([]float64, n) // fetchers (this node included) that lack shard s
	held := make([]int, n)     // blocks of shard s other peers hold partly
	keys := []uint64{f.selfKey}
	hs := holdingOf(f.peers)
	parts := make([]wire.Bitmap, n)
	now := f.o.Clock.Now()
	wait := f.fallbackWait(usable, f.total/int64(n))
	v.wait = wait
	hasAll := make([]bool, n*len(usable))
	for i := range usable {
		c := &usable[i]
		c.has = hasAll[i*n : (i+1)*n : (i+1)*n]
		hs.Holding(c.p, f.all, c.has, parts)
		blocks := 0 // blocks it holds of the shards held partly
		for s := range f.all {
			if c.has[s] {
				c.n++
				v.holders[s]++
				continue
			}
			fs := f.byIndex[s]
			if fs == nil || fs.done || fs.missing == 0 {
				continue
			}
			// A peer holding the shard partly counts as a holder when it
			// has a block this fetch is missing.
			bm, ok := parts[s], parts[s].N > 0
			if ok && bm.Any() { // (a seed holds every shard complete)
				v.started[s] = true
				held[s] += bm.Count()
				blocks += bm.Count()
			}
			if ok && bm.N == len(fs.have) && supplies(fs, bm, true) {
				if c.part == nil {
					c.part = make([]wire.Bitmap, n)
				}
				c.part[s] = bm
				v.holders[s]++
			}
		}
		sp := f.seen[c.id]
		mark := [2]int{c.n, blocks}
		if sp == nil {
			sp = &seenPeer{seed: c.n == n, first: c.n, fetcher: c.n == 0, mark: mark, changed: now}
			f.seen[c.id] = sp
		} else if c.n != sp.first {
			sp.fetcher = true
		}
		if mark != sp.mark {
			sp.mark, sp.changed = mark, now
		}
		c.seed = sp.seed
		if !c.seed && !f.setAside(c.id, now) {
			for s, ok := range c.has {
				if ok || c.partly(s) {
					v.peerHeld[s] = true
				}
			}
		}
		// A fetcher takes part in the territories while its holdings move;
		// one whose holdings have not moved for the fallback wait is gone
		// (killed, its inventory not yet expired) or stuck, and its
		// territory goes to the others.
		if sp.fetcher && c.n < n && now.Sub(sp.changed) < wait {
			keys = append(keys, peerKey(f.id, c.id))
			for s, ok := range c.has {
				if !ok {
					lack[s]++
				}
			}
		}
	}
	for s, fs := range f.byIndex {
		if fs != nil && !fs.done {
			lack[s]++
		}
		if held[s] != f.partBlocks[s] {
			f.partBlocks[s], f.partGrew[s] = held[s], now
		}
	}
	// A holder's load: for every shard it holds, the fetchers that lack
	// it, shared among its holders; a seed's is not shared (every fetcher
	// knows the seeds from the start). A seed thus starts with the whole
	// swarm's demand and keeps far more than a peer with a few fresh shards.
	for i := range usable {
		c := &usable[i]
		for s, ok := range c.has {
			ok = ok || c.partly(s)
			switch {
			case !ok:
			case c.seed:
				c.load += lack[s]
			default:
				c.load += lack[s] / float64(v.holders[s])
			}
		}
	}
	slices.Sort(keys)
	v.rank, v.fetchers = slices.Index(keys, f.selfKey), len(keys)
	hi, _ := bits.Mul64(keys[0], uint64(n))
	v.offset = int(hi)
	return v
}

// holdsMissing reports whether c holds a shard (or a block) this fetch
// is missing. f.mu held.
func (f *fetcher) holdsMissing(c *candidate) bool {
	for _, fs := range f.shards {
		if !fs.done && (c.has[fs.idx] || c.partly(fs.idx)) {
			return true
		}
	}
	return false
}

// holder is what the survey reads of a PeerSet: a HoldingSet's one call
// per peer (perShard adapts the others).
type holder interface {
	Holding(p Peer, shards []rdrr.Hash, has []bool, part []wire.Bitmap)
}

func holdingOf(ps PeerSet) holder {
	if h, ok := ps.(HoldingSet); ok {
		return h
	}
	return perShard{ps}
}

// perShard answers Holding with Has, and Blocks where the set is a
// PartialSet, shard by shard.
type perShard struct{ PeerSet }

func (a perShard) Holding(p Peer, shards []rdrr.Hash, has []bool, part []wire.Bitmap) {
	ps, partial := a.PeerSet.(PartialSet)
	for s, h := range shards {
		has[s], part[s] = a.Has(p, h), wire.Bitmap{}
		if !has[s] && partial {
			if bm, ok := ps.Blocks(p, h); ok {
				part[s] = bm
			}
		}
	}
}

// setAside reports whether peer id is not to be asked now: set aside
// after failures, or busy. f.mu held.
func (f *fetcher) setAside(id string, now time.Time) bool {
	if a, ok := f.aside[id]; ok && now.Before(a.until) {
		return true
	}
	b, ok := f.busy[id]
	return ok && now.Before(b.until)
}

// surveyEvery is how long a survey serves the passes after it. A survey
// reads every peer; up to 100 of them every pass surveys anew (a block
// arrival can change whom to ask next). With more, the interval grows in
// proportion to the peers, Poll × peers/100 (twice that while requests
// are in flight: at 1,000 peers 2.5 s idle, 5 s busy), so the survey's
// cost per second stays about that of 100 peers: what a crowd holds
// moves slowly in aggregate, and a peer's inventory reaches this node
// about once a RefreshInterval anyway. f.mu held.
func (f *fetcher) surveyEvery() time.Duration {
	n := f.surveyedPeers
	if n <= 100 {
		return 0
	}
	d := f.o.Poll
	if len(f.reqs) > 0 {
		d *= 2
	}
	return d * time.Duration(n) / 100
}

// activeSet returns at most MaxPeers of the surveyed candidates cs: the
// ones to choose among until the next survey (FetchOptions.MaxPeers).
// f.mu held.
func (f *fetcher) activeSet(cs []candidate) []candidate {
	if len(cs) <= f.o.MaxPeers {
		f.active = nil
		return cs
	}
	// Places: 0 essential (a seed, requests in flight), 1 a member still
	// useful, 2 another useful peer, 3 the rest.
	place := make([]int, len(cs))
	for i := range cs {
		c := &cs[i]
		switch {
		case c.seed || f.perPeer[c.id] > 0:
			place[i] = 0
		case !f.holdsMissing(c):
			place[i] = 3
		case f.active[c.id]:
			place[i] = 1
		default:
			place[i] = 2
		}
	}
	// One member that is not essential gives its place to an outsider.
	var members []int
	for i, p := range place {
		if p == 1 {
			members = append(members, i)
		}
	}
	if len(members) > 0 {
		place[members[f.rng.IntN(len(members))]] = 2
	}
	order := f.rng.Perm(len(cs))
	slices.SortStableFunc(order, func(a, b int) int { return place[a] - place[b] })
	out := make([]candidate, 0, f.o.MaxPeers)
	f.active = make(map[string]bool, f.o.MaxPeers)
	for _, i := range order {
		if len(out) == f.o.MaxPeers && place[i] > 0 {
			break
		}
		out = append(out, cs[i])
		f.active[cs[i].id] = true
	}
	return out
}

// fallbacks sets v's fallback state for this pass (a survey may serve
// several passes: see surveyed). f.mu held.
func (f *fetcher) fallbacks(v *view, now time.Time) {
	// Outside its territory a node asks a seed for a shard only seeds hold
	// after being idle for about the time a seed takes to send a shard
	// (its owner may be gone or not be fetching), and at least 16 polls
	// (4 s): the owner announces the blocks it receives, and a node with
	// no territory, which never measures the seed, must not fall back
	// before the owners' first blocks could reach it. A shard whose owner
	// is seen fetching it (other peers hold blocks of it, and their count
	// has moved within that wait) waits 4 times as long; one whose count
	// has not moved has an owner that is gone (killed mid-transfer, its
	// inventory not yet expired) or stuck, and waits no longer than any.
	if len(f.reqs) == 0 {
		idle := now.Sub(maxTime(f.idleSince, f.began))
		v.fallback, v.fallbackBusy = idle >= v.wait, idle >= 4*v.wait
		for s := range v.started {
			if v.started[s] && now.Sub(f.partGrew[s]) >= v.wait {
				v.started[s] = false
			}
		}
	}
}

// fallbackWait is how long a fetch idles before it asks a seed outside
// its territory: about twice the time a seed (as measured) takes to send
// a shard of shardBytes, and at least 16 polls (see survey). f.mu held.
func (f *fetcher) fallbackWait(usable []candidate, shardBytes int64) time.Duration {
	wait := 16 * f.o.Poll
	for _, c := range usable {
		if sp := f.seen[c.id]; sp != nil && sp.seed {
			if est, ok := f.s.peers.estimate(c.id, shardBytes); ok {
				wait = max(wait, 2*est)
			}
		}
	}
	return wait
}

// maxTime returns the later of a and b.
func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// busyPeer is a peer whose upload slots were full when last asked: it is
// not asked again until until; n counts its busy answers in a row.
type busyPeer struct {
	until time.Time
	n     int
}

// isBusy reports whether err is a peer's answer that its upload slots are
// full (wire.CodeBusy before any block): not a failure of the peer, only
// a sign to ask another holder for a moment.
// It looks at every error err wraps (errors.As would stop at the first
// wire.Error: in a joined list of peers' answers, typically a NotFound).
func isBusy(err error) bool {
	switch e := err.(type) {
	case nil:
		return false
	case *wire.Error:
		return e.Code == wire.CodeBusy
	case interface{ Unwrap() []error }:
		return slices.ContainsFunc(e.Unwrap(), isBusy)
	case interface{ Unwrap() error }:
		return isBusy(e.Unwrap())
	}
	return false
}

// busyWait is how long a peer that answered busy n times in a row is left
// alone: a quarter of the time its link takes for one block (when
// measured; 100 ms else: with UploadSlots requests sharing it, a slot
// frees about that often), doubling with each busy answer up to 8 times,
// jittered ±50% so that the peers turned away do not all come back at
// once, and within [20 ms, 2 s].
func (f *fetcher) busyWait(id string, blockSize int64, n int) time.Duration {
	d := 100 * time.Millisecond
	if est, ok := f.s.peers.linkTime(id, blockSize, blockSize); ok {
		d = est / 4
	}
	d <<= min(n, 3)
	d = d/2 + time.Duration(rand.Int64N(int64(d)+1))
	return min(max(d, 20*time.Millisecond), 2*time.Second)
}

// setAside is a peer set aside after failures at since: not asked until
// until; n counts its set-asides in a row (the backoff doubles with each).
type setAside struct {
	since, until time.Time
	n            int
}

// schedule starts requests until Parallel are in flight or nothing more
// can be assigned, and notes whether a reachable peer holds a missing
// shard. It holds f.mu.
func (f *fetcher) schedule() {
	if len(f.reqs) >= f.o.Parallel {
		return
	}
	now := f.o.Clock.Now()
	if f.surveyed == nil || now.Sub(f.surveyedAt) >= f.surveyEvery() || now.Before(f.surveyedAt) {
		var all []candidate
		seen := map[string]bool{}
		for _, p := range f.peers.Peers(f.id) {
			id := p.ID()
			if seen[id] || f.bad[id] || f.s.peers.dropped(id, f.id) {
				continue
			}
			seen[id] = true
			all = append(all, candidate{p: p, id: id})
		}
		if len(all) == 0 {
			f.surveyed = nil
			return
		}
		v := f.survey(all)
		f.surveyedPeers = len(all)
		v.cands = f.activeSet(v.cands)
		f.surveyed, f.surveyedAt = v, now
	}
	v := *f.surveyed
	// Peers set aside still count as holders (they come back); they are
	// not asked until their backoff ends.
	usable := make([]candidate, 0, len(v.cands))
	for _, c := range v.cands {
		if f.bad[c.id] || f.s.peers.dropped(c.id, f.id) {
			continue // since the survey
		}
		if !f.down[c.id] && !f.lastHolder.Equal(now) && f.holdsMissing(&c) {
			f.lastHolder = now
		}
		if f.setAside(c.id, now) {
			continue
		}
		usable = append(usable, c)
	}
	v.cands = usable
	f.fallbacks(&v, now)
	// The incomplete shards someone holds, rarest first; ties among shards
	// only seeds hold in territory order (this node's own first), other
	// ties in this fetch's random order.
	type rank struct {
		fs      *fshard
		holders int
		tie     int
	}
	var ranks []rank
	unassigned, remaining := 0, 0
	for i, fs := range f.shards {
		if fs.done || fs.completing {
			continue
		}
		for b, ok := range fs.have {
			if !ok {
				remaining++
				if fs.copies[b] == 0 {
					unassigned++
				}
			}
		}
		if h := v.holders[fs.idx]; h > 0 {
			tie := len(f.all) + f.order[i]
			if v.seedOnly(fs.idx) {
				tie = v.rot(fs.idx)
			}
			ranks = append(ranks, rank{fs, h, tie})
		}
	}
	sort.Slice(ranks, func(i, j int) bool {
		if ranks[i].holders != ranks[j].holders {
			return ranks[i].holders < ranks[j].holders
		}
		return ranks[i].tie < ranks[j].tie
	})
	endgame := unassigned == 0 && remaining <= f.o.EndgameBlocks && f.dupBytes < f.dupBudget
	for len(f.reqs) < f.o.Parallel {
		started := false
		for _, r := range ranks {
			c, probe, ok := f.best(r.fs, &v, endgame)
			if !ok {
				continue
			}
			n := f.o.BlocksPerRequest
			if c.seed && f.whole {
				// Short requests to a seed: what a node asked for before it
				// knew the other fetchers (or before a shard's owner
				// announced it) costs the seed little.
				n = max(1, n/4)
			}
			if probe {
				n = 1 // an unmeasured peer gets a one-block probe first
			}
			if first, count := f.pick(r.fs, c.id, n, endgame, c.blocks(r.fs.idx)); count > 0 {
				f.start(c, r.fs, first, count, endgame && r.fs.copies[first] > 0)
				started = true
				break
			}
		}
		if !started {
			return
		}
	}
}

// best returns the holder of fs to ask now: an unmeasured one first (a
// probe), else the one with the lowest cost, its expected time for a
// request times (1 + our requests in flight to it) times (1 + its load).
// When that holder has no free slot nothing is started: waiting for it is
// expected to be cheaper than a worse holder (a seed, typically). A seed
// is asked for a shard that only seeds hold just within this node's
// territory (or when idle), and for a shard that peers hold too only when
// this node has had nothing in flight for the fallback wait; in the
// endgame, seeds are left out of shards that other peers hold.
func (f *fetcher) best(fs *fshard, v *view, endgame bool) (c candidate, probe, ok bool) {
	bytes := int64(f.o.BlocksPerRequest) * fs.sh.BlockSize
	seedOnly := v.seedOnly(fs.idx)
	// A seed: for a shard only seeds hold, within the territory (or when
	// idle for long); for one that peers hold too, only once this node
	// has had nothing in flight for the fallback wait (then the costs
	// decide). Asked at once, the seed served every node whose holders
	// were busy for a moment: at 300 simulated peers it sent 2.7 copies.
	fallback := v.fallback && (!v.started[fs.idx] || v.fallbackBusy)
	seedOK := !f.whole || (seedOnly && (v.mine(fs.idx) || fallback)) || (!seedOnly && len(f.reqs) == 0 && v.fallback)
	// While a request to a seed is in flight, few others: they share
	// this node's download link with it, and a seed's upload, the scarce
	// resource, then ran at the speed of its receivers' shares (at 30
	// real peers on 40 Mbit/s links it sent its last shard alone, at a
	// third of its rate, while its receiver took blocks from peers).
	crowded := f.whole && f.seedReqs > 0 && len(f.reqs)-f.seedReqs >= seedCompanions
	var best candidate
	var bestCost float64
	found, free := false, false
	for _, h := range v.cands {
		if (h.seed && !seedOK) || (!h.seed && crowded) {
			continue
		}
		// A partial holder only when it has a block to ask for now.
		if !h.has[fs.idx] && !(h.partly(fs.idx) && supplies(fs, h.part[fs.idx], endgame)) {
			continue
		}
		idle := f.perPeer[h.id] < f.o.PerPeer
		if endgame && (!idle || (h.seed && !seedOnly)) {
			continue
		}
		est, known := f.s.peers.estimate(h.id, bytes)
		if !known {
			if h.seed && !seedOnly {
				// Never probe a seed for a shard other peers hold: every
				// fetcher would, at once, and the seed's upload is the
				// scarce resource.
				continue
			}
			if f.perPeer[h.id] == 0 {
				return h, true, true
			}
			// Its probe is in flight: wait for the measurement (one probe
			// at a time).
			est, known, idle = 0, true, false
		}
		cost := float64(est) * float64(1+f.perPeer[h.id]) * (1 + h.load)
		if !found || cost < bestCost {
			best, bestCost, found, free = h, cost, true, idle
		}
	}
	return best, false, found && free
}

// pick returns a run of at most n missing blocks of fs to ask peer id for,
// among the blocks it holds (held; N == 0: all): unassigned blocks, or in
// the endgame one block in flight elsewhere (see pickDuplicate).
func (f *fetcher) pick(fs *fshard, id string, n int, endgame bool, held wire.Bitmap) (int, int) {
	free := func(b int) bool {
		return !fs.have[b] && fs.copies[b] == 0 && (held.N == 0 || held.Has(b))
	}
	for b := range fs.have {
		if free(b) {
			count := 0
			for b+count < len(fs.have) && count < n && free(b+count) {
				count++
			}
			return b, count
		}
	}
	if !endgame {
		return 0, 0
	}
	if b := f.pickDuplicate(fs, id, held); b >= 0 {
		return b, 1
	}
	return 0, 0
}

// pickDuplicate returns the block of fs to ask peer id for in the endgame,
// or -1: of the blocks missing, not asked of id and with fewer than
// maxCopies copies in flight, the one that has the most blocks due before
// it on a request in flight (the copy expected last), fewest copies first.
// A block within the remaining budget, and held by the peer (held; N == 0:
// all), only. f.mu held.
func (f *fetcher) pickDuplicate(fs *fshard, id string, held wire.Bitmap) int {
	asked := make([]bool, len(fs.have))
	lag := make([]int, len(fs.have))
	for r := range f.reqs {
		if r.fs != fs {
			continue
		}
		due := 0
		for i := range r.count {
			b := r.first + i
			if r.id == id {
				asked[b] = true
			}
			if !r.got[i] {
				lag[b] = max(lag[b], due)
				due++
			}
		}
	}
	best := -1
	for b := range fs.have {
		if fs.have[b] || asked[b] || fs.copies[b] >= maxCopies || f.dupBytes+int64(fs.sh.BlockLen(b)) > f.dupBudget ||
			(held.N > 0 && !held.Has(b)) {
			continue
		}
		if best < 0 || fs.copies[b] < fs.copies[best] || (fs.copies[b] == fs.copies[best] && lag[b] > lag[best]) {
			best = b
		}
	}
	return best
}

// start launches a request. It holds f.mu.
func (f *fetcher) start(c candidate, fs *fshard, first, count int, endgame bool) {
	ctx, cancel := context.WithCancel(f.ctx)
	r := &request{peer: c.p, id: c.id, fs: fs, first: first, count: count, got: make([]bool, count),
		endgame: endgame, seed: c.seed, cancel: cancel, start: f.o.Clock.Now(), floor: f.o.RequestTimeout << min(f.stalls[c.id], 3)}
	for i := range count {
		fs.copies[first+i]++
		if endgame {
			f.dupBytes += int64(fs.sh.BlockLen(first + i))
		}
	}
	f.reqs[r] = true
	f.perPeer[c.id]++
	if r.seed {
		f.seedReqs++
	}
	f.log.Debug("swarm: request", "peer", c.id, "seed", c.seed, "shard", fs.idx, "blocks", fmt.Sprintf("%d+%d", first, count),
		"endgame", endgame, "inflight", len(f.reqs))
	f.s.peers.update(c.id, func(p *peerRec) { p.Requests++ })
	f.s.count(func(st *FetchStats) {
		st.Requests++
		if endgame {
			st.Endgame++
		}
	})
	f.wg.Add(1)
	go f.do(ctx, r)
}

// seedCompanions is how many requests to other peers a whole-model fetch
// keeps in flight beside its requests to seeds.
const seedCompanions = 1

// errSuperseded ends a request whose blocks all arrived from other peers.
var errSuperseded = errors.New("superseded by other copies")

// do runs one request in its own goroutine.
func (f *fetcher) do(ctx context.Context, r *request) {
	defer f.wg.Done()
	defer r.cancel()
	var tmu sync.Mutex
	arm := func() Timer {
		return f.o.Clock.AfterFunc(f.stallTimeout(r), func() { r.timedOut.Store(true); r.cancel() })
	}
	timer := arm()
	err := r.peer.ReadBlocks(ctx, r.fs.sh, r.first, r.count, func(index int, data []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f.onBlock(r, index, data); err != nil {
			return err
		}
		tmu.Lock()
		timer.Stop()
		timer = arm()
		tmu.Unlock()
		return nil
	})
	tmu.Lock()
	timer.Stop()
	tmu.Unlock()
	f.finish(r, err)
}

// stallTimeout is how long request r may go without a block: max(its
// floor, StallFactor × the time the peer's measured RTT and throughput
// need for the bytes still due on every request in flight to it, which
// share its link). See FetchOptions.RequestTimeout.
func (f *fetcher) stallTimeout(r *request) time.Duration {
	var due int64
	f.mu.Lock()
	for o := range f.reqs {
		if o.id == r.id {
			for i, ok := range o.got {
				if !ok {
					due += int64(o.fs.sh.BlockLen(o.first + i))
				}
			}
		}
	}
	f.mu.Unlock()
	d := r.floor
	if need, ok := f.s.peers.linkTime(r.id, due, r.fs.sh.BlockSize); ok {
		d = max(d, time.Duration(f.o.StallFactor*float64(need)))
	}
	return d
}

// onBlock handles one block from a request: check it was asked for, hash
// it (in WriteBlock, which refuses a bad one), write it, and cancel other
// requests that only wait for blocks now held.
func (f *fetcher) onBlock(r *request, index int, data []byte) error {
	f.s.peers.update(r.id, func(p *peerRec) { p.BytesReceived += int64(len(data)) })
	if index < r.first || index >= r.first+r.count || r.got[index-r.first] {
		r.bad = fmt.Errorf("peer %s: shard %s: block %d not asked for (asked %d+%d): %w", r.id, r.fs.sh.Hash.Short(), index, r.first, r.count, rdrr.ErrBadBlock)
		return r.bad
	}
	now := f.o.Clock.Now()
	if r.ngot == 0 {
		r.firstAt = now
	}
	r.lastAt = now
	fs := r.fs
	f.mu.Lock()
	held := fs.have[index]
	f.mu.Unlock()
	if held {
		if err := checkReceived(r.peer, fs.sh, index, data); err != nil {
			r.bad = fmt.Errorf("peer %s: %w", r.id, err)
			return r.bad
		}
		f.s.peers.update(r.id, func(p *peerRec) { p.Duplicates++ })
	} else if wrote, err := putReceived(f.bs, r.peer, fs.sh, index, data); err != nil {
		if errors.Is(err, rdrr.ErrBadBlock) {
			r.bad = fmt.Errorf("peer %s: %w", r.id, err)
			return r.bad
		}
		f.mu.Lock()
		if f.fatal == nil {
			f.fatal = err
		}
		f.mu.Unlock()
		f.signal()
		return err
	} else if !wrote {
		f.s.peers.update(r.id, func(p *peerRec) { p.Duplicates++ })
	} else {
		f.s.peers.update(r.id, func(p *peerRec) { p.BytesUseful += int64(len(data)) })
		f.s.count(func(st *FetchStats) { st.Bytes += int64(len(data)) })
	}
	r.ngot++
	r.bytes += int64(len(data))
	f.mu.Lock()
	r.got[index-r.first] = true // read by other requests' covered
	f.lastBlock = now
	fs.copies[index]--
	if !fs.have[index] {
		fs.have[index] = true
		fs.missing--
		f.done += int64(len(data))
	}
	// First copy wins: cancel requests left with nothing but held blocks.
	for o := range f.reqs {
		if o == r || o.fs != fs || o.superseded || index < o.first || index >= o.first+o.count {
			continue
		}
		if f.covered(o) {
			o.superseded = true
			o.cancel()
		}
	}
	superseded := f.covered(r)
	completing := fs.missing == 0 && !fs.completing && !fs.done
	if completing {
		fs.completing = true
	}
	f.mu.Unlock()
	f.progress(false)
	if completing {
		f.complete(fs)
	}
	if superseded && r.ngot < r.count {
		return errSuperseded
	}
	return nil
}

// covered reports whether every block r still waits for is held. f.mu held.
func (f *fetcher) covered(r *request) bool {
	for i, ok := range r.got {
		if !ok && !r.fs.have[r.first+i] {
			return false
		}
	}
	return true
}

// complete moves a fully fetched shard into shards/. If the store finds
// blocks bad on disk they are marked missing again and fetched anew.
func (f *fetcher) complete(fs *fshard) {
	err := f.bs.Complete(fs.sh.Hash)
	f.mu.Lock()
	defer f.mu.Unlock()
	fs.completing = false
	switch {
	case err == nil:
		fs.done = true
	case errors.Is(err, ErrIncomplete):
		f.log.Warn("swarm: shard failed its final check; fetching the bad blocks again", "shard", fs.sh.Hash.Short(), "err", err)
		f.done -= fs.sh.Size
		fs.have = f.bs.HaveBlocks(fs.sh.Hash)
		f.count(fs)
	default:
		if f.fatal == nil {
			f.fatal = err
		}
	}
	f.signal()
}

// finish classifies a finished request, scores its peer and puts the
// blocks it did not deliver back to be assigned.
func (f *fetcher) finish(r *request, err error) {
	now := f.o.Clock.Now()
	if r.bad == nil && err != nil && errors.Is(err, rdrr.ErrBadBlock) {
		r.bad = err // the peer verified and found its own bad block
	}
	f.mu.Lock()
	delete(f.reqs, r)
	f.perPeer[r.id]--
	if r.seed {
		f.seedReqs--
	}
	if len(f.reqs) == 0 {
		f.idleSince = now
	}
	requeued := 0
	for i, ok := range r.got {
		if !ok {
			r.fs.copies[r.first+i]--
			if !r.fs.have[r.first+i] {
				requeued++
			}
		}
	}
	parentDone := f.ctx.Err() != nil
	failed := ""
	switch {
	case r.bad != nil:
		f.bad[r.id] = true
	case r.superseded || errors.Is(err, errSuperseded) || parentDone:
	case r.ngot == 0 && isBusy(err):
		b := f.busy[r.id]
		f.busy[r.id] = busyPeer{until: now.Add(f.busyWait(r.id, r.fs.sh.BlockSize, b.n)), n: b.n + 1}
		failed = "busy"
	case r.timedOut.Load():
		failed = "stalled"
	case err != nil && errors.Is(err, shardproto.ErrGone):
		failed = "gone"
	case err != nil:
		failed = "error"
	case r.ngot < r.count:
		failed = "short"
	}
	if failed != "" && failed != "busy" {
		f.surveyed = nil // what the peer holds may have changed (a source's lack)
	}
	var backoff time.Duration
	// A request asked before its peer was set aside fails of the same
	// trouble, already counted.
	a, aside := f.aside[r.id]
	if failed == "busy" {
		// Not a failure: the peer is up and serving others.
	} else if failed != "" && !(aside && r.start.Before(a.since)) {
		f.fails[r.id]++
		if failed == "stalled" {
			f.stalls[r.id]++
		} else {
			f.stalls[r.id] = 0
		}
		// A peer that went away or failed on the connection does not keep
		// the fetch waiting; a slow, short or busy one does.
		f.down[r.id] = failed == "gone" || failed == "error" && !errors.Is(err, shardproto.ErrRemote) && !errors.Is(err, shardproto.ErrNotFound)
		if f.fails[r.id] >= f.o.MaxFailures {
			backoff = min(f.o.Backoff<<min(a.n, 16), f.o.MaxBackoff)
			f.aside[r.id] = setAside{since: now, until: now.Add(backoff), n: a.n + 1}
			f.fails[r.id] = f.o.MaxFailures - 1 // back from the backoff, one more failure sets it aside again
		}
	} else if failed == "gone" {
		f.down[r.id] = true
	} else if failed == "" && r.bad == nil && r.ngot == r.count {
		delete(f.busy, r.id)
		delete(f.fails, r.id)
		delete(f.stalls, r.id)
		delete(f.aside, r.id)
		delete(f.down, r.id)
	}
	f.mu.Unlock()

	if requeued > 0 || backoff > 0 || failed == "busy" {
		f.s.count(func(st *FetchStats) {
			st.Requeued += requeued
			if backoff > 0 {
				st.SetAside++
			}
			if failed == "busy" {
				st.Busy++
			}
		})
	}
	if failed != "" && r.ngot >= 2 && r.lastAt.After(r.firstAt) {
		// What a failed request delivered still measures the link.
		f.s.peers.sample(r.id, r.firstAt.Sub(r.start), r.bytes-int64(r.fs.sh.BlockLen(r.first)), r.lastAt.Sub(r.firstAt))
	}
	blocks := fmt.Sprintf("%d+%d", r.first, r.count)
	switch {
	case r.bad != nil:
		f.s.peers.update(r.id, func(p *peerRec) {
			p.BadBlocks++
			p.dropped[f.id] = true
		})
		f.log.Warn("swarm: peer sent a bad block; dropped for this model", "peer", r.id, "err", r.bad, "requeued", requeued)
	case failed == "stalled":
		f.s.peers.update(r.id, func(p *peerRec) { p.Timeouts++ })
		f.s.peers.slower(r.id, f.stallTimeout(r))
		f.log.Info("swarm: request stalled; cut off", "peer", r.id, "shard", r.fs.sh.Hash.Short(), "blocks", blocks, "got", r.ngot,
			"waited", f.stallTimeout(r).Round(time.Millisecond))
	case failed == "gone":
		f.s.peers.update(r.id, func(p *peerRec) { p.Gone++ })
		f.log.Debug("swarm: peer went away mid-request", "peer", r.id, "shard", r.fs.sh.Hash.Short(), "blocks", blocks, "got", r.ngot, "err", err)
	case failed == "error":
		f.s.peers.update(r.id, func(p *peerRec) { p.Errors++ })
		f.s.peers.slower(r.id, now.Sub(r.start))
		f.log.Info("swarm: request failed", "peer", r.id, "shard", r.fs.sh.Hash.Short(), "err", err, "got", r.ngot)
	case failed == "short":
		f.s.peers.update(r.id, func(p *peerRec) { p.Short++ })
		f.s.peers.slower(r.id, f.o.RequestTimeout) // the rest costs another round trip
		f.log.Info("swarm: short answer", "peer", r.id, "shard", r.fs.sh.Hash.Short(), "asked", r.count, "got", r.ngot)
	case r.ngot == r.count && !r.endgame:
		rtt := r.firstAt.Sub(r.start)
		if r.count > 1 {
			f.s.peers.sample(r.id, rtt, r.bytes-int64(r.fs.sh.BlockLen(r.first)), now.Sub(r.firstAt))
		} else {
			f.s.peers.sample(r.id, rtt, 0, 0) // a probe: latency only
		}
	}
	f.log.Debug("swarm: request ended", "peer", r.id, "shard", r.fs.idx, "blocks", blocks, "got", r.ngot,
		"took", now.Sub(r.start).Round(time.Millisecond), "failed", failed)
	if backoff > 0 {
		f.s.peers.update(r.id, func(p *peerRec) { p.SetAside++ })
		f.log.Info("swarm: peer set aside after failed requests; asked again after the backoff", "peer", r.id, "last", failed, "backoff", backoff)
	}
	if r.superseded {
		f.s.count(func(st *FetchStats) { st.Cancelled++ })
	}
	f.signal()
}

// progress reports to FetchOptions.Progress at most every 100ms, and
// always when final.
func (f *fetcher) progress(final bool) {
	if f.o.Progress == nil {
		return
	}
	f.progMu.Lock()
	defer f.progMu.Unlock()
	now := f.o.Clock.Now()
	if !final && now.Sub(f.lastProg) < 100*time.Millisecond {
		return
	}
	f.lastProg = now
	f.mu.Lock()
	done, total := f.done, f.total
	in := map[string]bool{}
	for r := range f.reqs {
		in[r.id] = true
	}
	f.mu.Unlock()
	f.o.Progress(done, total, len(in))
}
