package signaling

import (
	"crypto/rand"
	"encoding/hex"
	"slices"

	"github.com/coder/websocket"

	"github.com/doppler-llm/doppler/rdrr"
)

// A room is the peers of one model. Rooms are made by the first join and
// dropped when the last peer leaves. All room and peer state is guarded by
// Server.mu; sends to a peer's queue never block, so the lock is held only
// for map work and channel sends that cannot wait.
type room struct {
	id    rdrr.ModelID
	peers map[PeerID]*peer
}

// A peer is a member of a room: a WebSocket client or an in-process
// Endpoint.
type peer struct {
	id    PeerID
	room  *room
	local bool         // an Endpoint: out is closed when it leaves
	out   chan Message // to the peer; bounded, never blocks a sender
	gone  chan struct{}

	// Set under Server.mu before gone is closed.
	left   bool
	code   websocket.StatusCode
	reason string
}

// list returns the room's peer IDs but except, sorted, never nil.
func (r *room) list(except PeerID) []PeerID {
	ids := make([]PeerID, 0, len(r.peers))
	for id := range r.peers {
		if id != except {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func newPeerID() PeerID {
	var b [8]byte
	rand.Read(b[:])
	return PeerID(hex.EncodeToString(b[:]))
}

// join adds a new peer to room id, making the room if needed. A WebSocket
// peer finds its welcome first in its queue; the others get a join.
func (s *Server) join(id rdrr.ModelID, local bool) (*peer, []PeerID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, ErrClosed
	}
	r := s.rooms[id]
	if r == nil {
		if len(s.rooms) >= s.opts.MaxRooms {
			return nil, nil, ErrTooManyRooms
		}
		r = &room{id: id, peers: make(map[PeerID]*peer)}
		s.rooms[id] = r
	} else if len(r.peers) >= s.opts.MaxRoomSize {
		return nil, nil, ErrRoomFull
	}
	pid := newPeerID()
	for r.peers[pid] != nil { // 64 random bits: in practice never loops
		pid = newPeerID()
	}
	p := &peer{id: pid, room: r, local: local, out: make(chan Message, s.opts.QueueSize), gone: make(chan struct{})}
	others := r.list("")
	if !local {
		p.out <- Message{Type: TypeWelcome, ID: pid, Room: id.String(), Peers: others, ICEServers: s.opts.ICEServers}
	}
	r.peers[pid] = p
	s.notify(r, Message{Type: TypeJoin, ID: pid}, pid)
	s.stats.joins.Add(1)
	return p, others, nil
}

// notify sends a server notification to every peer of r but except. A peer whose
// queue is full has fallen too far behind to keep a true view of the room:
// it is removed. Called with s.mu held.
func (s *Server) notify(r *room, m Message, except PeerID) {
	var slow []*peer
	for _, q := range r.peers {
		if q.id == except {
			continue
		}
		select {
		case q.out <- m:
		default:
			slow = append(slow, q)
		}
	}
	for _, q := range slow {
		s.log.Info("signaling: peer too slow", "room", r.id.Short(), "peer", q.id)
		s.leaveLocked(q, CloseTimeout, "too slow")
	}
}

// leave removes p from its room, once; the others get a leave. code and
// reason say why (the WebSocket close the client gets).
func (s *Server) leave(p *peer, code websocket.StatusCode, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaveLocked(p, code, reason)
}

func (s *Server) leaveLocked(p *peer, code websocket.StatusCode, reason string) {
	if p.left {
		return
	}
	p.left, p.code, p.reason = true, code, reason
	r := p.room
	delete(r.peers, p.id)
	if len(r.peers) == 0 && s.rooms[r.id] == r {
		delete(s.rooms, r.id)
	}
	close(p.gone)
	if p.local {
		close(p.out)
	}
	switch code {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusAbnormalClosure:
	default:
		s.stats.kicked.Add(1)
	}
	if !s.closed {
		s.notify(r, Message{Type: TypeLeave, ID: p.id}, "")
	}
}

// relay sends m (offer, answer or candidate, already checked) from p to
// m.To in p's room, with From set here. It returns "" or an error code.
func (s *Server) relay(p *peer, m *Message) string {
	out := Message{Type: m.Type, From: p.id, SDP: m.SDP, Candidate: m.Candidate}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.left {
		return CodeUnknownPeer
	}
	q := p.room.peers[m.To]
	if q == nil || q == p {
		return CodeUnknownPeer
	}
	select {
	case q.out <- out:
		s.stats.relayed.Add(1)
		return ""
	default:
		s.stats.busy.Add(1)
		return CodePeerBusy
	}
}

// others returns the peers of p's room but p.
func (s *Server) others(p *peer) []PeerID {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.left {
		return []PeerID{}
	}
	return p.room.list(p.id)
}
