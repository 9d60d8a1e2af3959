package p2p

import (
	"crypto/sha256"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
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
	var man, sig []byte
	if n.prov != nil {
		man, sig, ok = n.prov.Manifest(req.ModelID)
	}
	if !ok || len(man) == 0 || len(man) > wire.MaxManifest || len(sig) > wire.MaxSig {
		c.write(&wire.Error{Code: wire.CodeNotFound, Msg: "unknown model " + req.ModelID.String()})
		return
	}
	if err := c.write(&wire.ManifestResponse{Manifest: man, Sig: sig}); err != nil {
		n.log.Debug("manifest: write", "to", c.peer, "err", err)
		c.reset()
	}
}

// serveShard answers one BlocksRequest with Count blocks and End. Every
// block is checked against its hash before it is sent: a store that went bad
// answers CodeInternal instead of serving a bad byte.
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
	var sh rdrr.Shard
	if n.prov != nil {
		sh, ok = n.prov.Shard(req.Shard)
	}
	if !ok {
		c.write(&wire.Error{Code: wire.CodeNotFound, Msg: "unknown shard " + req.Shard.String()})
		return
	}
	nb := len(sh.Blocks)
	first, count := int64(req.First), int64(req.Count)
	if first+count > int64(nb) || count > int64(n.opts.MaxBlocksPerRequest) || sh.BlockSize <= 0 || sh.BlockSize > wire.MaxBlockData {
		c.write(&wire.Error{Code: wire.CodeBadRequest,
			Msg: fmt.Sprintf("blocks [%d, %d) of a %d-block shard (at most %d per request)", first, first+count, nb, n.opts.MaxBlocksPerRequest)})
		return
	}
	buf := make([]byte, sh.BlockSize)
	pr := newProver(sh.Blocks)
	for i := int(first); i < int(first+count); i++ {
		want := blockLen(sh, i)
		k, err := n.prov.ReadBlock(sh.Hash, i, buf[:want])
		if err != nil || k <= 0 || k > want || (!n.opts.ServeUnverified && (k != want || sha256.Sum256(buf[:k]) != sh.Blocks[i])) {
			n.log.Warn("shard: cannot serve block", "shard", sh.Hash.Short(), "block", i, "err", err)
			c.write(&wire.Error{Code: wire.CodeInternal, Msg: fmt.Sprintf("block %d unavailable", i)})
			return
		}
		if err := c.write(&wire.Block{Index: uint32(i), Data: buf[:k], Proof: pr.proof(i)}); err != nil {
			n.log.Debug("shard: write", "to", c.peer, "err", err)
			c.reset()
			return
		}
		n.stats.blocks.Add(1)
	}
	c.write(&wire.End{})
}

// blockLen is the size of block i of sh.
func blockLen(sh rdrr.Shard, i int) int {
	start := int64(i) * sh.BlockSize
	return int(min(sh.BlockSize, sh.Size-start))
}
