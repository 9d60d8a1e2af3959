package p2p

import (
	"crypto/sha256"
	"fmt"
	"log/slog"

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
	if err := answerManifest(c, n.prov, req); err != nil {
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
	if err := answerBlocks(c, n.prov, req, &opts); err != nil {
		n.log.Debug("shard: write", "to", c.peer, "err", err)
		c.reset()
	}
}

// ServeOptions are the limits a shard-protocol server honours on any
// transport (the Host fills them from its Options).
type ServeOptions struct {
	MaxBlocksPerRequest int  // largest BlocksRequest.Count served (1024)
	ServeUnverified     bool // tests only: as Options.ServeUnverified
	Logger              *slog.Logger
	// OnBlock, when set, is called after each Block frame is written.
	OnBlock func()
}

// Answer writes the answer to one request on c, as the Host's stream
// handlers do: a ManifestResponse or an Error to a ManifestRequest; Count
// Block frames with their Merkle proofs then End, or an Error, to a
// BlocksRequest (every block checked against its hash before it is sent);
// a CodeBadRequest Error to anything else. It returns the first write
// error (the caller then aborts the exchange); an Error answered is not an
// error.
func Answer(c MsgConn, prov Provider, req wire.Message, opts ServeOptions) error {
	switch req := req.(type) {
	case *wire.ManifestRequest:
		return answerManifest(c, prov, req)
	case *wire.BlocksRequest:
		return answerBlocks(c, prov, req, &opts)
	}
	t := "nil"
	if req != nil {
		t = req.Type().String()
	}
	return c.WriteMsg(&wire.Error{Code: wire.CodeBadRequest, Msg: "unexpected " + t})
}

func answerManifest(c MsgConn, prov Provider, req *wire.ManifestRequest) error {
	var man, sig []byte
	ok := false
	if prov != nil {
		man, sig, ok = prov.Manifest(req.ModelID)
	}
	if !ok || len(man) == 0 || len(man) > wire.MaxManifest || len(sig) > wire.MaxSig {
		return c.WriteMsg(&wire.Error{Code: wire.CodeNotFound, Msg: "unknown model " + req.ModelID.String()})
	}
	return c.WriteMsg(&wire.ManifestResponse{Manifest: man, Sig: sig})
}

// answerBlocks answers one BlocksRequest with Count blocks and End. Every
// block is checked against its hash before it is sent: a store that went
// bad answers CodeInternal instead of serving a bad byte.
func answerBlocks(c MsgConn, prov Provider, req *wire.BlocksRequest, o *ServeOptions) error {
	maxBlocks := o.MaxBlocksPerRequest
	if maxBlocks <= 0 {
		maxBlocks = 1024
	}
	var sh rdrr.Shard
	ok := false
	if prov != nil {
		sh, ok = prov.Shard(req.Shard)
	}
	if !ok {
		return c.WriteMsg(&wire.Error{Code: wire.CodeNotFound, Msg: "unknown shard " + req.Shard.String()})
	}
	nb := len(sh.Blocks)
	first, count := int64(req.First), int64(req.Count)
	if first+count > int64(nb) || count > int64(maxBlocks) || sh.BlockSize <= 0 || sh.BlockSize > wire.MaxBlockData {
		return c.WriteMsg(&wire.Error{Code: wire.CodeBadRequest,
			Msg: fmt.Sprintf("blocks [%d, %d) of a %d-block shard (at most %d per request)", first, first+count, nb, maxBlocks)})
	}
	buf := make([]byte, sh.BlockSize)
	pr := newProver(sh.Blocks)
	for i := int(first); i < int(first+count); i++ {
		want := blockLen(sh, i)
		k, err := prov.ReadBlock(sh.Hash, i, buf[:want])
		if err != nil || k <= 0 || k > want || (!o.ServeUnverified && (k != want || sha256.Sum256(buf[:k]) != sh.Blocks[i])) {
			if o.Logger != nil {
				o.Logger.Warn("shard: cannot serve block", "shard", sh.Hash.Short(), "block", i, "err", err)
			}
			c.WriteMsg(&wire.Error{Code: wire.CodeInternal, Msg: fmt.Sprintf("block %d unavailable", i)})
			return nil
		}
		if err := c.WriteMsg(&wire.Block{Index: uint32(i), Data: buf[:k], Proof: pr.proof(i)}); err != nil {
			return err
		}
		if o.OnBlock != nil {
			o.OnBlock()
		}
	}
	c.WriteMsg(&wire.End{})
	return nil
}

// blockLen is the size of block i of sh.
func blockLen(sh rdrr.Shard, i int) int {
	start := int64(i) * sh.BlockSize
	return int(min(sh.BlockSize, sh.Size-start))
}
