package rdrr

// Block geometry and block checks of a shard. Every reader of blocks (the
// verifier, the Reader, the swarm's store and fetcher, the shard protocol,
// the browser client) goes through these, so that a block's bounds and what
// makes it good are written once.

// BlockLen returns the size of block i of s: BlockSize, except for the last
// block, which holds what is left of the shard.
func (s Shard) BlockLen(i int) int {
	return int(min(s.BlockSize, s.Size-int64(i)*s.BlockSize))
}
