package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/doppler-llm/doppler/p2p/wire"
)

// MsgConn carries the shard protocol's messages over one exchange (one
// request and its answer) on any transport: a libp2p stream here, a WebRTC
// data channel in p2p/rtc. The implementation bounds every call (a deadline
// per frame, a context) and counts traffic if it wants to; ReadMsg refuses
// frames over max before allocating them. An implementation that can
// half-close (CloseWrite() error) is half-closed after the request is sent.
type MsgConn interface {
	ReadMsg(max int) (wire.Message, error)
	WriteMsg(m wire.Message) error
}

// Frames returns a MsgConn that frames messages over a byte stream with
// wire.ReadMessage and wire.WriteMessage (one Write per frame); rw bounds
// its own calls.
func Frames(rw io.ReadWriter) MsgConn { return frames{rw} }

type frames struct{ rw io.ReadWriter }

func (f frames) ReadMsg(max int) (wire.Message, error) { return wire.ReadMessage(f.rw, max) }
func (f frames) WriteMsg(m wire.Message) error         { return wire.WriteMessage(f.rw, m) }

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

// classify turns a read error into one of the package's sentinels.
func classify(ctx context.Context, peer string, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("peer %s: %w", peer, ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
		return fmt.Errorf("peer %s: %w: %v", peer, ErrTimeout, err)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("peer %s: %w: stream ended early", peer, ErrProtocol)
	case errors.Is(err, wire.ErrFrameTooLarge), errors.Is(err, wire.ErrMalformed),
		errors.Is(err, wire.ErrTruncated), errors.Is(err, wire.ErrTooManySkips):
		return fmt.Errorf("peer %s: %w: %w", peer, ErrProtocol, err)
	}
	return fmt.Errorf("peer %s: %w", peer, err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// remoteError turns a wire.Error into a sentinel.
func remoteError(peer string, e *wire.Error) error {
	if e.Code == wire.CodeNotFound {
		return fmt.Errorf("peer %s: %w: %w", peer, ErrNotFound, e)
	}
	return fmt.Errorf("peer %s: %w: %w", peer, ErrRemote, e)
}

func protoID(s string) protocol.ID { return protocol.ID(s) }
