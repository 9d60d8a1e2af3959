// Package p2p is the swarm's mechanism: the libp2p host (TCP, QUIC,
// webrtc-direct), the Kad-DHT for content routing, gossipsub inventories,
// and the versioned stream protocols (/doppler/manifest/1, /doppler/shard/1)
// whose frames package wire defines. Policy — which peer to ask for what —
// lives in package swarm.
//
// Nothing leaves the machine unless asked: there are no built-in bootstrap
// peers, mDNS is off unless Options.MDNS, AutoNAT/relays/hole punching/UPnP
// are off unless Options.NAT, and a host whose listen addresses are all
// loopback (the default) dials, accepts and advertises loopback only.
//
// Every read has a size limit checked before allocating and a deadline
// (Options.RequestTimeout for a server reading a request, FrameTimeout for
// every other frame); every call takes a context that cancels its streams.
//
// Remote.ReadBlocks verifies each block against the shard table the caller
// passes (which must come from a manifest the caller verified) and its
// Merkle proof against the shard's root before handing it on, so no
// unverified byte reaches the swarm. See docs/rdrr.md.
package p2p
