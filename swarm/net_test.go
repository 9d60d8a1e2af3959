package swarm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
)

// testNet is an in-process swarm: every member is a Peer plus what it
// announces. Each fetching node sees it through view(self).
type testNet struct {
	mu      sync.Mutex
	members []*member
}

type member struct {
	peer Peer
	has  func(rdrr.Hash) bool
	gone atomic.Bool
}

func (n *testNet) add(p Peer, has func(rdrr.Hash) bool) *member {
	m := &member{peer: p, has: has}
	n.mu.Lock()
	n.members = append(n.members, m)
	n.mu.Unlock()
	return m
}

type netView struct {
	n    *testNet
	self string
}

func (n *testNet) view(self string) PeerSet { return netView{n, self} }

func (v netView) Peers(rdrr.ModelID) []Peer {
	v.n.mu.Lock()
	defer v.n.mu.Unlock()
	var out []Peer
	for _, m := range v.n.members {
		if !m.gone.Load() && m.peer.ID() != v.self {
			out = append(out, m.peer)
		}
	}
	return out
}

func (v netView) Has(p Peer, h rdrr.Hash) bool {
	v.n.mu.Lock()
	defer v.n.mu.Unlock()
	for _, m := range v.n.members {
		if m.peer.ID() == p.ID() {
			return !m.gone.Load() && m.has(h)
		}
	}
	return false
}

// storePeer serves blocks from a real Store, like a network peer would:
// it does not verify, a bounded number of requests at a time (upload
// slots), with a delay per block standing in for the link.
type storePeer struct {
	id       string
	s        *Store
	slots    chan struct{}
	perBlock time.Duration

	mu     sync.Mutex
	served map[rdrr.Hash]int64 // bytes per shard
	// mangle, when set, may change a block before it is sent (bad peers),
	// or end the request: it returns the data to send, or an error.
	mangle func(index int, data []byte) ([]byte, error)
	// limit > 0: answer at most limit blocks of a request, then return nil.
	limit  int
	blocks atomic.Int64
}

func newStorePeer(id string, s *Store, slots int, perBlock time.Duration) *storePeer {
	return &storePeer{id: id, s: s, slots: make(chan struct{}, slots), perBlock: perBlock, served: map[rdrr.Hash]int64{}}
}

func (p *storePeer) ID() string { return p.id }

func (p *storePeer) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(int, []byte) error) error {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.slots }()
	buf := make([]byte, sh.BlockSize)
	for i := first; i < first+count; i++ {
		if p.limit > 0 && i-first >= p.limit {
			return nil
		}
		if p.perBlock > 0 {
			t := time.NewTimer(p.perBlock)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		n, err := p.s.ReadBlock(sh.Hash, i, buf)
		if err != nil {
			return err
		}
		data := buf[:n]
		if p.mangle != nil {
			if data, err = p.mangle(i, data); err != nil {
				return err
			}
		}
		p.blocks.Add(1)
		p.mu.Lock()
		p.served[sh.Hash] += int64(len(data))
		p.mu.Unlock()
		if err := fn(i, data); err != nil {
			return err
		}
	}
	return nil
}

func (p *storePeer) servedBytes(h rdrr.Hash) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served[h]
}

// flipper flips a byte in every k-th block it sends.
func flipper(k int) func(int, []byte) ([]byte, error) {
	var n atomic.Int64
	return func(i int, data []byte) ([]byte, error) {
		if n.Add(1)%int64(k) == 0 {
			bad := append([]byte(nil), data...)
			bad[len(bad)/2] ^= 0x10
			return bad, nil
		}
		return data, nil
	}
}

// stallPeer accepts every request and never answers.
type stallPeer struct {
	id    string
	calls atomic.Int64
}

func (p *stallPeer) ID() string { return p.id }
func (p *stallPeer) ReadBlocks(ctx context.Context, _ rdrr.Shard, _, _ int, _ func(int, []byte) error) error {
	p.calls.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

// errPeer fails every request with err (default: a generic error).
type errPeer struct {
	id    string
	err   error
	calls atomic.Int64
}

func (p *errPeer) ID() string { return p.id }
func (p *errPeer) ReadBlocks(context.Context, rdrr.Shard, int, int, func(int, []byte) error) error {
	p.calls.Add(1)
	if p.err != nil {
		return p.err
	}
	return errors.New("internal error")
}

var errLeft = errors.New("peer left")

func peerName(i int) string { return fmt.Sprintf("peer-%d", i) }
