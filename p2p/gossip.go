package p2p

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// InventoryEntry is one peer's latest inventory for a model.
type InventoryEntry struct {
	Peer      string
	Inv       wire.Inventory
	Received  time.Time
	ExpiresAt time.Time
}

type topicState struct {
	t         *pubsub.Topic
	subs      int                // live Subscribe calls
	announce  *wire.Inventory    // latest inventory this host announces, nil = none
	autoTTL   bool               // announce's TTL follows the refresh period
	stop      context.CancelFunc // stops the announcement loop
	kick      chan struct{}      // publish soon (a change), coalesced
	changed   chan struct{}      // closed at the next change of announce (watch.go), nil until asked
	lim       *rate.Limiter      // this host's share of the topic's budget
	inventory map[string]InventoryEntry
	// listed, listedAt: how many peers pubsub listed on the topic, and
	// when it was asked (topicPeers).
	listed   int
	listedAt time.Time
	// sorted caches Inventories' answer until an inventory arrives or the
	// first of them expires (at expiry): every fetch reads it on every
	// scheduling pass, and sorting a thousand entries each time was a
	// tenth of a 300-peer simulation's CPU.
	sorted []InventoryEntry
	expiry time.Time
	fresh  bool
	// shared: Inventories handed sorted out (callers only read it), so
	// the next change copies it first rather than write under a reader.
	shared bool
	// seen counts the inventories gossip delivered since seenSince;
	// topicRate is the topic's measured rate of them (per second, an
	// average over the last windows): see shareLimit.
	seen      int
	seenSince time.Time
	topicRate float64
}

type gossip struct {
	mu     sync.Mutex
	topics map[rdrr.ModelID]*topicState
	seq    uint64
	tr     gossipTracer
	dedup  gossipDedup
}

func (g *gossip) init(now func() time.Time) {
	g.topics = map[rdrr.ModelID]*topicState{}
	g.tr.peers = map[peer.ID]*GossipStats{}
	g.dedup = gossipDedup{first: map[string]time.Time{}, now: now}
}

// Duplicates of a published message arriving within dupRetry of its first
// copy are dropped before pubsub sees them (gossipDedup); dupForget is
// how long a first copy is remembered (pubsub's own seen-message TTL).
const (
	dupRetry  = time.Second
	dupForget = 2 * time.Minute
)

// gossipDedup drops duplicate copies of a published message before
// gossipsub validates them. Gossipsub marks a message seen only once its
// signature is checked, so every copy that arrives from another mesh peer
// while the first waits in the validation queue is checked too: in a
// 1,000-peer simulation most of the Ed25519 checks, a fifth of all the
// CPU, were of such copies. A copy arriving dupRetry after the first goes
// through (gossipsub drops it cheaply if the first was delivered, and
// checks it if the first was lost, e.g. to a full validation queue).
type gossipDedup struct {
	mu    sync.Mutex
	now   func() time.Time
	first map[string]time.Time // message ID → when its first copy arrived
	swept time.Time
}

// inspect is gossipsub's RPC inspector: it counts the RPC as received
// (gossipTracer), then strips the duplicates from its messages.
func (g *gossip) inspect(from peer.ID, rpc *pubsub.RPC) error {
	g.tr.count(from, GossipStats{MessagesReceived: uint64(len(rpc.Publish)), BytesReceived: uint64(proto.Size(&rpc.RPC))})
	if len(rpc.Publish) == 0 {
		return nil
	}
	d := &g.dedup
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	keep := rpc.Publish[:0]
	for _, m := range rpc.Publish {
		id := pubsub.DefaultMsgIdFn(m)
		if t, ok := d.first[id]; ok && now.Sub(t) < dupRetry && !now.Before(t) {
			continue
		}
		d.first[id] = now
		keep = append(keep, m)
	}
	clear(rpc.Publish[len(keep):])
	rpc.Publish = keep
	if now.Sub(d.swept) >= dupForget {
		for id, t := range d.first {
			if now.Sub(t) >= dupForget {
				delete(d.first, id)
			}
		}
		d.swept = now
	}
	return nil
}

