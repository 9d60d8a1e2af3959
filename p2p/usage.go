package p2p

import (
	"context"
	"fmt"
	"sync"

	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// UsageTopicPrefix + model ID (lower-case hex) is a model's expert-usage
// topic: peers publish wire.Usage there, gatekeepers wire.Clusters.
const UsageTopicPrefix = "/doppler/usage/"

// UsageTopicName returns a model's expert-usage topic.
func UsageTopicName(id rdrr.ModelID) string { return UsageTopicPrefix + id.String() }

// usageTopics holds, per host, the usage topics it joined (a side table,
// so Host needs no field of its own); entries go when the host closes.
var usageTopics sync.Map // *Host → *usageState

type usageState struct {
	mu     sync.Mutex
	topics map[rdrr.ModelID]*pubsub.Topic
}

func (n *Host) usage() *usageState {
	v, loaded := usageTopics.LoadOrStore(n, &usageState{topics: map[rdrr.ModelID]*pubsub.Topic{}})
	if !loaded {
		context.AfterFunc(n.ctx, func() { usageTopics.Delete(n) })
	}
	return v.(*usageState)
}

// usageTopic joins a model's usage topic once. Its validator accepts only
// a well-formed Usage or Clusters for that model whose Peer is the
// message's signed author.
func (n *Host) usageTopic(id rdrr.ModelID) (*pubsub.Topic, error) {
	if n.ctx.Err() != nil {
		return nil, ErrClosed
	}
	us := n.usage()
	us.mu.Lock()
	defer us.mu.Unlock()
	if t, ok := us.topics[id]; ok {
		return t, nil
	}
	t, err := n.joinValidated(UsageTopicName(id), "usage gossip "+id.Short(), func(msg *pubsub.Message) (any, error) {
		return decodeUsage(msg, id)
	})
	if err != nil {
		return nil, err
	}
	us.topics[id] = t
	return t, nil
}

func decodeUsage(msg *pubsub.Message, model rdrr.ModelID) (wire.Message, error) {
	m, err := wire.Unmarshal(msg.Data, wire.MaxUsageFrame)
	if err != nil {
		return nil, err
	}
	var p string
	var mod rdrr.ModelID
	switch v := m.(type) {
	case *wire.Usage:
		p, mod = v.Peer, v.Model
	case *wire.Clusters:
		p, mod = v.Peer, v.Model
	default:
		return nil, fmt.Errorf("%v on a usage topic", m.Type())
	}
	if p != msg.GetFrom().String() {
		return nil, fmt.Errorf("%v of %s sent by %s", m.Type(), p, msg.GetFrom())
	}
	if mod != model {
		return nil, fmt.Errorf("%v of model %s on topic %s", m.Type(), mod.Short(), model.Short())
	}
	return m, nil
}

// PublishUsage publishes a wire.Usage or wire.Clusters on its model's
// usage topic; the host fills in Peer (its own ID).
func (n *Host) PublishUsage(ctx context.Context, m wire.Message) error {
	var id rdrr.ModelID
	switch v := m.(type) {
	case *wire.Usage:
		c := *v
		c.Peer, id, m = n.ID(), v.Model, &c
	case *wire.Clusters:
		c := *v
		c.Peer, id, m = n.ID(), v.Model, &c
	default:
		return fmt.Errorf("publish usage: %v is not a usage message", m.Type())
	}
	t, err := n.usageTopic(id)
	if err != nil {
		return err
	}
	b, err := wire.Marshal(m)
	if err != nil {
		return fmt.Errorf("publish usage %s: %w", id.Short(), err)
	}
	if err := t.Publish(ctx, b); err != nil {
		return fmt.Errorf("publish usage %s: %w", id.Short(), err)
	}
	return nil
}

// SubscribeUsage delivers the Usage and Clusters messages other peers
// publish for a model to fn (on one goroutine per subscription; not the
// host's own), and, when onJoin is not nil, calls it (on another goroutine)
// whenever a peer joins the topic. It returns once subscribed; delivery
// stops when ctx ends or the host closes.
func (n *Host) SubscribeUsage(ctx context.Context, id rdrr.ModelID, fn func(wire.Message), onJoin func(peerID string)) error {
	t, err := n.usageTopic(id)
	if err != nil {
		return err
	}
	sub, err := t.Subscribe()
	if err != nil {
		return fmt.Errorf("subscribe usage %s: %w", id.Short(), err)
	}
	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(n.ctx, cancel)
	if onJoin != nil {
		if ev, err := t.EventHandler(); err == nil {
			n.goBackground(func() {
				defer ev.Cancel()
				for {
					e, err := ev.NextPeerEvent(sctx)
					if err != nil {
						return
					}
					if e.Type == pubsub.PeerJoin {
						onJoin(e.Peer.String())
					}
				}
			})
		}
	}
	n.readSub(sctx, func() { cancel(); stop() }, sub, "usage", id, func(msg *pubsub.Message) {
		if m, ok := msg.ValidatorData.(wire.Message); ok && msg.GetFrom() != n.h.ID() {
			fn(m)
		}
	})
	return nil
}
