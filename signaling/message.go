package signaling

import (
	"encoding/json"
	"errors"

	"github.com/coder/websocket"

	"github.com/doppler-llm/doppler/signaling/sigwire"
)

// The wire format lives in package sigwire (shared with the browser
// client); these names keep signaling's API.
type (
	PeerID    = sigwire.PeerID
	Message   = sigwire.Message
	ICEServer = sigwire.ICEServer
)

// Message types.
const (
	TypeWelcome   = sigwire.TypeWelcome
	TypeJoin      = sigwire.TypeJoin
	TypeLeave     = sigwire.TypeLeave
	TypePeers     = sigwire.TypePeers
	TypeOffer     = sigwire.TypeOffer
	TypeAnswer    = sigwire.TypeAnswer
	TypeCandidate = sigwire.TypeCandidate
	TypeError     = sigwire.TypeError
)

// Error codes carried by {"type":"error"} messages.
const (
	CodeBadMessage  = sigwire.CodeBadMessage
	CodeUnknownType = sigwire.CodeUnknownType
	CodeUnknownPeer = sigwire.CodeUnknownPeer
	CodeRateLimited = sigwire.CodeRateLimited
	CodePeerBusy    = sigwire.CodePeerBusy
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
func check(m *Message) (code, text string) {
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
