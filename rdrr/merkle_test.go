package rdrr

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

func leaves(n int) []Hash {
	out := make([]Hash, n)
	for i := range out {
		out[i] = sha256.Sum256([]byte(fmt.Sprint("block", i)))
	}
	return out
}

func TestMerkleRootKnown(t *testing.T) {
	l := leaves(3)
	// RFC 6962 shape for 3 leaves: H(1 ‖ H(1 ‖ l0 ‖ l1) ‖ l2).
	want := node(node(l[0], l[1]), l[2])
	if got := MerkleRoot(l); got != want {
		t.Fatalf("root of 3 = %s, want %s", got, want)
	}
	if got := MerkleRoot(l[:1]); got != l[0] {
		t.Fatalf("root of 1 leaf is not the leaf")
	}
}

func TestMerkleProofs(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 64, 100} {
		l := leaves(n)
		root := MerkleRoot(l)
		for i := range l {
			p := MerkleProof(l, i)
			if err := VerifyProof(root, l[i], i, n, p); err != nil {
				t.Fatalf("n=%d leaf %d: %v", n, i, err)
			}
			if err := VerifyProof(root, l[(i+1)%n], i, n, p); n > 1 && err == nil {
				t.Fatalf("n=%d leaf %d: wrong leaf accepted", n, i)
			}
			if len(p) > 0 {
				bad := append([]Hash(nil), p...)
				bad[0][0] ^= 1
				if VerifyProof(root, l[i], i, n, bad) == nil {
					t.Fatalf("n=%d leaf %d: tampered proof accepted", n, i)
				}
				if VerifyProof(root, l[i], i, n, p[:len(p)-1]) == nil {
					t.Fatalf("n=%d leaf %d: short proof accepted", n, i)
				}
			}
		}
	}
}
