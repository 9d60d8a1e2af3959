package shardproto

import (
	"fmt"
	"log/slog"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// ServeOptions are the limits a shard-protocol server honours on any
// transport.
type ServeOptions struct {
	MaxBlocksPerRequest int  // largest BlocksRequest.Count served (1024)
	ServeUnverified     bool // tests only: serve blocks without checking them (a corrupting peer)
	Logger              *slog.Logger
	// OnBlock, when set, is called after each Block frame is written.
	OnBlock func()
	// Buf, when it holds a whole block, is where blocks are read before
	// they are sent (a caller serving many requests reuses one); nil or
	// too small: a buffer is allocated per request.
	Buf []byte
}

// VerifiedProvider is a Provider whose ReadBlock returns only bytes it has
// hashed against the shard table in this process (the swarm's store
// hashes each block when it stores it, and a block kept from an earlier
// run the first time it is read). Answer sends its blocks without hashing
// them again; any other Provider's blocks are hashed before they are sent.
// A wrapper that embeds a Provider drops the marker, as it should.
type VerifiedProvider interface {
	Provider
	ReadsVerified()
}

// Answer writes the answer to one request on c: a ManifestResponse or an
// Error to a ManifestRequest; Count Block frames with their Merkle proofs
// then End, or an Error, to a BlocksRequest (every block checked against
// its hash before it is sent); a CodeBadRequest Error to anything else. It
// returns the first write error (the caller then aborts the exchange); an
// Error answered is not an error.
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
// block is checked against its hash before it is sent (by the provider, for
// a VerifiedProvider; here, for any other): a store that went bad answers
// CodeInternal instead of serving a bad byte.
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
	buf := o.Buf
	if int64(len(buf)) < sh.BlockSize {
		buf = make([]byte, sh.BlockSize)
	}
	_, verified := prov.(VerifiedProvider)
	check := !o.ServeUnverified && !verified
	pr := newProver(sh.Blocks)
	for i := int(first); i < int(first+count); i++ {
		want := sh.BlockLen(i)
		k, err := prov.ReadBlock(sh.Hash, i, buf[:want])
		if err != nil || k <= 0 || k > want || (!o.ServeUnverified && k != want) || (check && sh.CheckBlock(i, buf[:k]) != nil) {
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
