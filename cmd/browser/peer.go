//go:build js && wasm

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall/js"
	"time"

	"github.com/doppler-llm/doppler/p2p/rtc/loopback"
	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling/sigwire"
)

// Limits of a peer connection, as the node's (docs/protocols.md).
const (
	frameTimeout   = 30 * time.Second
	requestTimeout = 10 * time.Second
	openTimeout    = 10 * time.Second
	maxServing     = 16
	maxPendingCand = 64
)

// rtcPeer is one RTCPeerConnection to a node or another browser, speaking
// the shard protocol: it fetches (swarm.Peer: ReadBlocks; Manifest) and
// serves the store on the channels the remote opens.
type rtcPeer struct {
	id       string // the signaling server's peer ID
	c        *client
	pc       js.Value
	log      *slog.Logger
	loopback bool
	ctx      context.Context
	cancel   context.CancelFunc
	sem      chan struct{}
	h        handlers

	mu         sync.Mutex
	haveRemote bool
	pending    []js.Value // remote candidates before the remote description
	inv        *wire.Inventory
	invCh      *channel
	state      string
	chOpen     bool // a data channel opened: the connection is up, whatever connectionState says yet
	bad        bool // sent a bad block: not asked again
	connected  chan struct{}
	invSeen    chan struct{}

	down, up atomic.Int64
}

func newPeer(c *client, id string) (*rtcPeer, error) {
	servers := js.Global().Get("Array").New()
	if len(c.iceServers) > 0 {
		if v := jsonParse(string(c.iceServers)); v.InstanceOf(js.Global().Get("Array")) {
			servers = v
		}
	}
	cfg := object(map[string]any{"iceServers": servers})
	pc, err := newJS("RTCPeerConnection", cfg)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", id, err)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	p := &rtcPeer{id: id, c: c, pc: pc, log: c.log.With("peer", id), loopback: c.loopback, ctx: ctx, cancel: cancel,
		sem: make(chan struct{}, maxServing), connected: make(chan struct{}), invSeen: make(chan struct{}), state: "new"}
	p.on("onicecandidate", func(ev js.Value) {
		cand := ev.Get("candidate")
		if cand.IsNull() {
			p.signal("candidate", json.RawMessage("null"))
			return
		}
		if line := cand.Get("candidate").String(); p.loopback && !loopback.Candidate(line) {
			p.log.Debug("not sending a non-loopback candidate", "candidate", line)
			return
		}
		p.signal("candidate", json.RawMessage(jsonStringify(cand.Call("toJSON"))))
	})
	p.on("onconnectionstatechange", func(js.Value) {
		s := pc.Get("connectionState").String()
		p.mu.Lock()
		p.state = s
		p.mu.Unlock()
		p.log.Debug("connection", "state", s)
		switch s {
		case "connected":
			closeOnce(&p.mu, p.connected)
		case "failed", "closed":
			p.Close()
		}
		c.changed()
	})
	p.on("ondatachannel", func(ev js.Value) { p.remoteChannel(ev.Get("channel")) })
	return p, nil
}

func newJS(class string, args ...any) (v js.Value, err error) {
	ctor := js.Global().Get(class)
	if ctor.IsUndefined() {
		return v, fmt.Errorf("this browser has no %s", class)
	}
	defer func() {
		if e := recover(); e != nil {
			err = fmt.Errorf("new %s: %v", class, e)
		}
	}()
	return ctor.New(args...), nil
}

