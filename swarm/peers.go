package swarm

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// Peer is a remote node that serves shard blocks (p2p's *Remote satisfies
// it; tests use in-process fakes).
type Peer interface {
	// ID names the peer stably (a libp2p peer ID).
	ID() string
	// ReadBlocks asks for blocks [first, first+count) of shard sh and calls
	// fn for each block received, in order, one call at a time; data is
	// valid only during the call. It returns when the range is done, fn
	// returns an error (which it returns), or ctx ends — promptly, since
	// ctx is how a stalled request is cut off. A peer may return nil after
	// fewer blocks than asked (the fetcher re-asks elsewhere for the rest).
	//
	// Implementations may or may not verify blocks (against Merkle proofs,
	// say) before calling fn; the fetcher hashes every block against
	// sh.Blocks itself before anything is written. An error wrapping
	// rdrr.ErrBadBlock means the peer sent a bad block.
	ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(index int, data []byte) error) error
}

// PeerSet says who holds what, from gossiped inventories. It is read on
// every scheduling pass, so peers that join or leave are picked up while a
// fetch runs. Both methods must be fast and must not block.
type PeerSet interface {
	// Peers returns the peers that may hold shards of the model.
	Peers(model rdrr.ModelID) []Peer
	// Has reports whether p announced the complete shard.
	Has(p Peer, shard rdrr.Hash) bool
}

// PartialSet is a PeerSet that also knows which blocks of a shard a peer
// holds while it holds the shard only partly (announced in its
// inventory). The fetcher asks such a peer for those blocks only. It is
// read on every scheduling pass: it must be fast and must not block.
type PartialSet interface {
	PeerSet
	// Blocks returns the blocks of shard that p announced holding,
	// verified, while it holds the shard only partly; false when it
	// announced none.
	Blocks(p Peer, shard rdrr.Hash) (wire.Bitmap, bool)
}

// HoldingSet is a PartialSet that answers for many shards in one call. The
// fetcher prefers it: a scheduling pass then costs one call per peer
// instead of two per peer and shard (at a thousand peers, those calls were
// a third of a simulated swarm's CPU).
type HoldingSet interface {
	PartialSet
	// Holding sets has[i] to Has(p, shards[i]) and part[i] to the blocks
	// Blocks(p, shards[i]) returns where that is false (the zero Bitmap
	// when it returns none). has and part have len(shards) elements.
	Holding(p Peer, shards []rdrr.Hash, has []bool, part []wire.Bitmap)
}

// PeerStats is what this node measured of one peer, across fetches.
type PeerStats struct {
	ID string
	// RTT and Throughput are EWMAs: the time to the first block of a
	// request, and bytes/s after it. Samples counts the requests measured.
	RTT        time.Duration
	Throughput float64
	Samples    int

	Requests      int   // requests sent
	BytesReceived int64 // every byte received, good, bad or duplicate
	BytesUseful   int64 // verified bytes that were new to the store
	Duplicates    int   // endgame copies that arrived second
	BadBlocks     int   // blocks that failed verification
	Timeouts      int   // requests cut off for stalling
	Errors        int   // requests that failed otherwise
	Short         int   // requests answered with fewer blocks than asked
	Gone          int   // requests ended by the peer going away (churn: never held against it)
	SetAside      int   // times it was set aside for a backoff after failed requests
	// Dropped lists the models this peer is no longer asked for (it sent a
	// bad block for them).
	Dropped []rdrr.ModelID
}

// EWMA weight of a new sample.
const ewmaAlpha = 0.3

type peerRec struct {
	PeerStats
	dropped map[rdrr.ModelID]bool
}

// peerTable keeps per-peer measurements for the lifetime of a Store.
type peerTable struct {
	mu sync.Mutex
	m  map[string]*peerRec
	// typical is the median throughput of the peers measured, the prior
	// for a peer known only by its probe (0 while none is measured).
	typical float64
}

func newPeerTable() *peerTable { return &peerTable{m: map[string]*peerRec{}} }

func (t *peerTable) rec(id string) *peerRec {
	r, ok := t.m[id]
	if !ok {
		r = &peerRec{PeerStats: PeerStats{ID: id}, dropped: map[rdrr.ModelID]bool{}}
		t.m[id] = r
	}
	return r
}

