package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
)

// ErrNoPeers is returned by Fetch when no peer could supply the missing
// shards for FetchOptions.WaitPeers.
var ErrNoPeers = errors.New("no peer holds the missing shards")

// FetchOptions tunes Fetch. Zero values take the defaults shown.
type FetchOptions struct {
	Parallel         int           // requests in flight in all (8)
	PerPeer          int           // requests in flight to one peer (2)
	BlocksPerRequest int           // blocks asked for in one request (16)
	RequestTimeout   time.Duration // longest wait for a request's next block before it is cut off (10s)
	// EndgameBlocks: when every missing block is already requested and at
	// most this many remain, idle peers are asked for the same blocks; the
	// first verified copy wins and the others are cancelled (2×BlocksPerRequest).
	EndgameBlocks int
	// MaxFailures consecutive failed requests (stall, error, short answer)
	// set a peer aside for the rest of this fetch (3).
	MaxFailures int
	// WaitPeers is how long Fetch waits, with nothing in flight and no
	// block arriving, for a peer to announce a missing shard (30s).
	WaitPeers time.Duration
	// Poll is how often the PeerSet is read again while waiting (250ms).
	Poll time.Duration
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
	if o.EndgameBlocks <= 0 {
		o.EndgameBlocks = 2 * o.BlocksPerRequest
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
	Bytes     int64 // verified bytes written by fetches
}

// fshard is a shard being fetched.
type fshard struct {
	sh         rdrr.Shard
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
	cancel  context.CancelFunc
	// superseded: cancelled because other copies of its blocks won.
	superseded bool
	timedOut   atomic.Bool
	bad        error // the bad block it sent, if any
	start      time.Time
	firstAt    time.Time
	bytes      int64
}

type fetcher struct {
	s     *Store
	id    rdrr.ModelID
	peers PeerSet
	o     FetchOptions
	log   *slog.Logger
	ctx   context.Context
	wg    sync.WaitGroup
	wake  chan struct{}

	mu        sync.Mutex
	shards    []*fshard
	order     []int // tie-break order of shards (random)
	reqs      map[*request]bool
	perPeer   map[string]int
	fails     map[string]int
	excluded  map[string]string
	done      int64
	total     int64
	lastBlock time.Time
	fatal     error
	progMu    sync.Mutex
	lastProg  time.Time
}

// Fetch downloads every shard of model id (whose manifest is already in
// the store) that the store lacks, from the peers of peers, verifying each
// block before it is written. It resumes from the blocks already held
// (including a partial shard left by an earlier run), prefers the rarest
// shards, splits a shard's missing blocks into ranges fetched from several
// peers, cuts off requests that stall, drops for this model a peer that
// sends a bad block, and returns nil only when every shard is complete.
func (s *Store) Fetch(ctx context.Context, id rdrr.ModelID, peers PeerSet, opts FetchOptions) error {
	opts.fill()
	m, ok := s.manifest(id)
	if !ok {
		return fmt.Errorf("model %s: %w", id.Short(), ErrUnknownModel)
	}
	unpin := s.pinModel(m)
	defer unpin()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := &fetcher{
		s: s, id: id, peers: peers, o: opts, log: s.log.With("model", id.Short()), ctx: ctx,
		wake: make(chan struct{}, 1), reqs: map[*request]bool{}, perPeer: map[string]int{},
		fails: map[string]int{}, excluded: map[string]string{},
	}
	var need int64
	only := map[rdrr.Hash]bool{}
	for _, h := range opts.Shards {
		only[h] = true
	}
	for _, sh := range m.Shards {
		if len(only) > 0 && !only[sh.Hash] {
			continue
		}
		f.total += sh.Size
		if s.Has(sh.Hash) {
			f.done += sh.Size
			continue
		}
		fs := &fshard{sh: sh, have: s.HaveBlocks(sh.Hash), copies: make([]int, len(sh.Blocks))}
		if fs.have == nil {
			return fmt.Errorf("shard %s: %w", sh.Hash.Short(), ErrUnknownShard)
		}
		f.count(fs)
		if fs.missing == len(sh.Blocks) {
			need += sh.Size
		}
		f.shards = append(f.shards, fs)
	}
	if err := s.makeRoom(need, nil); err != nil {
		return err
	}
	seed := opts.Seed
	if seed == 0 {
		seed = uint64(opts.Clock.Now().UnixNano())
	}
	f.order = rand.New(rand.NewPCG(seed, 0xf37c4)).Perm(len(f.shards))
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
	limit := f.o.RequestTimeout + 5*time.Second
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
			f.done += int64(blockLen(fs.sh, i))
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
// nothing to fetch from.
func (f *fetcher) run() error {
	clock := f.o.Clock
	f.lastBlock = clock.Now()
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
		idle := len(f.reqs) == 0
		waited := clock.Now().Sub(f.lastBlock)
		f.mu.Unlock()
		if idle && waited > f.o.WaitPeers {
			return fmt.Errorf("model %s: %d shards missing, nothing received for %v: %w", f.id.Short(), left, f.o.WaitPeers, ErrNoPeers)
		}
		tick := make(chan struct{})
		t := clock.AfterFunc(f.o.Poll, func() { close(tick) })
		select {
		case <-f.ctx.Done():
			t.Stop()
			return f.ctx.Err()
		case <-f.wake:
		case <-tick:
		}
		t.Stop()
	}
}

// candidate is a usable peer in one scheduling pass.
type candidate struct {
	p  Peer
	id string
}

// schedule starts requests until Parallel are in flight or nothing more
// can be assigned. It holds f.mu.
func (f *fetcher) schedule() {
	if len(f.reqs) >= f.o.Parallel {
		return
	}
	var usable []candidate
	seen := map[string]bool{}
	for _, p := range f.peers.Peers(f.id) {
		id := p.ID()
		if seen[id] || f.excluded[id] != "" || f.s.peers.dropped(id, f.id) {
			continue
		}
		seen[id] = true
		usable = append(usable, candidate{p, id})
	}
	if len(usable) == 0 {
		return
	}
	// Holders of each incomplete shard, then the shards rarest first.
	type rank struct {
		fs      *fshard
		holders []candidate
		tie     int
	}
	var ranks []rank
	unassigned, remaining := 0, 0
	for i, fs := range f.shards {
		if fs.done || fs.completing {
			continue
		}
		var hs []candidate
		for _, c := range usable {
			if f.peers.Has(c.p, fs.sh.Hash) {
				hs = append(hs, c)
			}
		}
		for b, ok := range fs.have {
			if !ok {
				remaining++
				if fs.copies[b] == 0 {
					unassigned++
				}
			}
		}
		if len(hs) > 0 {
			ranks = append(ranks, rank{fs, hs, f.order[i]})
		}
	}
	sort.Slice(ranks, func(i, j int) bool {
		if len(ranks[i].holders) != len(ranks[j].holders) {
			return len(ranks[i].holders) < len(ranks[j].holders)
		}
		return ranks[i].tie < ranks[j].tie
	})
	endgame := unassigned == 0 && remaining <= f.o.EndgameBlocks
	for len(f.reqs) < f.o.Parallel {
		started := false
		for _, r := range ranks {
			c, probe, ok := f.best(r.fs, r.holders)
			if !ok {
				continue
			}
			n := f.o.BlocksPerRequest
			if probe {
				n = 1 // an unmeasured peer gets a one-block probe first
			}
			if first, count := f.pick(r.fs, c.id, n, endgame); count > 0 {
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

// best returns the idle holder with the lowest expected time to fetch a
// request's worth of the shard; unmeasured peers come first (probes).
func (f *fetcher) best(fs *fshard, holders []candidate) (c candidate, probe, ok bool) {
	bytes := int64(f.o.BlocksPerRequest) * fs.sh.BlockSize
	var best candidate
	var bestEst time.Duration
	found := false
	for _, h := range holders {
		if f.perPeer[h.id] >= f.o.PerPeer {
			continue
		}
		est, known := f.s.peers.estimate(h.id, bytes)
		est *= time.Duration(1 + f.perPeer[h.id])
		if !known {
			est = 0
		}
		if !found || est < bestEst {
			best, bestEst, found, probe = h, est, true, !known
		}
	}
	return best, probe, found
}

// pick returns a run of at most n missing blocks of fs to ask peer id for:
// unassigned blocks, or in the endgame blocks in flight elsewhere (fewest
// copies, not already asked of this peer).
func (f *fetcher) pick(fs *fshard, id string, n int, endgame bool) (int, int) {
	for b := range fs.have {
		if !fs.have[b] && fs.copies[b] == 0 {
			count := 0
			for b+count < len(fs.have) && count < n && !fs.have[b+count] && fs.copies[b+count] == 0 {
				count++
			}
			return b, count
		}
	}
	if !endgame {
		return 0, 0
	}
	asked := make([]bool, len(fs.have))
	for r := range f.reqs {
		if r.fs == fs && r.id == id {
			for i := range r.count {
				asked[r.first+i] = true
			}
		}
	}
	for b := range fs.have {
		if !fs.have[b] && !asked[b] && fs.copies[b] < maxCopies {
			count := 0
			for b+count < len(fs.have) && count < n && !fs.have[b+count] && !asked[b+count] && fs.copies[b+count] < maxCopies {
				count++
			}
			return b, count
		}
	}
	return 0, 0
}

// start launches a request. It holds f.mu.
func (f *fetcher) start(c candidate, fs *fshard, first, count int, endgame bool) {
	ctx, cancel := context.WithCancel(f.ctx)
	r := &request{peer: c.p, id: c.id, fs: fs, first: first, count: count, got: make([]bool, count),
		endgame: endgame, cancel: cancel, start: f.o.Clock.Now()}
	for i := range count {
		fs.copies[first+i]++
	}
	f.reqs[r] = true
	f.perPeer[c.id]++
	f.s.peers.update(c.id, func(p *peerRec) { p.Requests++ })
	f.s.mu.Lock()
	f.s.st.Fetch.Requests++
	if endgame {
		f.s.st.Fetch.Endgame++
	}
	f.s.mu.Unlock()
	f.wg.Add(1)
	go f.do(ctx, r)
}

// errSuperseded ends a request whose blocks all arrived from other peers.
var errSuperseded = errors.New("superseded by other copies")

// do runs one request in its own goroutine.
func (f *fetcher) do(ctx context.Context, r *request) {
	defer f.wg.Done()
	defer r.cancel()
	var tmu sync.Mutex
	arm := func() Timer {
		return f.o.Clock.AfterFunc(f.o.RequestTimeout, func() { r.timedOut.Store(true); r.cancel() })
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
	fs := r.fs
	f.mu.Lock()
	held := fs.have[index]
	f.mu.Unlock()
	if held {
		if !hashBlock(&fs.sh, index, data) {
			r.bad = fmt.Errorf("peer %s: shard %s block %d: %w", r.id, fs.sh.Hash.Short(), index, rdrr.ErrBadBlock)
			return r.bad
		}
		f.s.peers.update(r.id, func(p *peerRec) { p.Duplicates++ })
	} else if wrote, err := f.s.writeBlock(fs.sh.Hash, index, data); err != nil {
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
		f.s.mu.Lock()
		f.s.st.Fetch.Bytes += int64(len(data))
		f.s.mu.Unlock()
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
	err := f.s.Complete(fs.sh.Hash)
	f.mu.Lock()
	defer f.mu.Unlock()
	fs.completing = false
	switch {
	case err == nil:
		fs.done = true
	case errors.Is(err, ErrIncomplete):
		f.log.Warn("swarm: shard failed its final check; fetching the bad blocks again", "shard", fs.sh.Hash.Short(), "err", err)
		f.done -= fs.sh.Size
		fs.have = f.s.HaveBlocks(fs.sh.Hash)
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
		f.excluded[r.id] = "bad block"
	case r.superseded || errors.Is(err, errSuperseded) || parentDone:
	case r.timedOut.Load():
		failed = "stalled"
	case err != nil:
		failed = "error"
	case r.ngot < r.count:
		failed = "short"
	}
	if failed != "" {
		f.fails[r.id]++
		if f.fails[r.id] >= f.o.MaxFailures {
			f.excluded[r.id] = fmt.Sprintf("%d failed requests", f.fails[r.id])
		}
	} else if r.bad == nil && r.ngot == r.count {
		f.fails[r.id] = 0
	}
	excluded := f.excluded[r.id]
	f.mu.Unlock()

	if requeued > 0 {
		f.s.mu.Lock()
		f.s.st.Fetch.Requeued += requeued
		f.s.mu.Unlock()
	}
	switch {
	case r.bad != nil:
		f.s.peers.update(r.id, func(p *peerRec) {
			p.BadBlocks++
			p.dropped[f.id] = true
		})
		f.log.Warn("swarm: peer sent a bad block; dropped for this model", "peer", r.id, "err", r.bad, "requeued", requeued)
	case failed == "stalled":
		f.s.peers.update(r.id, func(p *peerRec) { p.Timeouts++ })
		f.s.peers.slower(r.id, f.o.RequestTimeout)
		f.log.Info("swarm: request stalled; cut off", "peer", r.id, "shard", r.fs.sh.Hash.Short(), "blocks", fmt.Sprintf("%d+%d", r.first, r.count), "got", r.ngot, "excluded", excluded)
	case failed == "error":
		f.s.peers.update(r.id, func(p *peerRec) { p.Errors++ })
		f.s.peers.slower(r.id, now.Sub(r.start))
		f.log.Info("swarm: request failed", "peer", r.id, "shard", r.fs.sh.Hash.Short(), "err", err, "got", r.ngot, "excluded", excluded)
	case failed == "short":
		f.s.peers.update(r.id, func(p *peerRec) { p.Short++ })
		f.s.peers.slower(r.id, f.o.RequestTimeout) // the rest costs another round trip
		f.log.Info("swarm: short answer", "peer", r.id, "shard", r.fs.sh.Hash.Short(), "asked", r.count, "got", r.ngot, "excluded", excluded)
	case r.ngot == r.count && !r.endgame:
		rtt := r.firstAt.Sub(r.start)
		if r.count > 1 {
			f.s.peers.sample(r.id, rtt, r.bytes-int64(blockLen(r.fs.sh, r.first)), now.Sub(r.firstAt))
		} else {
			f.s.peers.sample(r.id, rtt, r.bytes, max(now.Sub(r.start), time.Microsecond))
		}
	}
	if r.superseded {
		f.s.mu.Lock()
		f.s.st.Fetch.Cancelled++
		f.s.mu.Unlock()
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
