package rdrr

import (
	"crypto/sha256"
	"errors"
	"fmt"
)

// The Merkle tree over a shard's blocks follows RFC 6962 §2.1 in shape: for
// n > 1 leaves the root is H(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n])) with k the
// largest power of two below n, and the root of one leaf is the leaf. A leaf
// is the plain SHA-256 of its block, so a block hash can be checked on its
// own against the manifest's block list; the tree lets a peer prove one
// block against the root with log2(n) sibling hashes.

// ErrBadProof is returned when a Merkle proof does not lead to the root.
var ErrBadProof = errors.New("merkle proof does not match the root")

// MerkleRoot returns the root over the given leaf hashes. It panics on an
// empty list: every shard has at least one block.
func MerkleRoot(leaves []Hash) Hash {
	switch len(leaves) {
	case 0:
		panic("rdrr: MerkleRoot of no leaves")
	case 1:
		return leaves[0]
	}
	k := splitPoint(len(leaves))
	return node(MerkleRoot(leaves[:k]), MerkleRoot(leaves[k:]))
}

// MerkleProof returns the audit path for leaf i: the sibling hashes from the
// leaf up to the root.
func MerkleProof(leaves []Hash, i int) []Hash {
	if i < 0 || i >= len(leaves) {
		panic(fmt.Sprintf("rdrr: MerkleProof leaf %d of %d", i, len(leaves)))
	}
	if len(leaves) == 1 {
		return nil
	}
	k := splitPoint(len(leaves))
	if i < k {
		return append(MerkleProof(leaves[:k], i), MerkleRoot(leaves[k:]))
	}
	return append(MerkleProof(leaves[k:], i-k), MerkleRoot(leaves[:k]))
}

// VerifyProof checks that leaf is leaf i of n under root.
func VerifyProof(root, leaf Hash, i, n int, proof []Hash) error {
	got, rest, err := climb(leaf, i, n, proof)
	if err != nil {
		return err
	}
	if len(rest) != 0 || got != root {
		return ErrBadProof
	}
	return nil
}

// climb recomputes the root of a tree of n leaves from leaf i. Proof hashes
// are consumed bottom-up, so recursion goes top-down and uses them from the
// end.
func climb(leaf Hash, i, n int, proof []Hash) (Hash, []Hash, error) {
	if n == 1 {
		return leaf, proof, nil
	}
	if len(proof) == 0 {
		return Hash{}, nil, ErrBadProof
	}
	sib, rest := proof[len(proof)-1], proof[:len(proof)-1]
	k := splitPoint(n)
	if i < k {
		h, r, err := climb(leaf, i, k, rest)
		return node(h, sib), r, err
	}
	h, r, err := climb(leaf, i-k, n-k, rest)
	return node(sib, h), r, err
}

func node(l, r Hash) Hash {
	var b [1 + 2*len(Hash{})]byte
	b[0] = 0x01
	copy(b[1:], l[:])
	copy(b[1+len(l):], r[:])
	return sha256.Sum256(b[:])
}

// splitPoint is the largest power of two strictly below n (n ≥ 2).
func splitPoint(n int) int {
	k := 1
	for k*2 < n {
		k *= 2
	}
	return k
}
