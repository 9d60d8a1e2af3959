//go:build !js

// Package rtc is the WebRTC transport of DOPPLER's shard protocol: the node
// answers browsers' (and other nodes') data channels through pion/webrtc,
// speaking exactly the frames of p2p/wire that the libp2p streams carry,
// served and verified by the same code (p2p.Answer, p2p.FetchManifest,
// p2p.FetchBlocks). It is native only; what a browser needs is in p2p/wire.
//
// # Channels
//
// A Peer is one RTCPeerConnection. Two data channel labels are spoken, both
// ordered and reliable; the label carries the protocol's major version:
//
//   - "doppler-shard/1": one channel per exchange, as a libp2p stream. The
//     opener sends one ManifestRequest or BlocksRequest; the other side
//     answers as on /doppler/manifest/1 or /doppler/shard/1 (a
//     ManifestResponse or Error; Count Block frames with proofs then End, or
//     an Error) and closes the channel. Anything else closes it at once.
//   - "doppler-inv/1": one long-lived channel per connection, opened by the
//     offerer; either side sends Inventory frames (at most
//     wire.MaxInventoryFrame) whenever it likes.
//
// Channels with other labels are closed.
//
// # Messages
//
// A frame is sent as consecutive binary messages of at most MaxMessage
// (16 KiB, which every SCTP stack delivers whole) bytes; a frame starts at a
// message boundary and a message never holds bytes of two frames. The
// receiver reassembles frames as a byte stream with the same limits as the
// libp2p side (wire.MaxFrame, wire.MaxManifestFrame for a manifest answer),
// refusing an oversize frame from its header before buffering it. A sender
// keeps at most HighWater bytes queued in the channel
// (BufferedAmountLowThreshold = LowWater resumes it).
//
// # Signaling
//
// A Peer does not talk to a signaling server itself. The answering side
// calls Answer with the remote offer's SDP and sends back the answer; the
// offering side calls Offer and then Accept with the answer. ICE candidates
// trickle both ways: OnCandidate gives each local candidate as the JSON of
// an RTCIceCandidateInit ({"candidate": …, "sdpMid": …, "sdpMLineIndex": …},
// what a browser's candidate.toJSON() gives and addIceCandidate takes), and
// AddCandidate takes the remote's in that form (or a bare "candidate:…"
// line). Candidates arriving before the remote description are held.
//
// With Options.Loopback set, pion gathers host candidates on loopback
// interfaces only (127.0.0.0/8, UDP4, no mDNS), no STUN/TURN server may be
// configured, and remote candidates (trickled or inside an SDP) that are
// not UDP4 loopback addresses are dropped.
package rtc
