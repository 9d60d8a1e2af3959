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

// serveManifest answers one ManifestRequest.
func (n *Host) serveManifest(s network.Stream) {
	c := n.wrap(n.ctx, s, n.opts.RequestTimeout)
	defer c.close()
	if !n.acquire(c) {
		return
	}
	defer n.release()
	m, err := c.read(wire.MaxFrame)
	req, ok := m.(*wire.ManifestRequest)
	if err != nil || !ok {
		n.log.Debug("manifest: bad request", "from", c.peer, "err", err, "msg", fmt.Sprintf("%T", m))
		c.reset()
		return
	}
	c.timeout = n.opts.FrameTimeout
	if err := shardproto.Answer(c, n.prov, req, ServeOptions{}); err != nil {
		n.log.Debug("manifest: write", "to", c.peer, "err", err)
		c.reset()
	}
}

// serveShard answers one BlocksRequest.
func (n *Host) serveShard(s network.Stream) {
	c := n.wrap(n.ctx, s, n.opts.RequestTimeout)
	defer c.close()
	if !n.acquire(c) {
		return
	}
	defer n.release()
	m, err := c.read(wire.MaxFrame)
	req, ok := m.(*wire.BlocksRequest)
	if err != nil || !ok {
		n.log.Debug("shard: bad request", "from", c.peer, "err", err, "msg", fmt.Sprintf("%T", m))
		c.reset()
		return
	}
	c.timeout = n.opts.FrameTimeout
	opts := ServeOptions{MaxBlocksPerRequest: n.opts.MaxBlocksPerRequest, ServeUnverified: n.opts.ServeUnverified,
		Logger: n.log, OnBlock: func() { n.stats.blocks.Add(1) }}
	if err := shardproto.Answer(c, n.prov, req, opts); err != nil {
		n.log.Debug("shard: write", "to", c.peer, "err", err)
		c.reset()
	}
}

// ServeOptions are the limits a shard-protocol server honours on any
// transport (the Host fills them from its Options).
type ServeOptions = shardproto.ServeOptions

// Answer writes the answer to one request on c (see shardproto.Answer).
func Answer(c MsgConn, prov Provider, req wire.Message, opts ServeOptions) error {
	return shardproto.Answer(c, prov, req, opts)
}
