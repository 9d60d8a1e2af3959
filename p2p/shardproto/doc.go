// Package shardproto is DOPPLER's shard protocol apart from any transport:
// the requests and answers of /doppler/manifest/1 and /doppler/shard/1
// (see docs/protocols.md) over a MsgConn, which a libp2p stream (package
// p2p), a pion data channel (p2p/rtc) or a browser's RTCDataChannel (the
// WASM client) provides. Answer serves a Provider; FetchManifest and
// FetchBlocks ask and verify every byte (manifest against its model ID,
// each block against its hash and Merkle proof) before the caller sees it.
//
// It depends on rdrr and p2p/wire only, so it builds for GOOS=js: the
// browser speaks exactly the code the node does.
package shardproto
