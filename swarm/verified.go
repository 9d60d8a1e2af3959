package swarm

import "github.com/doppler-llm/doppler/rdrr"

// Each received byte is hashed once: a transport that verifies blocks on
// arrival (p2p.Remote checks each against the shard table and its Merkle
// proof) says so by being a VerifyingPeer, and a BlockStore that can take
// such a block without hashing it again is a VerifiedBlockStore. Any other
// pair hashes in the store, as BlockStore.PutBlock documents.

// VerifyingPeer is a Peer whose ReadBlocks hands fn only blocks it has
// hashed against the sh.Blocks it was given (as p2p.Remote does). A
// wrapper that embeds a Peer drops the marker, as it should.
type VerifyingPeer interface {
	Peer
	VerifiesBlocks()
}

// VerifiedBlockStore is a BlockStore that takes a block its caller has
// hashed against sh.Blocks[index] already (Store.PutVerifiedBlock).
type VerifiedBlockStore interface {
	BlockStore
	PutVerifiedBlock(sh rdrr.Shard, index int, data []byte) (wrote bool, err error)
}

// checkReceived checks a block received from p that the store will not
// see (a copy of a block held already): hashed here unless p verified it.
func checkReceived(p Peer, sh rdrr.Shard, index int, data []byte) error {
	if _, ok := p.(VerifyingPeer); ok {
		return nil
	}
	return sh.CheckBlock(index, data)
}

// putReceived stores a block received from p, hashed once: by p when it
// verifies and the store can take a verified block, by the store else.
func putReceived(bs BlockStore, p Peer, sh rdrr.Shard, index int, data []byte) (wrote bool, err error) {
	if vs, ok := bs.(VerifiedBlockStore); ok {
		if _, ok := p.(VerifyingPeer); ok {
			return vs.PutVerifiedBlock(sh, index, data)
		}
	}
	return bs.PutBlock(sh.Hash, index, data)
}
