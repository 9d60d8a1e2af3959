package p2p

import (
	"math/bits"
	"sync"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
)

// spread is a super-seed's memory of the blocks it sent (BitTorrent's
// initial seeding): a block sent to one peer is not sent to another until
// the first has had time to share it on, so that the seed's upload, the
// scarce resource of a new model's swarm, goes to blocks the swarm lacks.
// At 100 simulated peers the seed sent 23 of 64 blocks two to four times,
// to peers that could not yet see the first receiver's copy.
//
// Each further send of a block doubles the wait before the next one
// (window, 2·window, 4·window, … up to spreadMaxDoublings): a block the
// swarm already had twice needs a seed's copy less, and at 1,000
// simulated peers the seed sent the model 2.09 times with a fixed window,
// most of it blocks sent again every few seconds to peers that asked it
// first. A block's count is forgotten once it was not sent for the
// longest wait.
//
// The window also grows with the swarm (spreadScale): a first receiver's
// copy takes longer to become known to every peer in a larger one, and
// at 300 simulated peers nearly every peer, judging the territories
// from the part of the swarm it knew, asked the seed for some shard as
// its own, so that a 2 s window sent the model 2.1 times.
type spread struct {
	window time.Duration // 0: off

	mu     sync.Mutex
	blocks map[spreadKey]spreadRec
	askers map[string]time.Time // peers that asked for blocks, when last
	sweep  time.Time
}

type spreadKey struct {
	shard rdrr.Hash
	block uint32
}

type spreadRec struct {
	peer  string
	until time.Time // zero while the block is being sent
	sends int       // completed sends so far
}

// spreadMaxDoublings caps the doubling of the window: at most 16 windows
// between sends of a block.
const spreadMaxDoublings = 4

// wait is how long others wait for a block after its sends-th send.
func (s *spread) wait(sends int) time.Duration {
	return s.window * time.Duration(spreadScale(len(s.askers))) << min(max(sends-1, 0), spreadMaxDoublings)
}

// spreadScale is the window's multiple for a swarm of n peers asking: 1
// below 32 peers, then one more for each doubling (5 at 300, 6 at
// 1,000), about the hops a block's announcement takes to reach them.
// At 300 simulated peers (2 Mbit/s, 4 MiB in 256 KiB shards) the seed
// sent 2.12× the model with a fixed window, 1.74× with one more per
// doubling from 64 peers and 1.55× with this, the swarm no slower.
func spreadScale(n int) int {
	return max(1, bits.Len(uint(n/16)))
}

// claim reports whether blocks [first, first+count) of shard may be sent
// to peer now: none of them is being sent to another peer or was sent to
// one within the window. When they may, they are marked as being sent to
// peer, and done must be called when the answer ends (sent tells whether
// it went out whole: a failed send frees the blocks at once).
func (s *spread) claim(shard rdrr.Hash, first, count uint32, peer string, now time.Time) (done func(sent bool, now time.Time), ok bool) {
	if s.window <= 0 {
		return func(bool, time.Time) {}, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.blocks == nil {
		s.blocks, s.askers = map[spreadKey]spreadRec{}, map[string]time.Time{}
	}
	if now.Sub(s.sweep) > s.window {
		forget := s.wait(spreadMaxDoublings + 1)
		for k, r := range s.blocks {
			if !r.until.IsZero() && now.Sub(r.until) >= forget {
				delete(s.blocks, k)
			}
		}
		for p, at := range s.askers {
			if now.Sub(at) >= forget {
				delete(s.askers, p)
			}
		}
		s.sweep = now
	}
	s.askers[peer] = now
	for b := first; b < first+count; b++ {
		r, seen := s.blocks[spreadKey{shard, b}]
		if seen && r.peer != peer && (r.until.IsZero() || now.Before(r.until)) {
			return nil, false
		}
	}
	prev := make([]spreadRec, count)
	for i := range count {
		k := spreadKey{shard, first + i}
		prev[i] = s.blocks[k]
		s.blocks[k] = spreadRec{peer: peer, sends: prev[i].sends}
	}
	start := now
	return func(sent bool, now time.Time) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i := range count {
			k := spreadKey{shard, first + i}
			if r, ok := s.blocks[k]; !ok || r.peer != peer || !r.until.IsZero() {
				continue // claimed again since
			}
			if sent {
				// The receiver shares it on once it has it: the wait, plus
				// as long again as it took to send (a slow link's receiver
				// announces it that much later).
				n := prev[i].sends + 1
				s.blocks[k] = spreadRec{peer: peer, until: now.Add(s.wait(n) + now.Sub(start)), sends: n}
			} else if prev[i].sends > 0 {
				s.blocks[k] = prev[i] // as before the claim
			} else {
				delete(s.blocks, k)
			}
		}
	}, true
}
