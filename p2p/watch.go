package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// WatchProtocol pushes a peer's inventory of one model as it changes: the
// client sends one InventoryRequest; the server answers with its current
// Inventory of the model and then, on the same stream, each change, at
// most one message per watchGap: a Have (the shards and blocks gained, a
// few dozen bytes: BitTorrent's HAVE) when that is all that changed, else
// the whole Inventory, which it also sends every refresh period so the
// entry does not expire. While the server announces nothing for the model
// (a fetch not started yet) it sends nothing and waits. It answers an
// Error (not found) and closes when it does not follow the model, and
// resets the stream when it has watchMax watchers. The stream lasts until
// either side closes it.
//
// A fetcher polling InventoryProtocol once a second learned of a
// neighbour's new block seconds late (up to RefreshPeers peers a second):
// at 30 real peers on 40 Mbit/s links that lag, one per hop of a block,
// was a sixth of the swarm's time.
const WatchProtocol = "/doppler/inventory-watch/1"

// Bounds of the watch exchange.
const (
	watchMax = 256                   // watchers one host serves at once
	watchGap = 50 * time.Millisecond // between two pushes to one watcher
)

// ErrWatchUnsupported is WatchInventory's error for a peer that does not
// speak WatchProtocol (or does not follow the model): ask it with
// AskInventories instead.
var ErrWatchUnsupported = errors.New("inventory watch not supported")

// watchers counts the watch streams being served.
type watchers struct{ sem chan struct{} }

// changedCh returns the channel closed at the next change of the host's
// inventory of the topic (Announce, StopAnnouncing). n.mu held.
func (ts *topicState) changedCh() <-chan struct{} {
	if ts.changed == nil {
		ts.changed = make(chan struct{})
	}
	return ts.changed
}

// notify wakes the topic's watchers. n.mu held.
func (ts *topicState) notify() {
	if ts.changed != nil {
		close(ts.changed)
		ts.changed = nil
	}
}

