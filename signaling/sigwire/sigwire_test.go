package sigwire

import (
	"encoding/json"
	"testing"
)

// TestMessageJSON: the field names and omissions of docs/protocols.md.
func TestMessageJSON(t *testing.T) {
	cases := []struct {
		m    Message
		want string
	}{
		{Message{Type: TypeWelcome, ID: "a1", Room: "r", Peers: []PeerID{}}, `{"type":"welcome","id":"a1","room":"r","peers":[]}`},
		{Message{Type: TypeWelcome, ID: "a1", Room: "r", Peers: []PeerID{"b2"}, ICEServers: []ICEServer{{URLs: []string{"turn:127.0.0.1:9?transport=udp"}, Username: "u", Credential: "c"}}},
			`{"type":"welcome","id":"a1","room":"r","peers":["b2"],"iceServers":[{"urls":["turn:127.0.0.1:9?transport=udp"],"username":"u","credential":"c"}]}`},
		{Message{Type: TypeCandidate, From: "b2", Candidate: json.RawMessage("null")}, `{"type":"candidate","from":"b2","candidate":null}`},
		{Message{Type: TypeError, Code: CodeUnknownPeer, Error: "no such peer", ID: "c3"}, `{"type":"error","id":"c3","code":"unknown-peer","error":"no such peer"}`},
	}
	for _, c := range cases {
		b, err := json.Marshal(c.m)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("got  %s\nwant %s", b, c.want)
		}
	}
}
