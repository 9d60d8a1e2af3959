package signaling

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzDecodeMessage feeds a client's text frame through what the server
// does with it (json.Unmarshal, check, the error reply; for an offer, the
// gateway's offerSDP): no panics, a verdict for every message, replies that
// encode, and messages that survive a round trip through their encoding.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"peers"}`,
		`{"type":"offer","to":"0123456789abcdef","sdp":{"type":"offer","sdp":"v=0\r\n"}}`,
		`{"type":"offer","to":"0123456789abcdef","sdp":"v=0\r\n"}`,
		`{"type":"answer","to":"0123456789abcdef","sdp":null}`,
		`{"type":"candidate","to":"0123456789abcdef","candidate":null}`,
		`{"type":"candidate","to":"x","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}}`,
		`{"type":"welcome","id":"a","room":"r","peers":["b"],"iceServers":[{"urls":["turn:127.0.0.1:3478"]}]}`,
		`{"type":"` + strings.Repeat("x", 40) + `"}`,
		`{"type":"offer","sdp":{"type":"answer","sdp":" "}}`,
		`{}`, `[]`, `null`, `"offer"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		if err := json.Unmarshal(b, &m); err != nil {
			return
		}
		code, text := check(&m)
		if (code == "") != (text == "") {
			t.Fatalf("check(%s) = %q, %q: a code needs a text and only with one", b, code, text)
		}
		if code == "" && m.Type != TypePeers && m.To == "" {
			t.Fatalf("check accepted %s without a recipient", b)
		}
		if code != "" {
			reply, err := json.Marshal(errorMsg(code, text, m.To))
			if err != nil {
				t.Fatalf("error reply to %s: %v", b, err)
			}
			if !json.Valid(reply) || !strings.Contains(string(reply), `"code":"`+code+`"`) {
				t.Fatalf("error reply %s", reply)
			}
		}
		if m.Type == TypeOffer && code == "" {
			if sdp, err := offerSDP(m.SDP); err == nil && strings.TrimSpace(sdp) == "" {
				t.Fatalf("offerSDP(%s) accepted an empty SDP", m.SDP)
			}
		}
		// What the server relays (the same struct, re-encoded) decodes to
		// itself.
		enc, err := json.Marshal(m)
		if err != nil {
			return // e.g. invalid UTF-8 kept in a RawMessage
		}
		var again Message
		if err := json.Unmarshal(enc, &again); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", enc, err)
		}
		enc2, err := json.Marshal(again)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip: %s became %s (%v)", enc, enc2, err)
		}
	})
}
