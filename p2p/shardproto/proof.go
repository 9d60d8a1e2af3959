package shardproto

import (
	"crypto/sha256"

	"github.com/doppler-llm/doppler/rdrr"
)

// prover builds rdrr.MerkleProof's audit paths with subtree roots memoised,
// so serving all n blocks of a shard costs O(n) hashes, not O(n²).
type prover struct {
	leaves []rdrr.Hash
	memo   map[[2]int]rdrr.Hash
}

func newProver(leaves []rdrr.Hash) *prover {
	return &prover{leaves: leaves, memo: map[[2]int]rdrr.Hash{}}
}

func (p *prover) root(lo, hi int) rdrr.Hash {
	if hi-lo == 1 {
		return p.leaves[lo]
	}
	if h, ok := p.memo[[2]int{lo, hi}]; ok {
		return h
	}
	k := split(hi - lo)
	l, r := p.root(lo, lo+k), p.root(lo+k, hi)
	var b [65]byte
	b[0] = 0x01
	copy(b[1:], l[:])
	copy(b[33:], r[:])
	h := rdrr.Hash(sha256.Sum256(b[:]))
	p.memo[[2]int{lo, hi}] = h
	return h
}

// proof is the audit path of leaf i, bottom-up.
func (p *prover) proof(i int) []rdrr.Hash { return p.path(0, len(p.leaves), i) }

func (p *prover) path(lo, hi, i int) []rdrr.Hash {
	if hi-lo <= 1 {
		return nil
	}
	k := split(hi - lo)
	if i < lo+k {
		return append(p.path(lo, lo+k, i), p.root(lo+k, hi))
	}
	return append(p.path(lo+k, hi, i), p.root(lo, lo+k))
}

func split(n int) int {
	k := 1
	for k*2 < n {
		k *= 2
	}
	return k
}
