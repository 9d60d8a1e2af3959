package signaling

import (
	"encoding/json"
	"errors"

	"github.com/coder/websocket"
)

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

// WebSocket close codes the server uses besides the standard ones
// (1000 normal, 1001 server shutting down, 1009 message over MaxMessageSize).
const (
	CloseMalformed   websocket.StatusCode = 4400 // MaxMalformed bad messages
	CloseUnknownRoom websocket.StatusCode = 4404 // Options.Allow refused the room
	CloseTimeout     websocket.StatusCode = 4408 // no pong within the idle timeout, or too slow to take messages
	CloseRateLimited websocket.StatusCode = 4429 // MaxRateStrikes messages over the rate
	CloseFull        websocket.StatusCode = 4503 // room full, or too many rooms
)

// Errors from Join and Endpoint.Send.
var (
	ErrUnknownRoom  = errors.New("signaling: unknown room")
	ErrRoomFull     = errors.New("signaling: room full")
	ErrTooManyRooms = errors.New("signaling: too many rooms")
	ErrClosed       = errors.New("signaling: server closed")
	ErrUnknownPeer  = errors.New("signaling: unknown peer")
	ErrPeerBusy     = errors.New("signaling: peer busy")
	ErrBadMessage   = errors.New("signaling: bad message")
	ErrLeft         = errors.New("signaling: endpoint has left the room")
)

// check validates a message a client (or the node) wants relayed or
// answered. It returns "" or an error code with a text.
func (m *Message) check() (code, text string) {
	switch m.Type {
	case TypePeers:
		return "", ""
	case TypeOffer, TypeAnswer:
		if m.To == "" || len(m.SDP) == 0 || string(m.SDP) == "null" {
			return CodeBadMessage, m.Type + " needs \"to\" and \"sdp\""
		}
	case TypeCandidate:
		if m.To == "" || len(m.Candidate) == 0 {
			return CodeBadMessage, "candidate needs \"to\" and \"candidate\" (null ends the candidates)"
		}
	case "":
		return CodeBadMessage, "missing \"type\""
	default:
		return CodeUnknownType, "unknown message type " + quote(m.Type)
	}
	return "", ""
}

func quote(s string) string {
	if len(s) > 32 {
		s = s[:32] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func errorMsg(code, text string, id PeerID) Message {
	return Message{Type: TypeError, Code: code, Error: text, ID: id}
}
