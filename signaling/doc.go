// Package signaling serves browsers: WebSocket signaling rooms per model
// (SDP offers/answers and ICE candidates relayed between peers), the HTTP
// seed (manifests and shards with Range, ETag = shard hash, block proofs),
// and the web page at /d.
package signaling
