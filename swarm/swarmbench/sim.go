package swarmbench

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// simNet is a mocknet whose every link has one latency and no bandwidth
// limit of its own: each node's shaper caps its traffic instead.
type simNet struct {
	mn   mocknet.Mocknet
	rate int64
}

func newSimNet(rate int64, latency time.Duration) *simNet {
	mn := mocknet.New()
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: latency})
	return &simNet{mn: mn, rate: rate}
}

// host adds a node to the network: a mocknet host behind its own shaper,
// with an Ed25519 key as a real node has (mocknet's GenPeer makes ECDSA
// keys, whose signature checks took a fifth of a 40-peer run's CPU in
// gossipsub alone).
func (s *simNet) host() (host.Host, error) {
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return nil, err
	}
	// An address in 100::/64 (discard-only) ending in the ID's last bytes,
	// as GenPeer makes.
	ip := make(net.IP, net.IPv6len)
	ip[0], ip[1] = 0x01, 0x00
	suffix := []byte(id)[max(0, len(id)-8):]
	copy(ip[net.IPv6len-len(suffix):], suffix)
	a, err := ma.NewMultiaddr(fmt.Sprintf("/ip6/%s/tcp/4242", ip))
	if err != nil {
		return nil, err
	}
	h, err := s.mn.AddPeer(sk, a)
	if err != nil {
		return nil, err
	}
	return &simHost{shapedHost: shapedHost{Host: h, s: newShaper(s.rate)}, mn: s.mn,
		ps: dirPeerstore{Peerstore: h.Peerstore(), mn: s.mn}, linked: map[peer.ID]bool{}}, nil
}

func (s *simNet) Close() error { return s.mn.Close() }

// simHost is a shaped mocknet host that links itself to a peer when it
// first dials it (mocknet dials only over links; linking all N² pairs
// up front would cost more than a run at 1,000 peers) and finds any
// node's address in the network's directory (there is no DHT).
type simHost struct {
	shapedHost
	mn mocknet.Mocknet
	ps dirPeerstore

	mu     sync.Mutex
	linked map[peer.ID]bool // peers known linked (mocknet looks links up under one lock for all hosts)
}

func (h *simHost) link(p peer.ID) {
	if p == h.ID() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.linked[p] {
		return
	}
	if len(h.mn.LinksBetweenPeers(h.ID(), p)) == 0 {
		if _, err := h.mn.LinkPeers(h.ID(), p); err != nil {
			return // p is unknown: the dial says so
		}
	}
	h.linked[p] = true
}

func (h *simHost) Peerstore() peerstore.Peerstore { return h.ps }

func (h *simHost) Connect(ctx context.Context, ai peer.AddrInfo) error {
	h.link(ai.ID)
	return h.Host.Connect(ctx, ai)
}

func (h *simHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	h.link(p)
	return h.shapedHost.NewStream(ctx, p, pids...)
}

// dirPeerstore answers Addrs for a peer it does not know from the
// mocknet's directory of hosts.
type dirPeerstore struct {
	peerstore.Peerstore
	mn mocknet.Mocknet
}

func (d dirPeerstore) Addrs(p peer.ID) []ma.Multiaddr {
	if a := d.Peerstore.Addrs(p); len(a) > 0 {
		return a
	}
	if h := d.mn.Host(p); h != nil {
		return h.Addrs()
	}
	return nil
}
