package rdrr

import "fmt"

// Block geometry and block checks of a shard. Every reader of blocks (the
// verifier, the Reader, the swarm's store and fetcher, the shard protocol,
// the browser client) goes through these, so that a block's bounds and what
// makes it good are written once.

// BlockLen returns the size of block i of s: BlockSize, except for the last
// block, which holds what is left of the shard.
func (s Shard) BlockLen(i int) int {
	return int(min(s.BlockSize, s.Size-int64(i)*s.BlockSize))
}

// CheckBlock checks data against block i of s in the manifest: i must be a
// block of s, data exactly BlockLen(i) bytes long and its SHA-256 the hash
// the manifest lists. The error names the shard and the block and wraps
// ErrBadBlock.
func (s Shard) CheckBlock(i int, data []byte) error {
	if i < 0 || i >= len(s.Blocks) {
		return fmt.Errorf("shard %s block %d of %d: %w", s.Hash.Short(), i, len(s.Blocks), ErrBadBlock)
	}
	if want := s.BlockLen(i); len(data) != want {
		return fmt.Errorf("shard %s block %d: %d bytes, want %d: %w", s.Hash.Short(), i, len(data), want, ErrBadBlock)
	}
	if Sum(data) != s.Blocks[i] {
		return fmt.Errorf("shard %s block %d: %w", s.Hash.Short(), i, ErrBadBlock)
	}
	return nil
}
