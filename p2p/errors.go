package p2p

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/doppler-llm/doppler/p2p/shardproto"
)

// Errors returned by Remote and the host. Every error wraps at most one of
// these (plus rdrr.ErrBadBlock / rdrr.ErrBadProof / rdrr.ErrBadSignature and
// the wire package's errors where they apply).
var (
	ErrNotFound    = shardproto.ErrNotFound    // the peer does not have the model or shard
	ErrRemote      = shardproto.ErrRemote      // the peer answered another wire.Error
	ErrProtocol    = shardproto.ErrProtocol    // the peer broke the protocol
	ErrTimeout     = shardproto.ErrTimeout     // the peer sent nothing for FrameTimeout
	ErrGone        = shardproto.ErrGone        // the peer went away mid-exchange (churn)
	ErrBadManifest = shardproto.ErrBadManifest // the manifest does not match the model ID
	// ErrClosed: the host is closed.
	ErrClosed = errors.New("host closed")
)

// Stats counts payload bytes (whole frames) sent and received on the
// stream protocols.
type Stats struct {
	Uploaded, Downloaded uint64
	// BlocksServed counts Block frames sent.
	BlocksServed uint64
	// BusyAnswers counts block requests answered CodeBusy because every
	// upload slot was taken (Options.UploadSlots).
	BusyAnswers uint64
	// Gossip counts pubsub traffic (inventory and usage gossip with
	// gossipsub's control messages), apart from the bytes above.
	Gossip GossipStats
	Peers  map[string]PeerStats
}

// PeerStats is the traffic with one peer.
type PeerStats struct {
	Uploaded, Downloaded uint64
	Gossip               GossipStats
}

type stats struct {
	up, down, blocks, busy atomic.Uint64
	mu                     sync.Mutex
	peers                  map[string]*PeerStats
}

func (s *stats) init() { s.peers = map[string]*PeerStats{} }

func (s *stats) add(peer string, up, down uint64) {
	s.up.Add(up)
	s.down.Add(down)
	s.mu.Lock()
	p := s.peers[peer]
	if p == nil {
		p = &PeerStats{}
		s.peers[peer] = p
	}
	p.Uploaded += up
	p.Downloaded += down
	s.mu.Unlock()
}

// Stats returns a snapshot of the traffic counters.
func (n *Host) Stats() Stats {
	st := Stats{Uploaded: n.stats.up.Load(), Downloaded: n.stats.down.Load(),
		BlocksServed: n.stats.blocks.Load(), BusyAnswers: n.stats.busy.Load(), Peers: map[string]PeerStats{}}
	n.stats.mu.Lock()
	for k, v := range n.stats.peers {
		st.Peers[k] = *v
	}
	n.stats.mu.Unlock()
	var per map[string]GossipStats
	st.Gossip, per = n.gossip.tr.snapshot()
	for k, g := range per {
		p := st.Peers[k]
		p.Gossip = g
		st.Peers[k] = p
	}
	return st
}