func closeOnce(mu *sync.Mutex, ch chan struct{}) {
	mu.Lock()
	defer mu.Unlock()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (p *rtcPeer) on(ev string, f func(js.Value)) { p.h.on(p.pc, ev, f) }

// ID names the peer (swarm.Peer).
func (p *rtcPeer) ID() string { return p.id }

func (p *rtcPeer) signal(typ string, payload json.RawMessage) {
	m := sigwire.Message{Type: typ, To: sigwire.PeerID(p.id)}
	if typ == "candidate" {
		m.Candidate = payload
	} else {
		m.SDP = payload
	}
	if err := p.c.sig.send(m); err != nil {
		p.log.Debug("signaling send", "err", err)
	}
}

// offer starts the connection from this side: it opens the inventory
// channel (the offerer does) and sends an offer.
func (p *rtcPeer) offer() error {
	dc, err := call(p.pc, "createDataChannel", invLabel, object(map[string]any{"ordered": true}))
	if err != nil {
		return fmt.Errorf("peer %s: %w", p.id, err)
	}
	p.adoptInventory(dc)
	o, err := callAwait(p.ctx, p.pc, "createOffer")
	if err != nil {
		return fmt.Errorf("peer %s: %w", p.id, err)
	}
	if _, err := callAwait(p.ctx, p.pc, "setLocalDescription", o); err != nil {
		return fmt.Errorf("peer %s: %w", p.id, err)
	}
	p.signal("offer", json.RawMessage(jsonStringify(p.pc.Get("localDescription").Call("toJSON"))))
	return nil
}

// answer takes a remote offer and sends the answer.
func (p *rtcPeer) answer(sdp json.RawMessage) error {
	if err := p.setRemote(sdp, "offer"); err != nil {
		return err
	}
	a, err := callAwait(p.ctx, p.pc, "createAnswer")
	if err != nil {
		return fmt.Errorf("peer %s: %w", p.id, err)
	}
	if _, err := callAwait(p.ctx, p.pc, "setLocalDescription", a); err != nil {
		return fmt.Errorf("peer %s: %w", p.id, err)
	}
	p.signal("answer", json.RawMessage(jsonStringify(p.pc.Get("localDescription").Call("toJSON"))))
	return nil
}

// setRemote sets the remote description (an RTCSessionDescriptionInit, or
// a bare SDP string) and adds the candidates held until then.
func (p *rtcPeer) setRemote(sdp json.RawMessage, typ string) error {
	var desc js.Value
	var s string
	if json.Unmarshal(sdp, &s) == nil {
		desc = object(map[string]any{"type": typ, "sdp": s})
	} else {
		desc = jsonParse(string(sdp))
		if desc.Type() != js.TypeObject || desc.Get("sdp").Type() != js.TypeString || desc.Get("type").String() != typ {
			return fmt.Errorf("peer %s: %s is not a session description", p.id, typ)
		}
	}
	if p.loopback {
		desc.Set("sdp", loopback.SDP(desc.Get("sdp").String()))
	}
	if _, err := callAwait(p.ctx, p.pc, "setRemoteDescription", desc); err != nil {
		return fmt.Errorf("peer %s: %w", p.id, err)
	}
	p.mu.Lock()
	p.haveRemote = true
	pending := p.pending
	p.pending = nil
	p.mu.Unlock()
	for _, c := range pending {
		p.addCandidate(c)
	}
	return nil
}

// remoteCandidate takes a trickled candidate (JSON; null ends them).
func (p *rtcPeer) remoteCandidate(raw json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	v := jsonParse(string(raw))
	if v.Type() == js.TypeString {
		v = object(map[string]any{"candidate": v.String(), "sdpMid": "0", "sdpMLineIndex": 0})
	}
	if v.Type() != js.TypeObject || v.Get("candidate").Type() != js.TypeString {
		p.log.Debug("ignoring a malformed candidate")
		return
	}
	if line := v.Get("candidate").String(); line != "" && p.loopback && !loopback.Candidate(line) {
		return
	}
	p.mu.Lock()
	if !p.haveRemote {
		if len(p.pending) < maxPendingCand {
			p.pending = append(p.pending, v)
		}
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.addCandidate(v)
}

func (p *rtcPeer) addCandidate(v js.Value) {
	go func() {
		if _, err := callAwait(p.ctx, p.pc, "addIceCandidate", v); err != nil {
			p.log.Debug("addIceCandidate", "err", err)
		}
	}()
}

// Connected is closed once the connection is up.
func (p *rtcPeer) Connected() <-chan struct{} { return p.connected }

// usable reports whether the peer is connected and has not misbehaved.
func (p *rtcPeer) usable() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Chromium may deliver a channel's open and first messages before the
	// connectionstatechange to "connected".
	return (p.state == "connected" || p.chOpen) && !p.bad && p.ctx.Err() == nil
}

// Inventory returns the peer's last inventory (nil before the first).
func (p *rtcPeer) Inventory() *wire.Inventory {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inv
}

// adoptInventory reads Inventory frames from the inventory channel.
func (p *rtcPeer) adoptInventory(dc js.Value) {
	ch := newChannel(p.ctx, dc, frameTimeout, p.count)
	p.mu.Lock()
	if p.invCh != nil {
		p.mu.Unlock()
		ch.Close()
		return
	}
	p.invCh = ch
	p.mu.Unlock()
	go func() {
		defer ch.Close()
		if err := ch.waitOpen(p.ctx, openTimeout+frameTimeout); err != nil {
			return
		}
		p.mu.Lock()
		p.chOpen = true
		p.mu.Unlock()
		closeOnce(&p.mu, p.connected)
		p.sendInventory()
		err := shardproto.ReadInventories(shardproto.Frames(idleReader{ch}), func(inv *wire.Inventory) {
			p.mu.Lock()
			p.inv = inv
			p.mu.Unlock()
			closeOnce(&p.mu, p.invSeen)
			p.c.changed()
		})
		p.log.Debug("inventory channel", "err", err)
	}()
}

// idleReader is a channel read with no deadline (the inventory channel
// idles between announcements); its writes go to the channel.
type idleReader struct{ c *channel }

func (r idleReader) Read(b []byte) (int, error) {
	for {
		n, err := r.c.Read(b)
		if !errors.Is(err, errDeadline) {
			return n, err
		}
	}
}

func (r idleReader) Write(b []byte) (int, error) { return r.c.Write(b) }

// sendInventory sends this browser's inventory of the client's model.
func (p *rtcPeer) sendInventory() {
	p.mu.Lock()
	ch := p.invCh
	p.mu.Unlock()
	inv := p.c.inventory()
	if ch == nil || inv == nil {
		return
	}
	select {
	case <-ch.opened:
	default:
		return // sent once the channel opens
	}
	if err := ch.WriteMsg(inv); err != nil {
		p.log.Debug("send inventory", "err", err)
	}
}

// remoteChannel takes a channel the remote opened.
func (p *rtcPeer) remoteChannel(dc js.Value) {
	if !dc.Get("ordered").Bool() || !dc.Get("maxRetransmits").IsNull() || !dc.Get("maxPacketLifeTime").IsNull() {
		call(dc, "close")
		return
	}
	switch dc.Get("label").String() {
	case invLabel:
		p.adoptInventory(dc)
	case shardLabel:
		ch := newChannel(p.ctx, dc, requestTimeout, p.count)
		go p.serve(ch)
	default:
		call(dc, "close")
	}
}

// serve answers the one request of a shard channel and closes it.
func (p *rtcPeer) serve(ch *channel) {
	defer ch.Close()
	if err := ch.waitOpen(p.ctx, openTimeout); err != nil {
		return
	}
	select {
	case p.sem <- struct{}{}:
	default:
		ch.WriteMsg(&wire.Error{Code: wire.CodeBusy, Msg: "too many channels"})
		ch.flush(p.ctx)
		return
	}
	defer func() { <-p.sem }()
	req, err := ch.ReadMsg(wire.MaxFrame)
	switch req.(type) {
	case *wire.ManifestRequest, *wire.BlocksRequest:
	default:
		p.log.Debug("shard channel: bad request", "err", err)
		return
	}
	ch.timeout = frameTimeout
	opts := shardproto.ServeOptions{Logger: p.log, OnBlock: func() { p.c.served.Add(1) }}
	if err := shardproto.Answer(ch, p.c.store, req, opts); err != nil {
		p.log.Debug("shard channel: write", "err", err)
		return
	}
	ch.flush(p.ctx)
}

// open opens a shard channel and waits for it.
func (p *rtcPeer) open(ctx context.Context) (*channel, error) {
	if !p.usable() {
		return nil, fmt.Errorf("peer %s: not connected", p.id)
	}
	dc, err := call(p.pc, "createDataChannel", shardLabel, object(map[string]any{"ordered": true}))
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", p.id, err)
	}
	ch := newChannel(ctx, dc, frameTimeout, p.count)
	if err := ch.waitOpen(ctx, openTimeout); err != nil {
		ch.Close()
		return nil, fmt.Errorf("peer %s: open %s: %w", p.id, shardLabel, err)
	}
	return ch, nil
}

