//go:build js && wasm

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/signaling/sigwire"
	"github.com/doppler-llm/doppler/swarm"
)

// client is this browser in one model's swarm: its signaling room, its
// peer connections, the HTTP seed as a fallback, and the OPFS store.
type client struct {
	ctx      context.Context
	log      *slog.Logger
	cancel   context.CancelFunc // ends ctx (set once loaded)
	ev       *events
	store    *store
	signal   string // the base URL of the node whose room is joined
	model    rdrr.ModelID
	loopback bool
	sig      *signaler
	self     string // this browser's peer ID in the room
	seed     *httpPeer
	fetcher  *swarm.Fetcher
	gen      *generator
	busy     chan struct{} // held by a generation (and by close)
	// iceServers come from the welcome (the node's TURN relay on loopback).
	iceServers json.RawMessage

	mu           sync.Mutex
	peers        map[string]*rtcPeer
	rejectedMsgs []string // what was rejected, for the page

	bytesRTC, bytesHTTP atomic.Int64
	nRejected           atomic.Int64
	served              atomic.Int64
	wake                chan struct{}
}

func newClient(ctx context.Context, log *slog.Logger, ev *events, st *store, src source, loopback bool) *client {
	c := &client{ctx: ctx, log: log, ev: ev, store: st, signal: src.signal, model: src.model, loopback: loopback,
		peers: map[string]*rtcPeer{}, wake: make(chan struct{}, 1), busy: make(chan struct{}, 1)}
	c.seed = &httpPeer{c: c, base: src.seed}
	c.fetcher = swarm.NewFetcher(st, swarm.FetcherOptions{Logger: log})
	st.onChange = c.announce
	return c
}

// join enters the model's signaling room and offers a connection to every
// peer already there (the node and other browsers); later arrivals offer
// to us. With wait, it returns once those connections are up and have
// sent their inventories, or after a bounded wait.
func (c *client) join(wait bool) error {
	url := wsURL(c.signal) + "/signal?room=" + c.model.String()
	sig, welcome, err := dialSignal(c.ctx, url)
	if err != nil {
		return err
	}
	c.sig, c.self = sig, string(welcome.ID)
	if len(welcome.ICEServers) > 0 {
		if b, err := json.Marshal(welcome.ICEServers); err == nil {
			c.iceServers = b
		}
	}
	c.ev.log("info", fmt.Sprintf("joined room %s as %s with %d peers", c.model.Short(), c.self, len(welcome.Peers)))
	go c.signalLoop()
	var offered []*rtcPeer
	for _, id := range welcome.Peers {
		p, err := c.addPeer(string(id))
		if err != nil {
			c.ev.log("warn", err.Error())
			continue
		}
		if err := p.offer(); err != nil {
			c.ev.log("warn", err.Error())
			p.Close()
			continue
		}
		offered = append(offered, p)
	}
	if !wait {
		return nil
	}
	// Wait for the connections and their first inventories (bounded).
	ctx, cancel := context.WithTimeout(c.ctx, 8*time.Second)
	defer cancel()
	for _, p := range offered {
		select {
		case <-p.invSeen:
		case <-p.ctx.Done():
		case <-ctx.Done():
		}
	}
	n := 0
	for _, p := range offered {
		if p.usable() {
			n++
		}
	}
	c.ev.log("info", fmt.Sprintf("%d of %d peers connected over WebRTC", n, len(offered)))
	return nil
}

func wsURL(base string) string {
	switch {
	case len(base) > 8 && base[:8] == "https://":
		return "wss://" + base[8:]
	case len(base) > 7 && base[:7] == "http://":
		return "ws://" + base[7:]
	}
	return base
}

// addPeer creates the connection to a peer, replacing an older one.
func (c *client) addPeer(id string) (*rtcPeer, error) {
	p, err := newPeer(c, id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	old := c.peers[id]
	c.peers[id] = p
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	c.changed()
	return p, nil
}

func (c *client) peer(id string) *rtcPeer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers[id]
}

func (c *client) dropPeer(p *rtcPeer) {
	c.mu.Lock()
	if c.peers[p.id] == p {
		delete(c.peers, p.id)
	}
	c.mu.Unlock()
	c.changed()
}

// signalLoop handles the room's messages until the socket closes.
func (c *client) signalLoop() {
	for {
		m, err := c.sig.recv(c.ctx)
		if err != nil {
			if c.ctx.Err() == nil {
				c.ev.log("warn", err.Error())
			}
			return
		}
		switch m.Type {
		case sigwire.TypeJoin:
			c.log.Debug("peer joined", "peer", m.ID)
		case sigwire.TypeLeave:
			if p := c.peer(string(m.ID)); p != nil {
				p.Close()
			}
		case sigwire.TypeOffer:
			p, err := c.addPeer(string(m.From))
			if err != nil {
				c.ev.log("warn", err.Error())
				continue
			}
			go func() {
				if err := p.answer(m.SDP); err != nil {
					c.ev.log("warn", err.Error())
					p.Close()
				}
			}()
		case sigwire.TypeAnswer:
			if p := c.peer(string(m.From)); p != nil {
				go func() {
					if err := p.setRemote(m.SDP, "answer"); err != nil {
						c.ev.log("warn", err.Error())
						p.Close()
					}
				}()
			}
		case sigwire.TypeCandidate:
			if p := c.peer(string(m.From)); p != nil {
				p.remoteCandidate(m.Candidate)
			}
		case sigwire.TypeError:
			c.log.Debug("signaling error", "code", m.Code, "err", m.Error)
		}
	}
}

