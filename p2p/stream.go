package p2p

import (
	"context"
	"errors"
	"fmt"
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
	rbuf    *[]byte     // Block bodies are read into it (from n.bufs; nil until the first read)
}

func (n *Host) wrap(ctx context.Context, s network.Stream, timeout time.Duration) *conn {
	c := &conn{s: s, n: n, peer: s.Conn().RemotePeer().String(), timeout: timeout}
	// Cancelling ctx (or closing the host) resets the stream, which unblocks
	// any read or write at once.
	c.stop = context.AfterFunc(ctx, func() { s.Reset() })
	return c
}

// close and reset end the exchange; the Block last read is invalid after
// either (its bytes go back to the host's buffer pool).
func (c *conn) close() {
	c.stop()
	c.s.Close()
	c.release()
}

func (c *conn) reset() {
	c.stop()
	c.s.Reset()
	c.release()
}

func (c *conn) release() {
	if c.rbuf != nil {
		c.n.bufs.put(c.rbuf)
		c.rbuf = nil
	}
}

// blockBuf is where Block bodies are read: taken from the host's pool at
// the first Block, kept until the exchange ends.
func (c *conn) blockBuf() []byte {
	if c.rbuf == nil {
		c.rbuf = c.n.bufs.get()
	}
	return *c.rbuf
}

// write sends m as one frame. A Block's data is written from where it
// lies, between its frame's head and tail; other frames are small.
func (c *conn) write(m wire.Message) error {
	c.s.SetWriteDeadline(time.Now().Add(c.timeout))
	var k int
	var err error
	if b, ok := m.(*wire.Block); ok {
		k, err = c.writeBlock(b)
	} else {
		var f []byte
		if f, err = wire.Marshal(m); err != nil {
			return err
		}
		k, err = c.s.Write(f)
	}
	c.n.stats.add(c.peer, uint64(k), 0)
	return c.gone(err)
}

func (c *conn) writeBlock(b *wire.Block) (int, error) {
	var parts [wire.HeaderSize + 8 + 1 + 32*wire.MaxProof]byte
	head, tail, err := wire.BlockFrame(parts[:], b)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range [][]byte{head, b.Data, tail} {
		k, err := c.s.Write(p)
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// gone marks an error of a reset stream, or of a closed connection, as the
// peer going away (shardproto.ErrGone).
func (c *conn) gone(err error) error {
	if err != nil && (errors.Is(err, network.ErrReset) || c.s.Conn().IsClosed()) {
		return fmt.Errorf("%w: %w", shardproto.ErrGone, err)
	}
	return err
}

// ReadMsg and WriteMsg make a conn a MsgConn.
func (c *conn) ReadMsg(max int) (wire.Message, error) { return c.read(max) }
func (c *conn) WriteMsg(m wire.Message) error         { return c.write(m) }
func (c *conn) CloseWrite() error                     { return c.s.CloseWrite() }

// read reads one message of at most max bytes within the frame timeout. A
// Block's data is read into the conn's pooled buffer: it is valid until
// the next read, close or reset (what FetchBlocks' callers are promised).
func (c *conn) read(max int) (wire.Message, error) {
	c.s.SetReadDeadline(time.Now().Add(c.timeout))
	cr := &countReader{r: c.s}
	m, err := wire.ReadMessageBuf(cr, max, c.blockBuf)
	c.n.stats.add(c.peer, 0, cr.n)
	return m, c.gone(err)
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
