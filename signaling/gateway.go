//go:build !js

package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doppler-llm/doppler/p2p"
	"github.com/doppler-llm/doppler/p2p/rtc"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// Holdings is what a Gateway serves to browsers: the shard protocol's
// provider, and what the node's inventory is built from (the models held
// and which shards are complete). *swarm.Store implements it. When it also
// has a Changes() (<-chan struct{}, func()) method, as *swarm.Store does,
// the gateway re-sends the inventory to every connected browser after each
// change.
type Holdings interface {
	p2p.Provider
	Models() []rdrr.ModelID
	Has(h rdrr.Hash) bool // the whole shard is stored and verified
}

// changeNotifier is implemented by holdings that say when they change.
type changeNotifier interface {
	Changes() (<-chan struct{}, func())
}

// GatewayOptions configure a Gateway. Zero fields take the defaults shown.
type GatewayOptions struct {
	// Loopback: the node is bound to loopback, so pion gathers and accepts
	// UDP4 loopback candidates only, with mDNS off (rtc.Options.Loopback).
	Loopback bool
	// ICEServers are STUN/TURN URLs; none by default (host candidates only).
	// Refused with Loopback.
	ICEServers []string

	MaxRoomPeers      int           // browser connections per room; 32
	MaxPeers          int           // browser connections in all; 256
	AnswerTimeout     time.Duration // to answer an offer and relay the answer; 10 s
	ConnectTimeout    time.Duration // from the answer until the offerer's inventory channel is open, else the connection is closed; 30 s
	InventoryInterval time.Duration // the inventory is re-sent this often (its TTL is 3×, at most wire.MaxTTL); 30 s
	ChangeDelay       time.Duration // store changes are coalesced over this long before the inventory is re-sent; 50 ms
	RejoinDelay       time.Duration // wait before rejoining a room the server removed the node from; 1 s

	// Peer is the template of each connection's rtc.Options (limits and
	// timeouts); Loopback, ICEServers, Logger, PeerID and ServeUnverified
	// are set from the fields here.
	Peer rtc.Options

	Logger *slog.Logger

	// ServeUnverified, for tests only, as rtc.Options.ServeUnverified.
	ServeUnverified bool
}

