// Package sigwire is the signaling wire format (docs/protocols.md,
// "Signaling"): the JSON messages the server relays between the peers of a
// room. It depends on the standard library only, so the browser client
// (GOOS=js) speaks the very types the server does.
package sigwire

import "encoding/json"

// PeerID names a peer in a room: 16 hex digits chosen by the server when
// the peer joins. Clients never choose or claim one.
type PeerID string

// Message is one signaling message, a JSON text frame on the WebSocket (see
// docs/protocols.md, "Signaling"). Fields not used by a type are omitted.
//
// Server to client: welcome {id, room, peers, iceServers?}, join {id}, leave {id},
// peers {peers}, offer/answer/candidate {from, sdp|candidate} (relayed),
// error {code, error, id?}.
// Client to server: offer/answer {to, sdp}, candidate {to, candidate},
// peers {}.
//
// SDP and Candidate are relayed verbatim: the server checks only that they
// are present (a candidate may be JSON null, the end of candidates).
type Message struct {
	Type      string          `json:"type"`
	ID        PeerID          `json:"id,omitempty"`
	Room      string          `json:"room,omitempty"`
	Peers     []PeerID        `json:"peers,omitzero"`
	To        PeerID          `json:"to,omitempty"`
	From      PeerID          `json:"from,omitempty"`
	SDP       json.RawMessage `json:"sdp,omitempty"`
	Candidate json.RawMessage `json:"candidate,omitempty"`
	Code      string          `json:"code,omitempty"`
	Error     string          `json:"error,omitempty"`
	// ICEServers, in a welcome, are what the client should put in its
	// RTCConfiguration (the node's TURN relay on loopback; none otherwise).
	ICEServers []ICEServer `json:"iceServers,omitempty"`
}

// ICEServer is one entry of RTCConfiguration.iceServers, as the welcome
// message hands it to browsers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Message types.
const (
	TypeWelcome   = "welcome"   // server → the new peer: its id and the others in the room
	TypeJoin      = "join"      // server → room: a peer joined
	TypeLeave     = "leave"     // server → room: a peer left
	TypePeers     = "peers"     // client → server: list; server → client: the list
	TypeOffer     = "offer"     // relayed
	TypeAnswer    = "answer"    // relayed
	TypeCandidate = "candidate" // relayed
	TypeError     = "error"     // server → client
)

// Error codes carried by {"type":"error"} messages.
const (
	CodeBadMessage  = "bad-message"  // not JSON, binary, or a required field missing; counts toward MaxMalformed
	CodeUnknownType = "unknown-type" // a type the server does not take from clients; dropped
	CodeUnknownPeer = "unknown-peer" // "to" is not another peer of this room; id = the "to"
	CodeRateLimited = "rate-limited" // over the per-client rate; dropped; counts toward MaxRateStrikes
	CodePeerBusy    = "peer-busy"    // the recipient's queue is full; dropped; id = the "to"
)

// SeedPrefix is where a node's HTTP seed serves manifests and shards
// (signaling.Seed): under its own prefix, apart from the OpenAI-compatible
// API's /v1/.
const SeedPrefix = "/rdrr/v1"
