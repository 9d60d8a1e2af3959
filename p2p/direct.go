package p2p

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// InventoryProtocol is the direct inventory exchange: the client sends one
// InventoryRequest, the server answers its current Inventory of that model
// (what it announces on the model's topic) or an Error (not found). A
// node asks every peer it connects to for the models it follows, and every
// connected peer when it starts following a model, so it learns who holds
// what without waiting for the next gossip round, which on a large topic
// comes seldom (see refreshPeriod).
const InventoryProtocol = "/doppler/inventory/1"

// Bounds of the direct exchange.
const (
	directAsks    = 8                      // asks in flight per host
	directTimeout = 5 * time.Second        // one ask, stream open to answer
	directRepeat  = 500 * time.Millisecond // a peer is asked again for a model no sooner
	directMemo    = 4096                   // (peer, model) ask times kept
	directQueue   = 256                    // new connections waiting to be asked
)

// direct is the state of the direct inventory exchange.
type direct struct {
	sem  chan struct{} // asks in flight
	mu   sync.Mutex
	last map[directKey]time.Time // when (peer, model) was last asked
}

type directKey struct {
	p  peer.ID
	id rdrr.ModelID
}

// startDirect serves InventoryProtocol and asks each newly connected peer
// for the inventories of the models this host follows.
func (n *Host) startDirect() {
	n.direct.sem = make(chan struct{}, directAsks)
	n.direct.last = map[directKey]time.Time{}
	n.h.SetStreamHandler(InventoryProtocol, n.serveInventory)
	n.watch.sem = make(chan struct{}, watchMax)
	n.h.SetStreamHandler(WatchProtocol, n.serveWatch)
	conns := make(chan peer.ID, directQueue)
	n.h.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		select {
		case conns <- c.RemotePeer():
		default: // a burst of connections: their peers learn by gossip
		}
	}})
	n.goBackground(func() {
		for {
			select {
			case <-n.ctx.Done():
				return
			case p := <-conns:
				ids := n.followed()
				if len(ids) == 0 {
					continue
				}
				n.goBackground(func() {
					for _, id := range ids {
						n.askInventory(n.ctx, p, id)
					}
				})
			}
		}
	})
}

// followed returns the models this host is subscribed to.
func (n *Host) followed() []rdrr.ModelID {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ids []rdrr.ModelID
	for id, ts := range n.topics {
		if ts.subs > 0 {
			ids = append(ids, id)
		}
	}
	return ids
}

// current returns the inventory this host would publish for a model now
// (Peer, Seq and TTL filled in), or false when it announces none. n.mu
// held.
func (n *Host) current(ts *topicState) (wire.Inventory, bool) {
	if ts == nil || ts.announce == nil {
		return wire.Inventory{}, false
	}
	inv := *ts.announce
	if ts.autoTTL {
		ttl := 3 * n.refreshPeriod(n.topicPeers(ts)) / time.Second
		inv.TTL = uint32(max(min(ttl, wire.MaxTTL), 1))
	}
	n.seq = max(n.seq+1, uint64(time.Now().UnixNano()))
	inv.Seq = n.seq
	return inv, true
}

// serveInventory answers one InventoryRequest.
func (n *Host) serveInventory(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	select {
	case n.sem <- struct{}{}:
		defer n.release()
	default:
		s.Reset()
		return
	}
	s.SetDeadline(time.Now().Add(n.opts.RequestTimeout))
	m, err := wire.ReadMessage(s, wire.MaxFrame)
	req, ok := m.(*wire.InventoryRequest)
	if err != nil || !ok {
		n.log.Debug("inventory: bad request", "from", from, "err", err)
		s.Reset()
		return
	}
	n.mu.Lock()
	inv, ok := n.current(n.topics[req.Model])
	n.mu.Unlock()
	var reply wire.Message = &wire.Error{Code: wire.CodeNotFound, Msg: "not announcing " + req.Model.String()}
	if ok {
		reply = &inv
	}
	b, err := wire.Marshal(reply)
	if err != nil {
		n.log.Warn("inventory: encode", "model", req.Model.Short(), "err", err)
		s.Reset()
		return
	}
	s.SetWriteDeadline(time.Now().Add(n.opts.FrameTimeout))
	if _, err := s.Write(b); err != nil {
		n.log.Debug("inventory: write", "to", from, "err", err)
		s.Reset()
		return
	}
	n.gossip.tr.count(from, GossipStats{MessagesSent: 1, BytesSent: uint64(len(b))})
}