// serveWatch serves one WatchProtocol stream.
func (n *Host) serveWatch(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	select {
	case n.watch.sem <- struct{}{}:
		defer func() { <-n.watch.sem }()
	default:
		s.Reset()
		return
	}
	s.SetReadDeadline(time.Now().Add(n.opts.RequestTimeout))
	m, err := wire.ReadMessage(s, wire.MaxFrame)
	req, ok := m.(*wire.InventoryRequest)
	if err != nil || !ok {
		n.log.Debug("inventory watch: bad request", "from", from, "err", err)
		s.Reset()
		return
	}
	s.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithCancel(n.ctx)
	defer cancel()
	// The client sends nothing more: its close or reset ends the watch.
	go func() {
		io.Copy(io.Discard, s)
		cancel()
	}()
	n.mu.Lock()
	ts := n.topics[req.Model]
	n.mu.Unlock()
	if ts == nil {
		n.writeWatch(s, from, &wire.Error{Code: wire.CodeNotFound, Msg: "not following " + req.Model.String()})
		return
	}
	var (
		last time.Time
		sent *wire.Inventory // the watcher's copy, as of the last push
		tick bool            // the refresh period passed: send it whole
	)
	for {
		n.mu.Lock()
		inv, ok := n.current(ts)
		ch := ts.changedCh()
		refresh := n.refreshPeriod(n.topicPeers(ts))
		n.mu.Unlock()
		if ok {
			var m wire.Message = &inv
			if h, ok := inv.Diff(sent); ok && !tick {
				m = h
				inv.TTL = sent.TTL // the watcher keeps the TTL it has
			}
			if err := n.writeWatch(s, from, m); err != nil {
				n.log.Debug("inventory watch: write", "to", from, "err", err)
				s.Reset()
				return
			}
			sent, last = &inv, time.Now()
		}
		t := time.NewTimer(refresh)
		tick = false
		select {
		case <-ctx.Done():
		case <-ch:
		case <-t.C:
			tick = true
		}
		t.Stop()
		if ctx.Err() != nil {
			return
		}
		// Changes within the gap ride along with the next push.
		if d := watchGap - time.Since(last); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// writeWatch writes one frame of a watch stream and counts it with the
// host's gossip traffic.
func (n *Host) writeWatch(s network.Stream, to peer.ID, m wire.Message) error {
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	s.SetWriteDeadline(time.Now().Add(n.opts.FrameTimeout))
	if _, err := s.Write(b); err != nil {
		return err
	}
	n.gossip.tr.count(to, GossipStats{MessagesSent: 1, BytesSent: uint64(len(b))})
	return nil
}

// WatchInventory watches connected peer p's inventory of model id
// (WatchProtocol), keeping every one it pushes for Inventories, as gossip
// would deliver it, and calling fn (may be nil) with each, until ctx
// ends, fn returns false, the peer ends the stream, or it stays silent
// for three refresh periods (its refreshes stopped). It returns
// ErrWatchUnsupported for a peer that does not speak the protocol or
// does not follow the model, and nil when ctx ended or fn stopped it.
// The host must be subscribed to the model.
func (n *Host) WatchInventory(ctx context.Context, p string, id rdrr.ModelID, fn func(wire.Inventory) bool) error {
	pid, err := peer.Decode(p)
	if err != nil {
		return fmt.Errorf("watch %s: %w", p, err)
	}
	if n.h.Network().Connectedness(pid) != network.Connected {
		return fmt.Errorf("watch %s: not connected", p)
	}
	n.mu.Lock()
	ts := n.topics[id]
	n.mu.Unlock()
	if ts == nil {
		return fmt.Errorf("watch %s: model %s: not subscribed", p, id.Short())
	}
	octx, cancel := context.WithTimeout(ctx, directTimeout)
	s, err := n.h.NewStream(network.WithNoDial(octx, "inventory watch"), pid, WatchProtocol)
	cancel()
	if err != nil {
		if unsupported(err) {
			return fmt.Errorf("watch %s: %w", p, ErrWatchUnsupported)
		}
		return fmt.Errorf("watch %s: open %s: %w", p, WatchProtocol, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	defer s.Reset()
	b, err := wire.Marshal(&wire.InventoryRequest{Model: id})
	if err != nil {
		return err
	}
	s.SetWriteDeadline(time.Now().Add(directTimeout))
	if _, err := s.Write(b); err != nil {
		return fmt.Errorf("watch %s: write request: %w", p, err)
	}
	n.gossip.tr.count(pid, GossipStats{MessagesSent: 1, BytesSent: uint64(len(b))})
	var cur *wire.Inventory // the peer's inventory: the last one sent, with the Haves since
	for {
		n.mu.Lock()
		silence := 3 * n.refreshPeriod(n.topicPeers(ts))
		n.mu.Unlock()
		s.SetReadDeadline(time.Now().Add(silence))
		cr := &countReader{r: s}
		m, err := wire.ReadMessage(cr, wire.MaxInventoryFrame)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if unsupported(err) {
				err = ErrWatchUnsupported
			}
			return fmt.Errorf("watch %s: read: %w", p, err)
		}
		n.gossip.tr.count(pid, GossipStats{MessagesReceived: 1, BytesReceived: cr.n})
		switch m := m.(type) {
		case *wire.Inventory:
			if m.Peer != p || m.Model != id {
				return fmt.Errorf("watch %s: inventory of %s for model %s", p, m.Peer, m.Model.Short())
			}
			cur = m
		case *wire.Have:
			if cur == nil {
				return fmt.Errorf("watch %s: Have before any Inventory", p)
			}
			next, err := cur.Apply(m)
			if err != nil {
				return fmt.Errorf("watch %s: %w", p, err)
			}
			cur = &next
		case *wire.Error:
			if m.Code == wire.CodeNotFound {
				return fmt.Errorf("watch %s: %w", p, ErrWatchUnsupported)
			}
			return fmt.Errorf("watch %s: %w", p, remoteError(p, m))
		default:
			return fmt.Errorf("watch %s: %v in a watch stream", p, m.Type())
		}
		// record keeps cur: later Haves apply to a copy (Apply clones).
		n.record(id, *cur)
		if fn != nil && !fn(*cur) {
			return nil
		}
	}
}

// unsupported reports whether err is the peer refusing a protocol: at
// NewStream when its protocols are known (identify), else, negotiated
// lazily, as a reset of the stream at the first read.
func unsupported(err error) bool {
	var se *network.StreamError
	return errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) ||
		(errors.As(err, &se) && se.ErrorCode == network.StreamProtocolNegotiationFailed)
}