func (p *rtcPeer) count(up, down int) {
	p.up.Add(int64(up))
	p.down.Add(int64(down))
}

// Manifest fetches and verifies a model's manifest.
func (p *rtcPeer) Manifest(ctx context.Context, id rdrr.ModelID) (manifest, sig []byte, err error) {
	ch, err := p.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer ch.Close()
	return shardproto.FetchManifest(ctx, ch, p.id, id)
}

// ReadBlocks fetches blocks of a shard, verifying each (hash and Merkle
// proof) before fn sees it (swarm.Peer). A bad block marks the peer bad:
// it is not asked again.
func (p *rtcPeer) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(index int, data []byte) error) error {
	ch, err := p.open(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	err = shardproto.FetchBlocks(ctx, ch, p.id, sh, first, count, func(i int, data []byte) error {
		p.c.received("webrtc", len(data))
		return fn(i, data)
	})
	if errors.Is(err, rdrr.ErrBadBlock) {
		p.mu.Lock()
		p.bad = true
		p.mu.Unlock()
		p.c.rejected(p.id, err)
	}
	return err
}

// Close closes the connection and forgets the peer.
func (p *rtcPeer) Close() {
	p.mu.Lock()
	if p.ctx.Err() != nil {
		p.mu.Unlock()
		return
	}
	p.cancel()
	p.state = "closed"
	p.mu.Unlock()
	call(p.pc, "close")
	p.h.release()
	p.c.dropPeer(p)
}