// changed wakes whoever waits on the peer set (and the page).
func (c *client) changed() { signal(c.wake) }

// usablePeers returns the connected, well-behaved peers.
func (c *client) usablePeers() []*rtcPeer {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*rtcPeer
	for _, p := range c.peers {
		if p.usable() {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b *rtcPeer) int {
		if a.id < b.id {
			return -1
		}
		return 1
	})
	return ps
}

// Peers implements swarm.PeerSet: every usable peer with an inventory of
// the model, and the HTTP seed for shards no such peer holds.
func (c *client) Peers(model rdrr.ModelID) []swarm.Peer {
	var out []swarm.Peer
	for _, p := range c.usablePeers() {
		if inv := p.Inventory(); inv != nil && inv.Model == model {
			out = append(out, p)
		}
	}
	if model == c.model {
		out = append(out, c.seed)
	}
	return out
}

// Has implements swarm.PeerSet.
func (c *client) Has(p swarm.Peer, shard rdrr.Hash) bool {
	if p == swarm.Peer(c.seed) {
		return !c.rtcHolds(shard)
	}
	rp, ok := p.(*rtcPeer)
	if !ok || !rp.usable() {
		return false
	}
	return invHas(rp.Inventory(), c.store, c.model, shard)
}

// rtcHolds reports whether a usable peer announced the shard.
func (c *client) rtcHolds(shard rdrr.Hash) bool {
	for _, p := range c.usablePeers() {
		if invHas(p.Inventory(), c.store, c.model, shard) {
			return true
		}
	}
	return false
}

// invHas reads an inventory's bitmap for a shard of model.
func invHas(inv *wire.Inventory, st *store, model rdrr.ModelID, shard rdrr.Hash) bool {
	if inv == nil || inv.Model != model {
		return false
	}
	sm, ok := st.Model(model)
	if !ok {
		return false
	}
	i, ok := sm.index[shard]
	return ok && inv.Have.Has(i)
}

// ID is this browser's place on the fetcher's territory ring.
func (c *client) ID() string { return c.self }

// inventory is what this browser announces: the model's complete shards.
func (c *client) inventory() *wire.Inventory {
	sm, ok := c.store.Model(c.model)
	if !ok || c.self == "" {
		return nil
	}
	have, all := swarm.HaveBitmap(sm.m, c.store)
	inv := &wire.Inventory{Peer: c.self, Model: c.model, Have: have, Seq: uint64(time.Now().UnixNano()), TTL: 120}
	if all {
		inv.Models = []rdrr.ModelID{c.model}
	}
	return inv
}

// announce sends the inventory to every connected peer (a shard completed).
func (c *client) announce() {
	for _, p := range c.usablePeers() {
		go p.sendInventory()
	}
}

// received counts verified block bytes by transport.
func (c *client) received(transport string, n int) {
	if transport == "http" {
		c.bytesHTTP.Add(int64(n))
	} else {
		c.bytesRTC.Add(int64(n))
	}
}

// rejected records a bad block from a peer.
func (c *client) rejected(peer string, err error) {
	c.nRejected.Add(1)
	msg := fmt.Sprintf("rejected a block from peer %s: %v", peer, err)
	c.mu.Lock()
	c.rejectedMsgs = append(c.rejectedMsgs, msg)
	c.mu.Unlock()
	c.ev.log("warn", msg)
}

// manifest gets the model's manifest: from OPFS, else from a peer, else
// from the HTTP seed; every path checks it hashes to the model ID.
func (c *client) manifest() error {
	if _, ok := c.store.Model(c.model); ok {
		return nil
	}
	for _, p := range c.usablePeers() {
		ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
		raw, sig, err := p.Manifest(ctx, c.model)
		cancel()
		if err != nil {
			c.ev.log("warn", err.Error())
			continue
		}
		c.received("webrtc", len(raw)+len(sig))
		c.ev.log("info", "manifest from peer "+p.id)
		return c.store.AddManifest(c.model, raw, sig)
	}
	raw, sig, err := c.seed.Manifest(c.ctx, c.model)
	if err != nil {
		return err
	}
	c.received("http", len(raw)+len(sig))
	c.ev.log("info", "manifest from the HTTP seed")
	return c.store.AddManifest(c.model, raw, sig)
}

// download fetches every shard the store lacks.
func (c *client) download() error {
	sm, ok := c.store.Model(c.model)
	if !ok {
		return errors.New("no manifest")
	}
	start := time.Now()
	err := c.fetcher.Fetch(c.ctx, c.model, sm.m, c, swarm.FetchOptions{
		WaitPeers: 20 * time.Second,
		Progress: func(done, total int64, peers int) {
			c.ev.progress(done, total, peers, time.Since(start), c.bytesRTC.Load(), c.bytesHTTP.Load())
		},
	})
	if err != nil {
		return fmt.Errorf("download %s: %w", c.model.Short(), err)
	}
	c.announce()
	return nil
}