func (g *gossip) closeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, ts := range g.topics {
		if ts.stop != nil {
			ts.stop()
		}
	}
}

// TopicName returns a model's gossip topic.
func TopicName(id rdrr.ModelID) string { return InventoryTopicPrefix + id.String() }

// joinValidated registers a validator that accepts a message when decode
// does (keeping the decoded value as ValidatorData), then joins the topic.
func (n *Host) joinValidated(name, what string, decode func(*pubsub.Message) (any, error)) (*pubsub.Topic, error) {
	err := n.ps.RegisterTopicValidator(name, func(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		v, err := decode(msg)
		if err != nil {
			n.log.Debug(what+": rejected message", "from", from, "err", err)
			return pubsub.ValidationReject
		}
		msg.ValidatorData = v
		return pubsub.ValidationAccept
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	t, err := n.ps.Join(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return t, nil
}

// topic joins a model's topic once; the validator accepts only well-formed
// inventories for that model whose Peer is the message's signed author.
// Called with g.mu held.
func (n *Host) topic(id rdrr.ModelID) (*topicState, error) {
	if ts, ok := n.topics[id]; ok {
		return ts, nil
	}
	t, err := n.joinValidated(TopicName(id), "gossip "+id.Short(), func(msg *pubsub.Message) (any, error) {
		return decodeInventory(msg, id)
	})
	if err != nil {
		return nil, err
	}
	ts := &topicState{t: t, inventory: map[string]InventoryEntry{}, kick: make(chan struct{}, 1),
		lim: rate.NewLimiter(rate.Limit(float64(n.opts.GossipBudget)/60), 1)}
	n.topics[id] = ts
	return ts, nil
}

func decodeInventory(msg *pubsub.Message, model rdrr.ModelID) (*wire.Inventory, error) {
	m, err := wire.Unmarshal(msg.Data, wire.MaxInventoryFrame)
	if err != nil {
		return nil, err
	}
	inv, ok := m.(*wire.Inventory)
	if !ok {
		return nil, fmt.Errorf("%v on an inventory topic", m.Type())
	}
	if inv.Peer != msg.GetFrom().String() {
		return nil, fmt.Errorf("inventory of %s sent by %s", inv.Peer, msg.GetFrom())
	}
	if inv.Model != model {
		return nil, fmt.Errorf("inventory of model %s on topic %s", inv.Model.Short(), model.Short())
	}
	return inv, nil
}

// Announce publishes inv on its model's topic (inv.Model) soon and keeps
// re-publishing the latest inventory (a full refresh, for late joiners)
// until StopAnnouncing or Close. Call it on join and again on every
// change: changes are coalesced, one that only gains blocks of partly
// held shards waits for the next announcement (watchers have it at
// once), and every publication, change or refresh, is rate limited to
// this host's share of the topic's budget (Options.GossipBudget / the
// peers announcing on the topic), so the
// traffic each peer sees stays bounded however many join. The refresh
// period is AnnounceInterval ± AnnounceJitter, longer when the topic is
// large (see refreshPeriod). The host fills in Peer (its own ID), Seq
// (increasing) and, when zero, TTL (3 refresh periods, at most
// wire.MaxTTL).
func (n *Host) Announce(ctx context.Context, inv wire.Inventory) error {
	if n.ctx.Err() != nil {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	ts, err := n.topic(inv.Model)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	inv.Peer = n.ID()
	// Only blocks of partly held shards gained (a Have without shards):
	// the watchers get it at once (watch.go), the topic with the next
	// announcement (a shard gained, or the refresh). A block takes a
	// fraction of a second to arrive, and gossiping each one, rate
	// limited to a share of the topic's budget that a joining peer
	// overestimates until it has seen the topic's size, made a thousand
	// joiners flood it: at 1,000 simulated peers the seed spent its
	// uplink's first 29 s relaying inventories (docs/swarm-bench.md).
	h, ok := inv.Diff(ts.announce)
	blocksOnly := ok && ts.stop != nil && len(h.Shards) == 0
	ts.autoTTL = inv.TTL == 0
	ts.announce = &inv
	ts.notify()
	if ts.stop == nil {
		actx, cancel := context.WithCancel(n.ctx)
		ts.stop = cancel
		n.goBackground(func() { n.announceLoop(actx, inv.Model, ts) })
	}
	n.mu.Unlock()
	if !blocksOnly {
		n.kickTopic(inv.Model)
	}
	return nil
}

// kickTopic asks the model's announcement loop to publish soon.
func (n *Host) kickTopic(id rdrr.ModelID) {
	n.mu.Lock()
	ts := n.topics[id]
	n.mu.Unlock()
	if ts == nil {
		return
	}
	select {
	case ts.kick <- struct{}{}:
	default:
	}
}

// StopAnnouncing stops re-announcing a model (entries at other peers then
// expire by TTL).
func (n *Host) StopAnnouncing(id rdrr.ModelID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ts, ok := n.topics[id]; ok {
		ts.announce = nil
		ts.notify()
		if ts.stop != nil {
			ts.stop()
			ts.stop = nil
		}
	}
}

// topicPeers estimates how many peers announce on a model's topic: those
// whose inventory is held unexpired, those the topic lists, and this one.
// n.mu held.
func (n *Host) topicPeers(ts *topicState) int {
	now := n.opts.Now()
	k := len(ts.sorted)
	if !ts.fresh || !now.Before(ts.expiry) {
		// The cached list is stale: count, without the sort a rebuild
		// costs (while a crowd joins, every arrival makes it stale).
		k = 0
		for _, e := range ts.inventory {
			if now.Before(e.ExpiresAt) {
				k++
			}
		}
	}
	return max(k, n.listedPeers(ts)) + 1
}

// listedPeers is how many peers pubsub lists on the topic, asked at most
// once a second: each ask is a round trip through pubsub's event loop
// that copies the whole list, made while n.mu is held, and topicPeers
// runs for every inventory a watch pushes (0.66 of 132 CPU-s in a
// 300-peer simulation). An estimate a second old is as good. n.mu held.
func (n *Host) listedPeers(ts *topicState) int {
	if now := time.Now(); ts.listedAt.IsZero() || now.Sub(ts.listedAt) >= time.Second {
		ts.listed, ts.listedAt = len(ts.t.ListPeers()), now
	}
	return ts.listed
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// observe counts an inventory gossip delivered on model id's topic.
func (n *Host) observe(id rdrr.ModelID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ts := n.topics[id]; ts != nil {
		ts.seen++
	}
}

// shareLimit is this host's rate of announcements on a topic of peers
// announcing hosts: its share of the topic's budget, GossipBudget/60/peers
// per second, lowered in proportion when the topic is measured carrying
// more than the budget. peers is an estimate that lags when many hosts
// join at once: each then takes a large share, and a thousand newcomers
// together sent dozens of times the budget, every message checked by
// every host. The measured rate corrects that within a second or two,
// whatever the estimate. n.mu held.
func (n *Host) shareLimit(ts *topicState, peers int) rate.Limit {
	budget := float64(n.opts.GossipBudget) / 60
	now := n.opts.Now()
	if ts.seenSince.IsZero() {
		ts.seenSince = now
	}
	if el := now.Sub(ts.seenSince); el >= time.Second {
		r := float64(ts.seen) / el.Seconds()
		ts.topicRate = (ts.topicRate + r) / 2
		ts.seen, ts.seenSince = 0, now
		if el > 10*time.Second {
			ts.topicRate = r // a stale average says nothing
		}
	}
	share := budget / float64(peers)
	if ts.topicRate > budget {
		share *= budget / ts.topicRate
	}
	return rate.Limit(share)
}

// refreshPeriod is how often a host re-publishes an unchanged inventory
// on a topic of peers announcing hosts: AnnounceInterval, or longer on a
// large topic so that refreshes use at most half its budget.
func (n *Host) refreshPeriod(peers int) time.Duration {
	d := n.opts.AnnounceInterval
	if b := n.opts.GossipBudget; b > 0 {
		d = max(d, time.Duration(2*peers)*time.Minute/time.Duration(b))
	}
	return d
}

func (n *Host) publish(ctx context.Context, id rdrr.ModelID) error {
	n.mu.Lock()
	ts := n.topics[id]
	inv, ok := n.current(ts)
	n.mu.Unlock()
	if !ok {
		return nil
	}
	b, err := wire.Marshal(&inv)
	if err != nil {
		return fmt.Errorf("announce %s: %w", id.Short(), err)
	}
	if err := ts.t.Publish(ctx, b); err != nil {
		return fmt.Errorf("announce %s: %w", id.Short(), err)
	}
	n.gossip.tr.mu.Lock()
	n.gossip.tr.total.Announced++
	n.gossip.tr.mu.Unlock()
	return nil
}

// announceLoop publishes the topic's inventory when kicked (a change) and
// every refresh period, each time within the host's share of the topic's
// budget: rate GossipBudget/60/peers per second, burst 1. A newcomer is
// not greeted on the topic: it asks the peers it connects to directly
// (InventoryProtocol), and a greeting would reach the whole topic. When a
// hundred peers joined at once, every host re-publishing for each of them
// kept the topic at its members' limits, and at 2 Mbit/s gossip took half
// the seed's upload for the first ten seconds.
func (n *Host) announceLoop(ctx context.Context, id rdrr.ModelID, ts *topicState) {
	for {
		n.mu.Lock()
		peers := n.topicPeers(ts)
		n.mu.Unlock()
		d := n.refreshPeriod(peers)
		if j := n.opts.AnnounceJitter * d / n.opts.AnnounceInterval; j > 0 {
			d += time.Duration(rand.Int64N(int64(2*j))) - j
		}
		t := time.NewTimer(max(d, 10*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-ts.kick:
		case <-t.C:
		}
		t.Stop()
		n.mu.Lock()
		limit := n.shareLimit(ts, n.topicPeers(ts))
		n.mu.Unlock()
		ts.lim.SetLimit(limit)
		if err := ts.lim.Wait(ctx); err != nil {
			return
		}
		select { // changes made while waiting ride along
		case <-ts.kick:
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, n.opts.FrameTimeout)
		if err := n.publish(pctx, id); err != nil && ctx.Err() == nil {
			n.log.Debug("gossip: announce", "model", id.Short(), "err", err)
		}
		cancel()
	}
}

// Subscribe receives the inventories other peers announce for a model and
// keeps them for Inventories. fn (may be nil) is called, on one goroutine per
// subscription, with every new inventory delivered by gossip; not with the
// host's own, nor with those asked for directly (AskInventories), which
// only Inventories returns. On subscribing, the connected peers are asked
// for theirs directly (direct.go). It returns once subscribed; delivery
// stops when ctx ends or the host closes. A super-seed (Options.SuperSeed)
// does not join the gossip mesh, so it relays nothing and fn is never
// called: it learns inventories only directly.
func (n *Host) Subscribe(ctx context.Context, id rdrr.ModelID, fn func(peerID string, inv wire.Inventory)) error {
	if n.ctx.Err() != nil {
		return ErrClosed
	}
	n.mu.Lock()
	ts, err := n.topic(id)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	// A super-seed follows the model without joining its gossip mesh:
	// its upload is the swarm's scarce resource, and as a relay it
	// forwarded the inventories of peers that had just joined to its mesh
	// peers (at 1,000 simulated peers on 2 Mbit/s links, 9.7 MiB in the
	// first 16 s, when it had sent 0.16 of the model). It learns
	// inventories directly (below, and from each peer that connects:
	// direct.go), and its own announcements still go out through the
	// topic's fanout.
	var sub *pubsub.Subscription
	if n.opts.SuperSeed <= 0 {
		if sub, err = ts.t.Subscribe(); err != nil {
			n.mu.Unlock()
			return fmt.Errorf("subscribe %s: %w", id.Short(), err)
		}
	}
	ts.subs++
	n.mu.Unlock()
	// Learn the connected peers' inventories now rather than at their
	// next gossip round (direct.go).
	n.goBackground(func() { n.AskInventories(ctx, id, nil) })
	if sub == nil {
		return nil
	}
	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(n.ctx, cancel)
	n.readSub(sctx, func() { cancel(); stop() }, sub, "inventory", id, func(msg *pubsub.Message) {
		inv, ok := msg.ValidatorData.(*wire.Inventory)
		if !ok || inv.Peer == n.ID() {
			return
		}
		n.observe(id)
		if n.record(id, *inv) && fn != nil {
			fn(inv.Peer, *inv)
		}
	})
	return nil
}

// readSub hands sub's validated messages to fn on a background goroutine
// until ctx ends (or sub fails); then the subscription is cancelled and
// release called. what and id name the subscription in the log.
func (n *Host) readSub(ctx context.Context, release func(), sub *pubsub.Subscription, what string, id rdrr.ModelID, fn func(*pubsub.Message)) {
	n.goBackground(func() {
		defer release()
		defer sub.Cancel()
		for {
			msg, err := sub.Next(ctx)
			if err != nil {
				if !errors.Is(err, context.Canceled) && ctx.Err() == nil {
					n.log.Debug("gossip: subscription ended", "topic", what, "model", id.Short(), "err", err)
				}
				return
			}
			fn(msg)
		}
	})
}

// record stores an inventory unless an equal or newer one is held.
func (n *Host) record(id rdrr.ModelID, inv wire.Inventory) bool {
	now := n.opts.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	ts := n.topics[id]
	if ts == nil {
		return false
	}
	old, ok := ts.inventory[inv.Peer]
	if ok && old.Inv.Seq >= inv.Seq && now.Before(old.ExpiresAt) {
		return false
	}
	e := InventoryEntry{Peer: inv.Peer, Inv: inv, Received: now,
		ExpiresAt: now.Add(time.Duration(inv.TTL) * time.Second)}
	ts.inventory[inv.Peer] = e
	if i, found := slices.BinarySearchFunc(ts.sorted, inv.Peer, func(e InventoryEntry, p string) int { return strings.Compare(e.Peer, p) }); ts.fresh && found {
		// A newer inventory of a peer already listed: replace it in place
		// (on a large topic most arrivals are such, and sorting every
		// time was a tenth of a thousand-peer simulation's CPU).
		if ts.shared {
			ts.sorted, ts.shared = slices.Clone(ts.sorted), false
		}
		ts.sorted[i] = e
		ts.expiry = minTime(ts.expiry, e.ExpiresAt)
	} else {
		ts.fresh = false
	}
	return true
}

// Inventories returns the unexpired inventories other peers announced for a
// model (of the models this host subscribed to), sorted by peer ID. Expired
// entries are dropped. The slice is shared with other callers: read it,
// do not change it. (A copy a call was 2.6 % of a 300-peer simulation's
// CPU: every fetch reads it at each scheduling pass and refresh; now a
// change after a read copies it once.)
func (n *Host) Inventories(id rdrr.ModelID) []InventoryEntry {
	n.mu.Lock()
	defer n.mu.Unlock()
	ts := n.topics[id]
	if ts == nil {
		return nil
	}
	sorted := n.sortedLocked(ts)
	if len(sorted) == 0 {
		return nil
	}
	ts.shared = true
	return sorted
}

// sortedLocked returns the topic's unexpired inventories sorted by peer,
// rebuilt only when an inventory arrived for a new peer or the first of
// them expired (ts.sorted: see topicState). The slice is the cache: do not
// keep or change it. n.mu held.
func (n *Host) sortedLocked(ts *topicState) []InventoryEntry {
	now := n.opts.Now()
	if !ts.fresh || !now.Before(ts.expiry) {
		if ts.shared {
			ts.sorted, ts.shared = nil, false
		}
		ts.sorted, ts.expiry = ts.sorted[:0], time.Time{}
		for p, e := range ts.inventory {
			if !now.Before(e.ExpiresAt) {
				delete(ts.inventory, p)
				continue
			}
			ts.sorted = append(ts.sorted, e)
			if ts.expiry.IsZero() || e.ExpiresAt.Before(ts.expiry) {
				ts.expiry = e.ExpiresAt
			}
		}
		slices.SortFunc(ts.sorted, func(a, b InventoryEntry) int { return strings.Compare(a.Peer, b.Peer) })
		ts.fresh = len(ts.sorted) > 0
	}
	return ts.sorted
}

// GossipStats counts pubsub traffic (inventories, expert usage, and
// gossipsub's own control messages): Messages are the published messages
// carried (this host's own, forwarded ones and duplicates), Bytes every
// RPC's encoded size, control included.
type GossipStats struct {
	MessagesSent, MessagesReceived uint64
	BytesSent, BytesReceived       uint64
	// Announced counts the inventories this host published (host totals
	// only).
	Announced uint64
}

func (g *GossipStats) add(o GossipStats) {
	g.MessagesSent += o.MessagesSent
	g.MessagesReceived += o.MessagesReceived
	g.BytesSent += o.BytesSent
	g.BytesReceived += o.BytesReceived
	g.Announced += o.Announced
}

// gossipTracer counts pubsub RPCs per peer (a pubsub.RawTracer).
type gossipTracer struct {
	mu    sync.Mutex
	total GossipStats
	peers map[peer.ID]*GossipStats
}

func (t *gossipTracer) count(p peer.ID, d GossipStats) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total.add(d)
	s := t.peers[p]
	if s == nil {
		s = &GossipStats{}
		t.peers[p] = s
	}
	s.add(d)
}

func (t *gossipTracer) snapshot() (GossipStats, map[string]GossipStats) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]GossipStats, len(t.peers))
	for p, s := range t.peers {
		m[p.String()] = *s
	}
	return t.total, m
}

// RecvRPC counts nothing: gossip.inspect counted the RPC before it
// dropped duplicates from it.
func (t *gossipTracer) RecvRPC(*pubsub.RPC) {}
func (t *gossipTracer) SendRPC(rpc *pubsub.RPC, p peer.ID) {
	t.count(p, GossipStats{MessagesSent: uint64(len(rpc.Publish)), BytesSent: uint64(proto.Size(&rpc.RPC))})
}
func (t *gossipTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (t *gossipTracer) OnClosedOutboundStream(peer.ID)                       {}
func (t *gossipTracer) Join(string)                                          {}
func (t *gossipTracer) Leave(string)                                         {}
func (t *gossipTracer) Graft(peer.ID, string)                                {}
func (t *gossipTracer) Prune(peer.ID, string)                                {}
func (t *gossipTracer) ValidateMessage(*pubsub.Message)                      {}
func (t *gossipTracer) DeliverMessage(*pubsub.Message)                       {}
func (t *gossipTracer) RejectMessage(*pubsub.Message, string)                {}
func (t *gossipTracer) DuplicateMessage(*pubsub.Message)                     {}
func (t *gossipTracer) ThrottlePeer(peer.ID)                                 {}
func (t *gossipTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (t *gossipTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (t *gossipTracer) UndeliverableMessage(*pubsub.Message)                 {}
