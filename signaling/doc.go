// Package signaling serves browsers: WebSocket signaling rooms per model
// (SDP offers/answers and ICE candidates relayed between peers), the HTTP
// seed (manifests and shards with Range, ETag = shard hash, block proofs),
// and the web page at /d.
//
// Server (server.go, room.go) is the signaling: mount Handler at /signal;
// browsers connect to /signal?room=<model-id>, and the node itself joins a
// room through Join, an in-process Endpoint. Gateway (gateway.go) is the
// node answering browsers: for each model it serves it joins the room
// through Join and answers every offer addressed to it with a p2p/rtc
// Peer speaking the shard protocol over data channels, relaying the answer
// and trickled candidates through the room and sending the node's
// Inventory on the inventory channel. Seed (seed.go) is the HTTP seed. The
// wire format and limits are in docs/protocols.md, "Signaling".
package signaling
