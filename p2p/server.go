package p2p

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/p2p/wire"
)

// acquire takes a serving slot or answers CodeBusy.
func (n *Host) acquire(c *conn) bool {
	select {
	case n.sem <- struct{}{}:
		return true
	default:
		c.write(&wire.Error{Code: wire.CodeBusy, Msg: "too many streams"})
		return false
	}
}

func (n *Host) release() { <-n.sem }

// serveOne returns the handler of a protocol whose streams carry one
// request of type R (a ManifestRequest or a BlocksRequest); what names the
// protocol in logs. Anything else read first resets the stream.
func serveOne[R wire.Message](n *Host, what string) network.StreamHandler {
	return func(s network.Stream) {
		c := n.wrap(n.ctx, s, n.opts.RequestTimeout)
		defer c.close()
		if !n.acquire(c) {
			return
		}
		defer n.release()
		m, err := c.read(wire.MaxFrame)
		req, ok := m.(R)
		if err != nil || !ok {
			n.log.Debug(what+": bad request", "from", c.peer, "err", err, "msg", fmt.Sprintf("%T", m))
			c.reset()
			return
		}
		c.timeout = n.opts.FrameTimeout
		bp := n.bufs.get()
		defer n.bufs.put(bp)
		opts := ServeOptions{MaxBlocksPerRequest: n.opts.MaxBlocksPerRequest, ServeUnverified: n.opts.ServeUnverified,
			Logger: n.log, OnBlock: func() { n.stats.blocks.Add(1) }, Buf: *bp}
		if err := shardproto.Answer(c, n.prov, req, opts); err != nil {
			n.log.Debug(what+": write", "to", c.peer, "err", err)
			c.reset()
		}
	}
}

// ServeOptions are the limits a shard-protocol server honours on any
// transport (the Host fills them from its Options).
type ServeOptions = shardproto.ServeOptions

// Answer writes the answer to one request on c (see shardproto.Answer).
func Answer(c MsgConn, prov Provider, req wire.Message, opts ServeOptions) error {
	return shardproto.Answer(c, prov, req, opts)
}