func (o *GatewayOptions) defaults() {
	set := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	dur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	set(&o.MaxRoomPeers, 32)
	set(&o.MaxPeers, 256)
	dur(&o.AnswerTimeout, 10*time.Second)
	dur(&o.ConnectTimeout, 30*time.Second)
	dur(&o.InventoryInterval, 30*time.Second)
	dur(&o.ChangeDelay, 50*time.Millisecond)
	dur(&o.RejoinDelay, time.Second)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrGatewayClosed is returned by Gateway.Add after Close.
var ErrGatewayClosed = errors.New("signaling: gateway closed")

// Gateway is the node's side of browsers' WebRTC connections. For each
// model it is given (Add) it joins the model's signaling room as a peer
// (Server.Join) and answers every offer addressed to it with an rtc.Peer
// serving the shard protocol from its Holdings: the answer and the node's
// ICE candidates go back through the room, the browser's candidates are
// fed to the peer, and the node's Inventory for the model is sent on the
// doppler-inv/1 channel once the browser opens it, again after every
// change of the holdings and every InventoryInterval.
//
// A connection is closed when the browser leaves the room, when it sends a
// new offer (which replaces it), when the connection fails or the
// inventory channel is not open within ConnectTimeout, when the room is
// removed (Remove, the Add context) and on Close. Offers over MaxRoomPeers
// or MaxPeers, and malformed ones, are ignored (logged; no answer).
type Gateway struct {
	sig  *Server
	hold Holdings
	opts GatewayOptions
	log  *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // room loops, sessions, the change watcher
	seq    atomic.Uint64  // Inventory.Seq: increases with every inventory sent

	mu        sync.Mutex
	closed    bool
	rooms     map[rdrr.ModelID]*gwRoom
	peers     int                              // sessions registered in all rooms
	gen       uint64                           // bumped on every change of the holdings
	manifests map[rdrr.ModelID]*rdrr.Manifest  // parsed manifests (immutable: content-addressed)
	invs      map[rdrr.ModelID]*wire.Inventory // built at gen; cleared on change
	complete  []rdrr.ModelID                   // built at gen; nil when stale
	cache     bool                             // the holdings report changes: caches are valid until one

	answered, refused, bad, connected atomic.Uint64
}

// gwRoom is a room the gateway is in. sessions (guarded by Gateway.mu) are
// the connections through the current endpoint, by browser.
type gwRoom struct {
	id       rdrr.ModelID
	cancel   context.CancelFunc // the room is no longer wanted
	ep       *Endpoint          // the current endpoint (Gateway.mu)
	sessions map[PeerID]*session
}

// session is one browser's connection.
type session struct {
	from   PeerID
	room   *gwRoom
	ep     *Endpoint
	ctx    context.Context
	cancel context.CancelFunc
	kick   chan struct{} // the inventory changed (at most one pending)

	// Guarded by Gateway.mu: peer is nil until created; candidates that
	// arrive before are held in pending.
	peer    *rtc.Peer
	pending []string
}

// NewGateway returns a gateway answering browsers in sig's rooms with
// connections serving hold. Add the models to answer for.
func NewGateway(sig *Server, hold Holdings, opts GatewayOptions) (*Gateway, error) {
	opts.defaults()
	if opts.Loopback && len(opts.ICEServers) > 0 {
		return nil, errors.New("signaling: gateway: ICE servers with a loopback-only node")
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{sig: sig, hold: hold, opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel,
		rooms: make(map[rdrr.ModelID]*gwRoom), manifests: make(map[rdrr.ModelID]*rdrr.Manifest),
		invs: make(map[rdrr.ModelID]*wire.Inventory)}
	if n, ok := hold.(changeNotifier); ok {
		g.cache = true
		ch, stop := n.Changes()
		g.wg.Add(1)
		go g.watch(ch, stop)
	}
	return g, nil
}

// GatewayStats is a snapshot of a gateway's state and counters.
type GatewayStats struct {
	Rooms, Peers int    // now: rooms joined, browser connections
	Answered     uint64 // offers answered
	Connected    uint64 // connections whose inventory channel opened
	Refused      uint64 // offers ignored: over MaxRoomPeers or MaxPeers
	Bad          uint64 // offers ignored: malformed, or the answer failed
}

// Stats returns a snapshot, for tests and monitoring.
func (g *Gateway) Stats() GatewayStats {
	g.mu.Lock()
	st := GatewayStats{Rooms: len(g.rooms), Peers: g.peers}
	g.mu.Unlock()
	st.Answered, st.Connected = g.answered.Load(), g.connected.Load()
	st.Refused, st.Bad = g.refused.Load(), g.bad.Load()
	return st
}

// Add joins model id's room and answers the browsers' offers there until
// ctx is done, Remove or Close. Adding a room already joined does nothing.
// The errors are Server.Join's (ErrUnknownRoom, ErrRoomFull, …) and
// ErrGatewayClosed. If the server removes the node from the room (too
// slow), the gateway rejoins after RejoinDelay.
func (g *Gateway) Add(ctx context.Context, id rdrr.ModelID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrGatewayClosed
	}
	if g.rooms[id] != nil {
		g.mu.Unlock()
		return nil
	}
	rctx, rcancel := context.WithCancel(g.ctx)
	r := &gwRoom{id: id, cancel: rcancel, sessions: make(map[PeerID]*session)}
	g.rooms[id] = r
	g.mu.Unlock()
	stop := context.AfterFunc(ctx, rcancel)
	fail := func(err error) error {
		stop()
		rcancel()
		g.mu.Lock()
		if g.rooms[id] == r {
			delete(g.rooms, id)
		}
		g.mu.Unlock()
		return err
	}
	ep, err := g.sig.Join(rctx, id)
	if err != nil {
		if g.ctx.Err() != nil {
			err = ErrGatewayClosed
		}
		return fail(fmt.Errorf("gateway: %w", err))
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		ep.Close()
		return fail(ErrGatewayClosed)
	}
	r.ep = ep
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		defer stop()
		g.runRoom(rctx, r, ep)
	}()
	g.log.Debug("gateway: joined room", "room", id.Short(), "id", ep.ID())
	return nil
}

// ID returns the node's peer ID in model id's room (what browsers offer
// to), and false when the gateway is not in that room.
func (g *Gateway) ID(id rdrr.ModelID) (PeerID, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.rooms[id]
	if r == nil || r.ep == nil {
		return "", false
	}
	return r.ep.ID(), true
}

// Remove leaves model id's room, closing its browsers' connections.
func (g *Gateway) Remove(id rdrr.ModelID) {
	g.mu.Lock()
	r := g.rooms[id]
	if r != nil {
		delete(g.rooms, id)
	}
	g.mu.Unlock()
	if r != nil {
		r.cancel()
	}
}

// Close leaves every room, closes every connection and returns when all of
// the gateway's goroutines have ended. It is safe to call more than once.
func (g *Gateway) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
	return nil
}

