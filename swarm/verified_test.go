package swarm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/doppler-llm/doppler/rdrr"
)

// TestStorePutVerified: blocks a caller verified are stored without a
// second hash when the caller's table matches the store's, in any order,
// and Complete still proves the shard's whole hash (streamed as blocks
// arrive in order, read back otherwise). A table that differs gets the
// full check, so a block verified against another manifest cannot land
// in this shard.
func TestStorePutVerified(t *testing.T) {
	src, id := synthModel(t, 2<<20, 1<<20, 64<<10, 31)
	raw, err := os.ReadFile(filepath.Join(src, rdrr.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := rdrr.ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	sh := m.Shards[0]
	data, err := os.ReadFile(filepath.Join(src, sh.Hash.String()))
	if err != nil {
		t.Fatal(err)
	}
	block := func(i int) []byte {
		return data[int64(i)*sh.BlockSize : int64(i)*sh.BlockSize+int64(sh.BlockLen(i))]
	}
	n := len(sh.Blocks)
	inOrder := make([]int, n)
	for i := range inOrder {
		inOrder[i] = i
	}
	shuffled := append([]int{n - 1, 2, 0, 1}, inOrder[3:n-1]...)
	cases := []struct {
		name  string
		order []int
	}{
		{"in order: the whole hash is streamed", inOrder},
		{"out of order: the tail is read back", shuffled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := emptyStore(t, src)
			for _, i := range c.order {
				wrote, err := s.PutVerifiedBlock(sh, i, block(i))
				if err != nil || !wrote {
					t.Fatalf("block %d: wrote %v, %v", i, wrote, err)
				}
			}
			e, _ := s.lookup(sh.Hash)
			if e.whole == nil || e.wholeNext != n {
				t.Fatalf("whole hash streamed over %d of %d blocks", e.wholeNext, n)
			}
			if err := s.Complete(sh.Hash); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(s.shardPath(sh.Hash))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(data) {
				t.Fatal("stored shard differs from the source")
			}
			if st, _ := s.Status(id); st.CompleteShards != 1 {
				t.Fatalf("%d complete shards, want 1", st.CompleteShards)
			}
		})
	}

	t.Run("another table is checked in full", func(t *testing.T) {
		s := emptyStore(t, src)
		other := sh
		other.Blocks = append([]rdrr.Hash(nil), sh.Blocks...)
		bad := append([]byte(nil), block(1)...)
		bad[3] ^= 1
		other.Blocks[1] = rdrr.Sum(bad) // "verified" against a lying table
		if _, err := s.PutVerifiedBlock(other, 1, bad); !errors.Is(err, rdrr.ErrBadBlock) {
			t.Fatalf("block verified against another table: %v, want ErrBadBlock", err)
		}
	})

	t.Run("an inconsistent manifest fails Complete", func(t *testing.T) {
		// Every block matches its leaf, but the shard's name is not the
		// hash of its bytes: the streamed whole hash must catch it.
		lie := *m
		lie.Shards = append([]rdrr.Shard(nil), m.Shards...)
		lie.Shards[0].Hash = rdrr.Sum([]byte("not this shard"))
		b, err := lie.Encode()
		if err != nil {
			t.Fatal(err)
		}
		s := openStore(t, t.TempDir(), 0)
		if _, err := s.AddModel(b, nil); err != nil {
			t.Fatal(err)
		}
		lsh := lie.Shards[0]
		for i := range n {
			if _, err := s.PutVerifiedBlock(lsh, i, block(i)); err != nil {
				t.Fatalf("block %d: %v", i, err)
			}
		}
		if err := s.Complete(lsh.Hash); !errors.Is(err, rdrr.ErrManifest) {
			t.Fatalf("Complete: %v, want ErrManifest", err)
		}
		if s.Has(lsh.Hash) {
			t.Fatal("a shard whose bytes do not hash to its name was kept")
		}
	})
}