func (t *peerTable) update(id string, f func(r *peerRec)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f(t.rec(id))
}

// retypical recomputes typical. t.mu held.
func (t *peerTable) retypical() {
	var ts []float64
	for _, r := range t.m {
		if r.Throughput > 0 {
			ts = append(ts, r.Throughput)
		}
	}
	t.typical = 0
	if len(ts) > 0 {
		sort.Float64s(ts)
		t.typical = ts[len(ts)/2]
	}
}

// sample records one request's timing: rtt to the first block, and n bytes
// after it in d. A one-block probe passes n = 0: its time is all latency
// (a first request may include the dial), which says nothing of the
// throughput; until a longer request measures it, the peer is assumed to
// have the typical throughput of the peers measured.
func (t *peerTable) sample(id string, rtt time.Duration, n int64, d time.Duration) {
	t.update(id, func(r *peerRec) {
		var tput float64
		if d > 0 && n > 0 {
			tput = float64(n) / d.Seconds()
		}
		if r.Samples == 0 {
			r.RTT = rtt
			r.Throughput = tput
		} else {
			r.RTT = time.Duration(ewmaAlpha*float64(rtt) + (1-ewmaAlpha)*float64(r.RTT))
			switch {
			case tput > 0 && r.Throughput > 0:
				r.Throughput = ewmaAlpha*tput + (1-ewmaAlpha)*r.Throughput
			case tput > 0:
				r.Throughput = tput
			}
		}
		r.Samples++
		if tput > 0 {
			t.retypical()
		}
	})
}

// slower records a failed request: the peer looks slower from now on.
func (t *peerTable) slower(id string, timeout time.Duration) {
	t.update(id, func(r *peerRec) {
		r.RTT = time.Duration(ewmaAlpha*float64(timeout) + (1-ewmaAlpha)*float64(r.RTT))
		r.Throughput *= 1 - ewmaAlpha
		if r.Samples == 0 {
			r.Samples = 1
		}
		t.retypical()
	})
}

// linkTime returns the time the peer's measured RTT and throughput need
// for n bytes in blocks of blockSize (while only its latency is known, one
// RTT per block: a probe's one block took that long), and whether it was
// measured at all.
func (t *peerTable) linkTime(id string, n, blockSize int64) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.m[id]
	if !ok || r.Samples == 0 {
		return 0, false
	}
	if r.Throughput > 0 {
		return r.RTT + time.Duration(float64(n)/r.Throughput*float64(time.Second)), true
	}
	return r.RTT * time.Duration(max(1, (n+blockSize-1)/max(blockSize, 1))), true
}

func (t *peerTable) dropped(id string, model rdrr.ModelID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.m[id]
	return ok && r.dropped[model]
}

// estimate returns the expected time to fetch n bytes from the peer,
// rtt + n/throughput (while only its latency is known: the typical
// throughput, or 1 s for the lot if it ever failed or none is measured),
// scaled up by its record of failures and bad blocks, and
// whether the peer was ever measured (unknown peers are probed first).
func (t *peerTable) estimate(id string, n int64) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.m[id]
	if !ok || r.Samples == 0 {
		return 0, false
	}
	est := float64(r.RTT)
	if r.Throughput > 0 {
		est += float64(n) / r.Throughput * float64(time.Second)
	} else if t.typical > 0 && r.Timeouts+r.Errors+r.Short+r.BadBlocks == 0 {
		est += float64(n) / t.typical * float64(time.Second)
	} else {
		est += float64(time.Second)
	}
	// A forged block weighs far more than a failure: such a peer is only
	// worth asking (for another model) if it is much faster than the rest.
	penalty := 1 + 64*float64(r.BadBlocks) + float64(r.Timeouts+r.Errors+r.Short)
	return time.Duration(est * penalty), true
}

func (t *peerTable) snapshot() []PeerStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]PeerStats, 0, len(t.m))
	for _, r := range t.m {
		ps := r.PeerStats
		ps.Dropped = nil
		for id := range r.dropped {
			ps.Dropped = append(ps.Dropped, id)
		}
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// PeerStats returns this node's measurements of every peer it fetched from.
func (s *Store) PeerStats() []PeerStats { return s.fetch.PeerStats() }
