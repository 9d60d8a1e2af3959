package shardproto

import (
	"reflect"
	"testing"

	"github.com/doppler-llm/doppler/rdrr"
)

func TestProverMatchesRDRR(t *testing.T) {
	for n := 1; n <= 40; n++ {
		leaves := make([]rdrr.Hash, n)
		for i := range leaves {
			leaves[i] = rdrr.Sum([]byte{byte(i), byte(n)})
		}
		p := newProver(leaves)
		for i := range n {
			got, want := p.proof(i), rdrr.MerkleProof(leaves, i)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("n=%d leaf %d: proof differs", n, i)
			}
			if err := rdrr.VerifyProof(rdrr.MerkleRoot(leaves), leaves[i], i, n, got); err != nil {
				t.Fatal(err)
			}
		}
	}
}
