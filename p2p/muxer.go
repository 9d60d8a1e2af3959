package p2p

import "github.com/libp2p/go-libp2p/p2p/muxer/yamux"

// Stream multiplexer settings (yamux over TCP; QUIC has its own flow
// control). go-libp2p's defaults let one stream buffer 16 MiB and cut
// writes into 64 KiB messages. A shard request asks for at most 16 MiB
// and the receiver hashes and stores blocks as they come, so a 4 MiB
// window (a 100 ms path at 320 Mbit/s) keeps a link busy while bounding
// what a slow reader makes the host buffer; 256 KiB messages quarter the
// per-message work (frame headers, send-loop hand-offs, TLS writes).
const (
	maxStreamWindow = 4 << 20
	maxMuxMessage   = 256 << 10
)

// muxer returns the yamux transport the hosts use.
func muxer() *yamux.Transport {
	t := *yamux.DefaultTransport
	t.MaxStreamWindowSize = maxStreamWindow
	t.MaxMessageSize = maxMuxMessage
	return &t
}
