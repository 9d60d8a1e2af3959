package p2p

import (
	"context"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	mh "github.com/multiformats/go-multihash"

	"github.com/doppler-llm/doppler/rdrr"
)

const peerstoreTTL = 10 * time.Minute

// PeerInfo is a peer found on the DHT.
type PeerInfo struct {
	ID    string
	Addrs []string // multiaddrs without /p2p/
}

// keyCID is the DHT key of a model ID or shard hash: a CIDv1 (raw codec)
// over the SHA-256 multihash of the 32 bytes.
func keyCID(key rdrr.Hash) cid.Cid {
	m, err := mh.Encode(key[:], mh.SHA2_256)
	if err != nil {
		panic(err) // 32 bytes is always a valid sha2-256 digest
	}
	return cid.NewCidV1(cid.Raw, m)
}

// Provide announces on the DHT that this host has key (a model ID or a
// shard hash). Provider records expire; the swarm re-provides periodically.
func (n *Host) Provide(ctx context.Context, key rdrr.Hash) error {
	if n.ctx.Err() != nil {
		return ErrClosed
	}
	if n.dht == nil {
		return nil
	}
	if err := n.dht.Provide(ctx, keyCID(key), true); err != nil {
		return fmt.Errorf("provide %s: %w", key.Short(), err)
	}
	return nil
}

// FindProviders returns up to limit peers that provide key (possibly this
// host). It returns when limit are found, the search ends, or ctx expires;
// peers found before ctx expired are returned without error.
func (n *Host) FindProviders(ctx context.Context, key rdrr.Hash, limit int) ([]PeerInfo, error) {
	if n.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if n.dht == nil {
		return nil, nil
	}
	if limit <= 0 {
		limit = 20
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []PeerInfo
	for ai := range n.dht.FindProvidersAsync(ctx, keyCID(key), limit) {
		pi := PeerInfo{ID: ai.ID.String()}
		for _, a := range ai.Addrs {
			pi.Addrs = append(pi.Addrs, a.String())
		}
		if ai.ID != n.h.ID() && len(ai.Addrs) > 0 {
			n.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstoreTTL)
		}
		out = append(out, pi)
	}
	if len(out) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("find providers %s: %w", key.Short(), ctx.Err())
	}
	return out, nil
}

// startMDNS discovers peers on the local network and connects to them.
func (n *Host) startMDNS() error {
	s := mdns.NewMdnsService(n.h, "doppler", mdnsNotifee{n})
	if err := s.Start(); err != nil {
		return fmt.Errorf("mdns: %w", err)
	}
	n.goBackground(func() {
		<-n.ctx.Done()
		s.Close()
	})
	return nil
}

type mdnsNotifee struct{ n *Host }

func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.n.h.ID() || m.n.ctx.Err() != nil {
		return
	}
	m.n.goBackground(func() {
		ctx, cancel := context.WithTimeout(m.n.ctx, m.n.opts.DialTimeout)
		defer cancel()
		if err := m.n.h.Connect(ctx, ai); err != nil {
			m.n.log.Debug("mdns peer unreachable", "peer", ai.ID, "err", err)
		}
	})
}