// runRoom serves room r through ep, and through a new endpoint whenever
// the server removes the node from the room, until ctx is done.
func (g *Gateway) runRoom(ctx context.Context, r *gwRoom, ep *Endpoint) {
	defer func() {
		r.cancel()
		g.mu.Lock()
		if g.rooms[r.id] == r {
			delete(g.rooms, r.id)
		}
		g.mu.Unlock()
	}()
	for {
		g.serveRoom(ctx, r, ep)
		err := ep.Err()
		ep.Close() // it has left; this releases its context hook
		if ctx.Err() != nil || err == nil || errors.Is(err, ErrClosed) {
			return
		}
		g.log.Warn("gateway: removed from the room; rejoining", "room", r.id.Short(), "err", err, "after", g.opts.RejoinDelay)
		t := time.NewTimer(g.opts.RejoinDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if ep, err = g.sig.Join(ctx, r.id); err != nil {
			if ctx.Err() == nil {
				g.log.Warn("gateway: cannot rejoin the room", "room", r.id.Short(), "err", err)
			}
			return
		}
		g.mu.Lock()
		r.ep = ep
		g.mu.Unlock()
	}
}

// serveRoom handles ep's messages until it leaves the room, then ends the
// sessions made through it.
func (g *Gateway) serveRoom(ctx context.Context, r *gwRoom, ep *Endpoint) {
	mctx, mcancel := context.WithCancel(ctx)
	defer func() {
		mcancel()
		g.mu.Lock()
		g.peers -= len(r.sessions)
		clear(r.sessions)
		g.mu.Unlock()
	}()
	for m := range ep.Recv() {
		switch m.Type {
		case TypeOffer:
			g.offer(mctx, r, ep, m)
		case TypeCandidate:
			g.candidate(r, m)
		case TypeLeave:
			if s := g.unregister(r, m.ID, nil); s != nil {
				g.log.Debug("gateway: browser left", "room", r.id.Short(), "peer", m.ID)
				s.cancel()
			}
		case TypeJoin:
			// A browser offers to the peers of its welcome; nothing to do.
		default:
			g.log.Debug("gateway: ignoring a message", "room", r.id.Short(), "peer", m.From, "type", m.Type)
		}
	}
}

// offer starts a session answering m, replacing the browser's previous one.
func (g *Gateway) offer(ctx context.Context, r *gwRoom, ep *Endpoint, m Message) {
	log := g.log.With("room", r.id.Short(), "peer", m.From)
	sdp, err := offerSDP(m.SDP)
	if err != nil {
		g.bad.Add(1)
		log.Info("gateway: ignoring a bad offer", "err", err)
		return
	}
	g.mu.Lock()
	if g.closed || ctx.Err() != nil {
		g.mu.Unlock()
		return
	}
	old := r.sessions[m.From]
	if old == nil && (len(r.sessions) >= g.opts.MaxRoomPeers || g.peers >= g.opts.MaxPeers) {
		inRoom, all := len(r.sessions), g.peers
		g.mu.Unlock()
		g.refused.Add(1)
		log.Info("gateway: offer ignored: too many connections", "room_peers", inRoom, "max_room_peers", g.opts.MaxRoomPeers,
			"peers", all, "max_peers", g.opts.MaxPeers)
		return
	}
	if old != nil {
		delete(r.sessions, m.From)
		g.peers--
		old.cancel()
	}
	s := &session{from: m.From, room: r, ep: ep, kick: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(ctx)
	r.sessions[m.From] = s
	g.peers++
	g.wg.Add(1)
	g.mu.Unlock()
	if old != nil {
		log.Debug("gateway: a new offer replaces the connection")
	}
	go func() {
		defer g.wg.Done()
		g.runSession(s, sdp, log)
	}()
}

// candidate feeds a browser's ICE candidate to its connection.
func (g *Gateway) candidate(r *gwRoom, m Message) {
	g.mu.Lock()
	s := r.sessions[m.From]
	if s == nil {
		g.mu.Unlock()
		g.log.Debug("gateway: candidate from a browser with no connection", "room", r.id.Short(), "peer", m.From)
		return
	}
	p := s.peer
	if p == nil {
		if len(s.pending) < 64 {
			s.pending = append(s.pending, string(m.Candidate))
		}
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	if err := p.AddCandidate(string(m.Candidate)); err != nil {
		g.log.Debug("gateway: remote candidate", "room", r.id.Short(), "peer", m.From, "err", err)
	}
}

// unregister removes the session of from in r (only s, when s is not nil)
// and returns it, or nil when there was none.
func (g *Gateway) unregister(r *gwRoom, from PeerID, s *session) *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	cur := r.sessions[from]
	if cur == nil || (s != nil && cur != s) {
		return nil
	}
	delete(r.sessions, from)
	g.peers--
	return cur
}

// runSession is one browser's connection: answer, trickle, inventory,
// until the session ends or the connection fails.
func (g *Gateway) runSession(s *session, offer string, log *slog.Logger) {
	defer func() {
		g.unregister(s.room, s.from, s)
		s.cancel()
	}()
	po := g.opts.Peer
	po.Loopback, po.ICEServers, po.Logger = g.opts.Loopback, g.opts.ICEServers, g.log.With("room", s.room.id.Short())
	po.PeerID, po.ServeUnverified = string(s.from), g.opts.ServeUnverified
	p, err := rtc.NewPeer(po, g.hold)
	if err != nil {
		log.Warn("gateway: new peer connection", "err", err)
		return
	}
	defer p.Close()
	g.mu.Lock()
	s.peer = p
	pending := s.pending
	s.pending = nil
	g.mu.Unlock()
	for _, c := range pending {
		if err := p.AddCandidate(c); err != nil {
			log.Debug("gateway: remote candidate", "err", err)
		}
	}
	p.OnInventory(func(inv *wire.Inventory) {
		log.Debug("gateway: browser inventory", "model", inv.Model.Short(), "shards", inv.Have.Count(), "seq", inv.Seq)
	})
	if err := g.answer(s, p, offer); err != nil {
		switch {
		case errors.Is(err, rtc.ErrSignaling):
			g.bad.Add(1)
			log.Info("gateway: ignoring a bad offer", "err", err)
		case s.ctx.Err() == nil:
			log.Info("gateway: offer not answered", "err", err)
		}
		return
	}
	g.answered.Add(1)
	// Candidates only after the answer: a browser cannot add them before
	// its remote description. Those gathered meanwhile were held.
	p.OnCandidate(func(c string) {
		err := s.ep.Send(s.ctx, Message{Type: TypeCandidate, To: s.from, Candidate: json.RawMessage(c)})
		if err != nil && s.ctx.Err() == nil {
			log.Debug("gateway: relaying a candidate", "err", err)
		}
	})
	g.inventoryLoop(s, p, log)
}

// answer answers offer on p and relays the answer to the browser.
func (g *Gateway) answer(s *session, p *rtc.Peer, offer string) error {
	ctx, cancel := context.WithTimeout(s.ctx, g.opts.AnswerTimeout)
	defer cancel()
	sdp, err := p.Answer(ctx, offer)
	if err != nil {
		return fmt.Errorf("room %s: peer %s: answer: %w", s.room.id.Short(), s.from, err)
	}
	b, err := json.Marshal(sessionDescription{Type: "answer", SDP: sdp})
	if err != nil {
		return fmt.Errorf("room %s: peer %s: answer: %w", s.room.id.Short(), s.from, err)
	}
	if err := s.ep.Send(ctx, Message{Type: TypeAnswer, To: s.from, SDP: b}); err != nil {
		return fmt.Errorf("room %s: peer %s: relaying the answer: %w", s.room.id.Short(), s.from, err)
	}
	return nil
}

// inventoryLoop sends the node's inventory once the browser's inventory
// channel opens, then on every change and every InventoryInterval, until
// the session ends or the connection fails.
func (g *Gateway) inventoryLoop(s *session, p *rtc.Peer, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(s.ctx, g.opts.ConnectTimeout)
	err := g.sendInventory(ctx, s, p)
	cancel()
	switch {
	case s.ctx.Err() != nil:
		return
	case err != nil && ctx.Err() != nil:
		log.Info("gateway: browser did not connect", "within", g.opts.ConnectTimeout)
		return
	case err != nil:
		log.Info("gateway: browser connection ended", "err", err)
		return
	}
	g.connected.Add(1)
	log.Info("gateway: browser connected")
	t := time.NewTicker(g.opts.InventoryInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			log.Info("gateway: browser connection closed")
			return
		case <-p.Done():
			log.Info("gateway: browser connection ended")
			return
		case <-s.kick:
		case <-t.C:
		}
		if err := g.sendInventory(s.ctx, s, p); err != nil {
			if s.ctx.Err() == nil {
				log.Info("gateway: browser connection ended", "err", err)
			}
			return
		}
	}
}

// sendInventory sends the node's current inventory of s's model to p.
func (g *Gateway) sendInventory(ctx context.Context, s *session, p *rtc.Peer) error {
	inv := *g.inventory(s.room.id)
	inv.Peer = string(s.ep.ID())
	inv.Seq = g.seq.Add(1)
	if err := p.SendInventory(ctx, &inv); err != nil {
		return fmt.Errorf("room %s: peer %s: %w", s.room.id.Short(), s.from, err)
	}
	return nil
}

// inventory returns the node's inventory of model id (Peer and Seq unset):
// which of its shards are held complete, and the models held complete.
// With holdings that report changes it is cached until the next change.
func (g *Gateway) inventory(id rdrr.ModelID) *wire.Inventory {
	g.mu.Lock()
	gen := g.gen
	if inv := g.invs[id]; inv != nil && g.cache {
		g.mu.Unlock()
		return inv
	}
	g.mu.Unlock()
	have := wire.NewBitmap(0)
	if m := g.manifest(id); m != nil {
		have, _ = swarm.HaveBitmap(m, g.hold)
	}
	ttl := min(3*g.opts.InventoryInterval/time.Second, wire.MaxTTL)
	inv := &wire.Inventory{Model: id, Have: have, Models: g.completeModels(), TTL: uint32(max(ttl, 1))}
	g.mu.Lock()
	if g.cache && g.gen == gen {
		g.invs[id] = inv
	}
	g.mu.Unlock()
	return inv
}

// completeModels lists the models whose every shard is held (at most
// wire.MaxModels).
func (g *Gateway) completeModels() []rdrr.ModelID {
	g.mu.Lock()
	gen := g.gen
	if g.complete != nil && g.cache {
		c := g.complete
		g.mu.Unlock()
		return c
	}
	g.mu.Unlock()
	out := []rdrr.ModelID{}
	for _, id := range g.hold.Models() {
		m := g.manifest(id)
		if m == nil {
			continue
		}
		if _, all := swarm.HaveBitmap(m, g.hold); all {
			out = append(out, id)
			if len(out) == wire.MaxModels {
				break
			}
		}
	}
	g.mu.Lock()
	if g.cache && g.gen == gen {
		g.complete = out
	}
	g.mu.Unlock()
	return out
}

// manifest returns model id's parsed manifest, or nil when the holdings
// lack it.
func (g *Gateway) manifest(id rdrr.ModelID) *rdrr.Manifest {
	g.mu.Lock()
	m := g.manifests[id]
	g.mu.Unlock()
	if m != nil {
		return m
	}
	b, _, ok := g.hold.Manifest(id)
	if !ok {
		return nil
	}
	m, err := rdrr.ParseManifest(b)
	if err != nil {
		g.log.Warn("gateway: unreadable manifest", "model", id.Short(), "err", err)
		return nil
	}
	g.mu.Lock()
	g.manifests[id] = m
	g.mu.Unlock()
	return m
}

// watch re-sends inventories after the holdings change, coalescing bursts
// over ChangeDelay.
func (g *Gateway) watch(ch <-chan struct{}, stop func()) {
	defer g.wg.Done()
	defer stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-ch:
		}
		t := time.NewTimer(g.opts.ChangeDelay)
		select {
		case <-g.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		g.changed()
	}
}

