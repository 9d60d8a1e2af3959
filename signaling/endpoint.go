package signaling

import (
	"context"
	"fmt"

	"github.com/coder/websocket"

	"github.com/doppler-llm/doppler/rdrr"
)

// Endpoint is the node itself as a peer of a room, without a socket: the
// WebRTC side joins a model's room, learns of browsers from Recv (join,
// leave, and their offers, answers and candidates, with From set), and
// answers them with Send. Browsers see it as any other peer.
//
//	ep, err := srv.Join(ctx, modelID)
//	for m := range ep.Recv() { … ep.Send(ctx, signaling.Message{Type: "answer", To: m.From, SDP: sdp}) }
//
// The endpoint is not rate-limited. Drain Recv promptly: a relay to a full
// queue fails for its sender (peer-busy), and a join or leave that finds it
// full removes the endpoint, as it would a slow browser.
type Endpoint struct {
	s     *Server
	p     *peer
	room  rdrr.ModelID
	peers []PeerID
	stop  func() bool
}

// Join adds the node to room as a peer. It follows the same rules as a
// WebSocket client (Options.Allow, MaxRoomSize, MaxRooms): the errors are
// ErrUnknownRoom, ErrRoomFull, ErrTooManyRooms and ErrClosed. The endpoint
// leaves the room when ctx is done or Close is called.
func (s *Server) Join(ctx context.Context, room rdrr.ModelID) (*Endpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.opts.Allow != nil && !s.opts.Allow(room) {
		return nil, fmt.Errorf("room %s: %w", room.Short(), ErrUnknownRoom)
	}
	p, peers, err := s.join(room, true)
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", room.Short(), err)
	}
	e := &Endpoint{s: s, p: p, room: room, peers: peers}
	e.stop = context.AfterFunc(ctx, func() { s.leave(p, websocket.StatusNormalClosure, "") })
	return e, nil
}

// ID is the endpoint's peer ID in the room.
func (e *Endpoint) ID() PeerID { return e.p.id }

// Room is the room's model ID.
func (e *Endpoint) Room() rdrr.ModelID { return e.room }

// Peers are the other peers that were in the room when the endpoint joined
// (what a WebSocket client gets in its welcome); Recv tells what changes.
func (e *Endpoint) Peers() []PeerID { return e.peers }

// List returns the other peers in the room now.
func (e *Endpoint) List() []PeerID { return e.s.others(e.p) }

// Recv delivers join and leave notifications and relayed offers, answers
// and candidates. It is closed when the endpoint leaves the room; Err says
// why.
func (e *Endpoint) Recv() <-chan Message { return e.p.out }

// Send relays m (type offer or answer with SDP, or candidate with
// Candidate) to the peer m.To; From is set by the server. It never blocks:
// the errors are ErrBadMessage, ErrUnknownPeer, ErrPeerBusy (the peer's
// queue is full; retry later or give up on it) and ErrLeft.
func (e *Endpoint) Send(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if code, text := check(&m); code != "" || m.Type == TypePeers {
		if text == "" {
			text = "use List for the peers"
		}
		return fmt.Errorf("%w: %s", ErrBadMessage, text)
	}
	switch e.s.relay(e.p, &m) {
	case "":
		return nil
	case CodePeerBusy:
		return fmt.Errorf("%s: %w", m.To, ErrPeerBusy)
	default:
		select {
		case <-e.p.gone:
			return ErrLeft
		default:
		}
		return fmt.Errorf("%s: %w", m.To, ErrUnknownPeer)
	}
}

// Close leaves the room; Recv is then closed. It is safe to call more than
// once.
func (e *Endpoint) Close() error {
	e.stop()
	e.s.leave(e.p, websocket.StatusNormalClosure, "")
	return nil
}

// Err is nil while the endpoint is in the room or after it left by Close
// or its context; otherwise (removed as too slow, or the server shut down)
// it says why.
func (e *Endpoint) Err() error {
	select {
	case <-e.p.gone:
	default:
		return nil
	}
	switch e.p.code {
	case websocket.StatusNormalClosure:
		return nil
	case websocket.StatusGoingAway:
		return ErrClosed
	}
	return fmt.Errorf("signaling: removed from room %s: %s", e.room.Short(), e.p.reason)
}
