package p2p

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/doppler-llm/doppler/p2p/wire"
	"github.com/doppler-llm/doppler/rdrr"
)

// Remote is one peer as the swarm's fetcher sees it.
type Remote struct {
	n   *Host
	id  peer.ID
	err error // a malformed peer ID
}

// Remote returns a handle on a peer; it dials when first used (addresses
// from the peerstore, else a DHT lookup).
func (n *Host) Remote(peerID string) *Remote {
	id, err := peer.Decode(peerID)
	if err != nil {
		err = fmt.Errorf("peer ID %q: %w", peerID, err)
	}
	return &Remote{n: n, id: id, err: err}
}

// ID returns the peer's ID.
func (r *Remote) ID() string { return r.id.String() }

func (r *Remote) open(ctx context.Context, proto protocol.ID) (*conn, error) {
	if r.err != nil {
		return nil, r.err
	}
	n := r.n
	if n.ctx.Err() != nil {
		return nil, ErrClosed
	}
	dctx, cancel := context.WithTimeout(ctx, n.opts.DialTimeout)
	defer cancel()
	if n.h.Network().Connectedness(r.id) != network.Connected && len(n.h.Peerstore().Addrs(r.id)) == 0 {
		ai, err := n.dht.FindPeer(dctx, r.id)
		if err != nil {
			return nil, fmt.Errorf("peer %s: no address: %w", r.id, err)
		}
		n.h.Peerstore().AddAddrs(r.id, ai.Addrs, peerstoreTTL)
	}
	s, err := n.h.NewStream(dctx, r.id, proto)
	if err != nil {
		return nil, fmt.Errorf("peer %s: open %s: %w", r.id, proto, err)
	}
	return n.wrap(ctx, s, n.opts.FrameTimeout), nil
}

// Manifest fetches a model's manifest and signature and verifies them: the
// manifest must hash to id and parse as a valid manifest; a signature, when
// the peer sends one, must verify (rdrr.ErrBadSignature otherwise).
func (r *Remote) Manifest(ctx context.Context, id rdrr.ModelID) (manifest, sig []byte, err error) {
	c, err := r.open(ctx, ManifestProtocol)
	if err != nil {
		return nil, nil, err
	}
	defer c.close()
	manifest, sig, err = FetchManifest(ctx, c, c.peer, id)
	if err != nil {
		c.reset()
	}
	return manifest, sig, err
}

// FetchManifest is Remote.Manifest over an open exchange c on any
// transport: it sends a ManifestRequest and verifies the answer. peer names
// the peer in errors; ctx is consulted to classify a failed read (c bounds
// its own calls). On error the caller aborts the exchange.
func FetchManifest(ctx context.Context, c MsgConn, peer string, id rdrr.ModelID) (manifest, sig []byte, err error) {
	if err := c.WriteMsg(&wire.ManifestRequest{ModelID: id}); err != nil {
		return nil, nil, classify(ctx, peer, err)
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	m, err := c.ReadMsg(wire.MaxManifestFrame)
	if err != nil {
		return nil, nil, classify(ctx, peer, err)
	}
	switch m := m.(type) {
	case *wire.Error:
		return nil, nil, remoteError(peer, m)
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

// ReadBlocks fetches blocks [first, first+count) of a shard and calls fn
// with each, in order, once it is verified against sh.Blocks[index] and its
// Merkle proof against sh.Root. data is valid only during the call. A block
// that fails returns an error wrapping rdrr.ErrBadBlock (and rdrr.ErrBadProof
// for a bad proof) that names the peer and the block; fn is never called
// with it. An error from fn stops the transfer and is returned as is.
// Blocks before the failure have been delivered, so a caller resumes from
// the last good one.
func (r *Remote) ReadBlocks(ctx context.Context, sh rdrr.Shard, first, count int, fn func(index int, data []byte) error) error {
	if err := CheckRange(sh, first, count); err != nil {
		return err
	}
	c, err := r.open(ctx, ShardProtocol)
	if err != nil {
		return err
	}
	defer c.close()
	if err := FetchBlocks(ctx, c, c.peer, sh, first, count, fn); err != nil {
		c.reset()
		return err
	}
	return nil
}

// CheckRange validates a ReadBlocks request before anything is sent.
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

// FetchBlocks is Remote.ReadBlocks over an open exchange c on any
// transport: it sends a BlocksRequest and verifies every block (hash and
// Merkle proof) before fn sees it, with the same errors. peer names the
// peer in errors; ctx is consulted to classify a failed read (c bounds its
// own calls). On error the caller aborts the exchange.
func FetchBlocks(ctx context.Context, c MsgConn, peer string, sh rdrr.Shard, first, count int, fn func(index int, data []byte) error) error {
	if err := CheckRange(sh, first, count); err != nil {
		return err
	}
	if err := c.WriteMsg(&wire.BlocksRequest{Shard: sh.Hash, First: uint32(first), Count: uint32(count)}); err != nil {
		return classify(ctx, peer, err)
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	for i := first; i <= first+count; i++ {
		m, err := c.ReadMsg(wire.MaxFrame)
		if err != nil {
			return classify(ctx, peer, err)
		}
		switch m := m.(type) {
		case *wire.Error:
			return remoteError(peer, m)
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
			if err := verifyBlock(sh, i, m); err != nil {
				return fmt.Errorf("peer %s: shard %s block %d: %w", peer, sh.Hash.Short(), i, err)
			}
			if err := fn(i, m.Data); err != nil {
				return err
			}
		default:
			return fmt.Errorf("peer %s: %w: %v in a block stream", peer, ErrProtocol, m.Type())
		}
	}
	panic("unreachable")
}

func verifyBlock(sh rdrr.Shard, i int, b *wire.Block) error {
	if want := blockLen(sh, i); len(b.Data) != want {
		return fmt.Errorf("%w: %d bytes, want %d", rdrr.ErrBadBlock, len(b.Data), want)
	}
	leaf := rdrr.Hash(sha256.Sum256(b.Data))
	if !bytes.Equal(leaf[:], sh.Blocks[i][:]) {
		return rdrr.ErrBadBlock
	}
	if err := rdrr.VerifyProof(sh.Root, leaf, i, len(sh.Blocks), b.Proof); err != nil {
		return fmt.Errorf("%w: %w", rdrr.ErrBadBlock, err)
	}
	return nil
}