// changed drops the cached inventories (and the manifests of models no
// longer held) and kicks every session to re-send.
func (g *Gateway) changed() {
	held := make(map[rdrr.ModelID]bool)
	for _, id := range g.hold.Models() {
		held[id] = true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gen++
	clear(g.invs)
	g.complete = nil
	for id := range g.manifests {
		if !held[id] {
			delete(g.manifests, id)
		}
	}
	for _, r := range g.rooms {
		for _, s := range r.sessions {
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
}

// sessionDescription is the JSON of an RTCSessionDescription.
type sessionDescription struct {
	Type string `json:"type"`
	SDP  string `json:"sdp"`
}

// offerSDP returns the SDP of an offer message's sdp: an
// RTCSessionDescription object of type offer, or a bare SDP string.
func offerSDP(raw json.RawMessage) (string, error) {
	var bare string
	if err := json.Unmarshal(raw, &bare); err == nil {
		if strings.TrimSpace(bare) == "" {
			return "", errors.New("empty sdp")
		}
		return bare, nil
	}
	var d sessionDescription
	if err := json.Unmarshal(raw, &d); err != nil {
		return "", fmt.Errorf("sdp is neither an RTCSessionDescription nor a string: %w", err)
	}
	if d.Type != "offer" {
		return "", fmt.Errorf("sdp of type %q in an offer", d.Type)
	}
	if strings.TrimSpace(d.SDP) == "" {
		return "", errors.New("empty sdp")
	}
	return d.SDP, nil
}
