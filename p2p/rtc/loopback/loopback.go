// Package loopback reads ICE candidate lines (RFC 8839 section 5.1) as
// far as a loopback-only WebRTC connection needs: which candidates are
// UDP over IPv4 loopback, and an SDP with the others dropped. The node's
// WebRTC peer (package rtc) and the browser client share it; it imports no
// WebRTC stack, so the browser's WebAssembly stays small.
package loopback

import (
	"net/netip"
	"strings"
)

// Candidate reports whether an ICE candidate line ("candidate:…", with or
// without SDP's "a=") is a UDP candidate on an IPv4 loopback address (the
// only kind a node bound to loopback, and a page talking to it, use).
func Candidate(line string) bool {
	line = strings.TrimPrefix(strings.TrimPrefix(line, "a="), "candidate:")
	// foundation component transport priority address port "typ" type …
	f := strings.Fields(line)
	if len(f) < 8 || f[6] != "typ" || !strings.EqualFold(f[2], "udp") {
		return false
	}
	ip, err := netip.ParseAddr(f[4])
	return err == nil && ip.Is4() && ip.IsLoopback()
}

// SDP returns sdp without its candidate lines ("a=candidate:…") that are
// not loopback Candidates; every other line is kept as it is, line endings
// included.
func SDP(sdp string) string {
	lines := strings.SplitAfter(sdp, "\n")
	out := lines[:0]
	for _, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(t, "a=candidate:") && !Candidate(t) {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "")
}
