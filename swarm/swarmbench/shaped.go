package swarmbench

import (
	"context"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"golang.org/x/time/rate"
)

// A shaper caps one node's upload and, apart, its download: a token
// bucket per direction, shared by every stream of the node (mocknet's own
// Bandwidth is per link, so a node with 999 links would get 999 times the
// rate). Writes wait for upload tokens before they are sent; reads take
// download tokens after the bytes arrive, so a slow reader backs the
// sender up through the stream as a full receive window would.
type shaper struct {
	up, down *rate.Limiter
	burst    int
}

// newShaper caps both directions at bps bits per second. The burst is
// 1/50 s of the rate, at least 16 KiB (a tbf bucket of the same size is
// what link mode configures).
func newShaper(bps int64) *shaper {
	bytes := float64(bps) / 8
	burst := max(int(bytes/50), 16<<10)
	return &shaper{up: rate.NewLimiter(rate.Limit(bytes), burst), down: rate.NewLimiter(rate.Limit(bytes), burst), burst: burst}
}

// wait takes n tokens from l in burst-sized pieces.
func (s *shaper) wait(l *rate.Limiter, n int) error {
	for n > 0 {
		k := min(n, s.burst)
		if err := l.WaitN(context.Background(), k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// shapedHost is a libp2p host whose streams, opened or accepted, are
// shaped (gossip and identify included).
type shapedHost struct {
	host.Host
	s *shaper
}

func (h *shapedHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	st, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil {
		return nil, err
	}
	return &shapedStream{Stream: st, s: h.s}, nil
}

func (h *shapedHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, h.wrap(handler))
}

func (h *shapedHost) SetStreamHandlerMatch(pid protocol.ID, m func(protocol.ID) bool, handler network.StreamHandler) {
	h.Host.SetStreamHandlerMatch(pid, m, h.wrap(handler))
}

func (h *shapedHost) wrap(handler network.StreamHandler) network.StreamHandler {
	return func(st network.Stream) { handler(&shapedStream{Stream: st, s: h.s}) }
}

// shapedStream waits for its node's tokens on every write and read.
type shapedStream struct {
	network.Stream
	s *shaper
}

func (st *shapedStream) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), st.s.burst)
		if err := st.s.wait(st.s.up, k); err != nil {
			return written, err
		}
		n, err := st.Stream.Write(p[:k])
		written += n
		if err != nil {
			return written, err
		}
		p = p[k:]
	}
	return written, nil
}

func (st *shapedStream) Read(p []byte) (int, error) {
	if len(p) > st.s.burst {
		p = p[:st.s.burst]
	}
	n, err := st.Stream.Read(p)
	if n > 0 {
		st.s.wait(st.s.down, n)
	}
	return n, err
}
