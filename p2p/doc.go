// Package p2p is the swarm's mechanism: the libp2p host (TCP, QUIC,
// webrtc-direct), the Kad-DHT for content routing, gossipsub inventories,
// and the versioned stream protocols (/doppler/manifest/1, /doppler/shard/1).
// Policy — which peer to ask for what — lives in package swarm.
//
// See docs/rdrr.md for the verification rules every transfer follows.
package p2p
