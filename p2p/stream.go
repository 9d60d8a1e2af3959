package p2p

import (
	"context"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/p2p/wire"
)

// MsgConn carries the shard protocol's messages over one exchange on any
// transport: a libp2p stream here, a WebRTC data channel in p2p/rtc (see
// shardproto.MsgConn).
type MsgConn = shardproto.MsgConn

// Frames returns a MsgConn that frames messages over a byte stream.
func Frames(rw io.ReadWriter) MsgConn { return shardproto.Frames(rw) }

// conn wraps one stream: every read and write has a deadline and is
// counted against the peer.
type conn struct {
	s       network.Stream
	n       *Host
	peer    string
	timeout time.Duration
	stop    func() bool // removes the context watch
}

func (n *Host) wrap(ctx context.Context, s network.Stream, timeout time.Duration) *conn {
	c := &conn{s: s, n: n, peer: s.Conn().RemotePeer().String(), timeout: timeout}
	// Cancelling ctx (or closing the host) resets the stream, which unblocks
	// any read or write at once.
	c.stop = context.AfterFunc(ctx, func() { s.Reset() })
	return c
}

func (c *conn) close() {
	c.stop()
	c.s.Close()
}

func (c *conn) reset() {
	c.stop()
	c.s.Reset()
}

func (c *conn) write(m wire.Message) error {
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	c.s.SetWriteDeadline(time.Now().Add(c.timeout))
	k, err := c.s.Write(b)
	c.n.stats.add(c.peer, uint64(k), 0)
	return err
}

// ReadMsg and WriteMsg make a conn a MsgConn.
func (c *conn) ReadMsg(max int) (wire.Message, error) { return c.read(max) }
func (c *conn) WriteMsg(m wire.Message) error         { return c.write(m) }
func (c *conn) CloseWrite() error                     { return c.s.CloseWrite() }

// read reads one message of at most max bytes within the frame timeout.
func (c *conn) read(max int) (wire.Message, error) {
	c.s.SetReadDeadline(time.Now().Add(c.timeout))
	cr := &countReader{r: c.s}
	m, err := wire.ReadMessage(cr, max)
	c.n.stats.add(c.peer, 0, cr.n)
	return m, err
}

type countReader struct {
	r io.Reader
	n uint64
}

func (c *countReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += uint64(k)
	return k, err
}

func classify(ctx context.Context, peer string, err error) error {
	return shardproto.Classify(ctx, peer, err)
}

func isTimeout(err error) bool { return shardproto.IsTimeout(err) }

func remoteError(peer string, e *wire.Error) error { return shardproto.RemoteError(peer, e) }

func protoID(s string) protocol.ID { return protocol.ID(s) }
