package shardproto

import (
	"context"
	"fmt"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// FetchManifest sends a ManifestRequest on an open exchange c and verifies
// the answer: the manifest must hash to id and parse as a valid manifest; a
// signature, when the peer sends one, must verify (rdrr.ErrBadSignature
// otherwise). peer names the peer in errors; ctx is consulted to classify a
// failed read (c bounds its own calls). On error the caller aborts the
// exchange.
func FetchManifest(ctx context.Context, c MsgConn, peer string, id rdrr.ModelID) (manifest, sig []byte, err error) {
	if err := c.WriteMsg(&wire.ManifestRequest{ModelID: id}); err != nil {
		return nil, nil, Classify(ctx, peer, err)
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	m, err := c.ReadMsg(wire.MaxManifestFrame)
	if err != nil {
		return nil, nil, Classify(ctx, peer, err)
	}
	switch m := m.(type) {
	case *wire.Error:
		return nil, nil, RemoteError(peer, m)
	case *wire.ManifestResponse:
		if rdrr.Sum(m.Manifest) != id {
			return nil, nil, fmt.Errorf("peer %s: model %s: %w", peer, id.Short(), ErrBadManifest)
		}
		if _, err := rdrr.ParseManifest(m.Manifest); err != nil {
			return nil, nil, fmt.Errorf("peer %s: model %s: %w: %w", peer, id.Short(), ErrBadManifest, err)
		}
		if m.Sig != nil {
			if _, err := rdrr.VerifySignature(m.Manifest, m.Sig); err != nil {
				return nil, nil, fmt.Errorf("peer %s: model %s: %w", peer, id.Short(), err)
			}
		}
		return m.Manifest, m.Sig, nil
	default:
		return nil, nil, fmt.Errorf("peer %s: %w: %v in answer to ManifestRequest", peer, ErrProtocol, m.Type())
	}
}

// CheckRange validates a block range request before anything is sent.
func CheckRange(sh rdrr.Shard, first, count int) error {
	nb := len(sh.Blocks)
	if first < 0 || count <= 0 || first+count > nb || int64(first+count) > 1<<32-1 {
		return fmt.Errorf("shard %s: blocks [%d, %d) of %d", sh.Hash.Short(), first, first+count, nb)
	}
	if nb != rdrr.NumBlocks(sh.Size, sh.BlockSize) {
		return fmt.Errorf("shard %s: %d block hashes for %d bytes", sh.Hash.Short(), nb, sh.Size)
	}
	return nil
}

// FetchBlocks sends a BlocksRequest for blocks [first, first+count) of sh
// on an open exchange c and calls fn with each, in order, once it is
// verified against sh.Blocks[index] and its Merkle proof against sh.Root.
// data is valid only during the call. A block that fails returns an error
// wrapping rdrr.ErrBadBlock (and rdrr.ErrBadProof for a bad proof) that
// names the peer and the block; fn is never called with it. An error from
// fn stops the transfer and is returned as is. Blocks before the failure
// have been delivered, so a caller resumes from the last good one. peer
// names the peer in errors; ctx is consulted to classify a failed read (c
// bounds its own calls) and after each block: once it ends, FetchBlocks
// returns its error. On error the caller aborts the exchange.
func FetchBlocks(ctx context.Context, c MsgConn, peer string, sh rdrr.Shard, first, count int, fn func(index int, data []byte) error) error {
	if err := CheckRange(sh, first, count); err != nil {
		return err
	}
	if err := c.WriteMsg(&wire.BlocksRequest{Shard: sh.Hash, First: uint32(first), Count: uint32(count)}); err != nil {
		return Classify(ctx, peer, err)
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	for i := first; i <= first+count; i++ {
		m, err := c.ReadMsg(wire.MaxFrame)
		if err != nil {
			return Classify(ctx, peer, err)
		}
		switch m := m.(type) {
		case *wire.Error:
			return RemoteError(peer, m)
		case *wire.End:
			if i != first+count {
				return fmt.Errorf("peer %s: shard %s: %w: End after %d of %d blocks", peer, sh.Hash.Short(), ErrProtocol, i-first, count)
			}
			return nil
		case *wire.Block:
			if i == first+count {
				return fmt.Errorf("peer %s: shard %s: %w: more blocks than asked", peer, sh.Hash.Short(), ErrProtocol)
			}
			if int(m.Index) != i {
				return fmt.Errorf("peer %s: shard %s: %w: block %d where %d was due", peer, sh.Hash.Short(), ErrProtocol, m.Index, i)
			}
			if err := VerifyBlock(sh, i, m.Data, m.Proof); err != nil {
				return fmt.Errorf("peer %s: %w", peer, err)
			}
			if err := fn(i, m.Data); err != nil {
				return err
			}
			// A caller that cancels (from fn, or while fn ran) gets
			// its context's error even when the rest of the answer is
			// already buffered and every read would still succeed.
			if err := ctx.Err(); err != nil {
				return Classify(ctx, peer, err)
			}
		default:
			return fmt.Errorf("peer %s: %w: %v in a block stream", peer, ErrProtocol, m.Type())
		}
	}
	panic("unreachable")
}

// VerifyBlock checks block i of sh: its size and its hash against the
// manifest's leaf (rdrr.Shard.CheckBlock), and the leaf's Merkle proof
// against the shard's root. The error names the shard and the block and
// wraps rdrr.ErrBadBlock.
func VerifyBlock(sh rdrr.Shard, i int, data []byte, proof []rdrr.Hash) error {
	if err := sh.CheckBlock(i, data); err != nil {
		return err
	}
	if err := rdrr.VerifyProof(sh.Root, sh.Blocks[i], i, len(sh.Blocks), proof); err != nil {
		return fmt.Errorf("shard %s block %d: %w: %w", sh.Hash.Short(), i, rdrr.ErrBadBlock, err)
	}
	return nil
}