// AskInventories asks the given connected peers (all connected peers when
// peers is empty) directly for their inventory of model id, as gossip
// would deliver it, at most directAsks at a time, and returns when every
// answer is in or ctx ends. The answers are kept for Inventories. A peer
// asked for the model within the last half second, or not connected, is
// skipped. The host must be subscribed to the model.
func (n *Host) AskInventories(ctx context.Context, id rdrr.ModelID, peers []string) {
	var ps []peer.ID
	if len(peers) == 0 {
		ps = n.h.Network().Peers()
	}
	for _, s := range peers {
		if p, err := peer.Decode(s); err == nil {
			ps = append(ps, p)
		}
	}
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.askInventory(ctx, p, id)
		}()
	}
	wg.Wait()
}

// askInventory asks connected peer p for its inventory of model id and
// records the answer: it must be an Inventory of p (its Peer) for id.
func (n *Host) askInventory(ctx context.Context, p peer.ID, id rdrr.ModelID) {
	if p == n.h.ID() || n.h.Network().Connectedness(p) != network.Connected || !n.directDue(p, id) {
		return
	}
	select {
	case n.direct.sem <- struct{}{}:
		defer func() { <-n.direct.sem }()
	case <-ctx.Done():
		return
	case <-n.ctx.Done():
		return
	}
	ctx, cancel := context.WithTimeout(ctx, directTimeout)
	defer cancel()
	inv, err := n.fetchInventory(ctx, p, id)
	if err != nil {
		n.log.Debug("inventory: ask", "peer", p, "model", id.Short(), "err", err)
		return
	}
	if inv != nil {
		n.record(id, *inv)
	}
}

// directDue reports whether (p, id) may be asked now, and notes the ask.
func (n *Host) directDue(p peer.ID, id rdrr.ModelID) bool {
	now := time.Now()
	d := &n.direct
	d.mu.Lock()
	defer d.mu.Unlock()
	k := directKey{p, id}
	if t, ok := d.last[k]; ok && now.Sub(t) < directRepeat {
		return false
	}
	if len(d.last) >= directMemo {
		for k, t := range d.last {
			if now.Sub(t) >= directRepeat {
				delete(d.last, k)
			}
		}
	}
	if len(d.last) >= directMemo {
		return true // a flood of peers: ask, unrecorded
	}
	d.last[k] = now
	return true
}

// fetchInventory runs one exchange; a nil inventory with a nil error is a
// peer that announces none for the model.
func (n *Host) fetchInventory(ctx context.Context, p peer.ID, id rdrr.ModelID) (*wire.Inventory, error) {
	s, err := n.h.NewStream(network.WithNoDial(ctx, "inventory"), p, InventoryProtocol)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", InventoryProtocol, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	b, err := wire.Marshal(&wire.InventoryRequest{Model: id})
	if err != nil {
		return nil, err
	}
	if _, err := s.Write(b); err != nil {
		s.Reset()
		return nil, fmt.Errorf("write request: %w", err)
	}
	s.CloseWrite()
	cr := &countReader{r: s}
	m, err := wire.ReadMessage(cr, wire.MaxInventoryFrame)
	n.gossip.tr.count(p, GossipStats{MessagesSent: 1, BytesSent: uint64(len(b)), MessagesReceived: 1, BytesReceived: cr.n})
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("read answer: %w", err)
	}
	switch m := m.(type) {
	case *wire.Inventory:
		if m.Peer != p.String() || m.Model != id {
			s.Reset()
			return nil, fmt.Errorf("inventory of %s for model %s from %s asked for %s", m.Peer, m.Model.Short(), p, id.Short())
		}
		return m, nil
	case *wire.Error:
		if m.Code == wire.CodeNotFound {
			return nil, nil
		}
		return nil, remoteError(p.String(), m)
	}
	s.Reset()
	return nil, fmt.Errorf("%v in answer to an InventoryRequest", m.Type())
}
