package loopback

import "testing"

func TestCandidate(t *testing.T) {
	for _, c := range []struct {
		line string
		ok   bool
	}{
		{"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", true},
		{"a=candidate:1 1 UDP 2130706431 127.0.0.1 50000 typ host", true},
		{"candidate:1 1 udp 2130706431 192.168.1.5 50000 typ host", false},
		{"candidate:1 1 udp 2130706431 ::1 50000 typ host", false},
		{"candidate:1 1 tcp 2130706431 127.0.0.1 9 typ host tcptype active", false},
		{"candidate:1 1 udp 2130706431 0b5c1c41-7e5a-4d3f-9a1b-6c2d1e0f9a8b.local 50000 typ host", false},
		{"candidate:1 1 udp 1694498815 203.0.113.7 50000 typ srflx raddr 0.0.0.0 rport 0", false},
		{"garbage", false},
	} {
		if got := Candidate(c.line); got != c.ok {
			t.Errorf("Candidate(%q) = %v", c.line, got)
		}
	}
}

func TestSDP(t *testing.T) {
	sdp := "v=0\r\na=candidate:1 1 udp 1 127.0.0.1 1 typ host\r\na=candidate:2 1 udp 1 10.0.0.1 1 typ host\r\na=end-of-candidates\r\n"
	if got := SDP(sdp); got != "v=0\r\na=candidate:1 1 udp 1 127.0.0.1 1 typ host\r\na=end-of-candidates\r\n" {
		t.Errorf("SDP: %q", got)
	}
}
