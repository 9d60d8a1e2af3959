package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/rdrr"
)

// TestStorePutVerified: blocks a caller verified are stored without a
// second hash when the caller's table matches the store's, in any order,
// and Complete keeps the shard they make without hashing it whole. A
// table that differs gets the full check, so a block verified against
// another manifest cannot land in this shard.
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
		{"in order", inOrder},
		{"out of order", shuffled},
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

}

// TestStoreLyingTable: Complete hashes each byte once, so a manifest that
// names a shard by a hash its block table does not describe can have its
// blocks stored under that name. The store must not let such a file stand
// for the real shard: when a second table names the same hash, the file's
// own hash decides which manifest lies.
func TestStoreLyingTable(t *testing.T) {
	src, _ := synthModel(t, 2<<20, 1<<20, 64<<10, 41)
	other, _ := synthModel(t, 2<<20, 1<<20, 64<<10, 42)
	honest := parseManifest(t, src)
	sh := honest.Shards[0]
	shardData := func(dir string, sh rdrr.Shard) []byte {
		b, err := os.ReadFile(filepath.Join(dir, sh.Hash.String()))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	real := shardData(src, sh)
	// The lie: honest's manifest, but its first shard described by other's
	// first shard's table (same geometry, other bytes) under honest's hash.
	osh := parseManifest(t, other).Shards[0]
	fake := shardData(other, osh)
	lie := *honest
	lie.Shards = slices.Clone(honest.Shards)
	lsh := osh
	lsh.Hash = sh.Hash
	lie.Shards[0] = lsh
	lieRaw, err := lie.Encode()
	if err != nil {
		t.Fatal(err)
	}
	honestRaw := readManifest(t, src)
	put := func(s *Store, sh rdrr.Shard, data []byte) error {
		for i := range sh.Blocks {
			blk := data[int64(i)*sh.BlockSize : int64(i)*sh.BlockSize+int64(sh.BlockLen(i))]
			if _, err := s.PutVerifiedBlock(sh, i, blk); err != nil {
				return fmt.Errorf("block %d: %w", i, err)
			}
		}
		return s.Complete(sh.Hash)
	}
	stored := func(s *Store) []byte {
		b, err := os.ReadFile(s.shardPath(sh.Hash))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("a lie's shard goes when the true table comes", func(t *testing.T) {
		s := openStore(t, t.TempDir(), 0)
		if _, err := s.AddModel(lieRaw, nil); err != nil {
			t.Fatal(err)
		}
		if err := put(s, lsh, fake); err != nil {
			t.Fatalf("the lie's blocks match its table: %v", err)
		}
		if !s.Has(sh.Hash) {
			t.Fatal("the lie's shard is not complete")
		}
		if _, err := s.AddModel(honestRaw, nil); err != nil {
			t.Fatalf("the true table refused: %v", err)
		}
		if s.Has(sh.Hash) || s.Stats().ShardsStored != 1 {
			t.Fatal("a file whose bytes are not its name still stands for the shard")
		}
		if _, err := os.Stat(s.shardPath(sh.Hash)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the lie's file is still on disk: %v", err)
		}
		if err := put(s, sh, real); err != nil {
			t.Fatalf("the true shard, fetched again: %v", err)
		}
		if !bytes.Equal(stored(s), real) {
			t.Fatal("stored shard is not the true one")
		}
	})

	t.Run("a lie about a held shard is refused", func(t *testing.T) {
		s := emptyStore(t, src)
		if err := put(s, sh, real); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddModel(lieRaw, nil); !errors.Is(err, rdrr.ErrManifest) {
			t.Fatalf("AddModel of the lie: %v, want ErrManifest", err)
		}
		if len(s.Models()) != 1 || !s.Has(sh.Hash) || !bytes.Equal(stored(s), real) {
			t.Fatal("refusing the lie changed the store")
		}
	})

	t.Run("a true table in other blocks is added", func(t *testing.T) {
		// The same bytes cut into blocks of half the size: another table,
		// as true as the first (doppler convert --block-size).
		alt := *honest
		alt.Shards = slices.Clone(honest.Shards)
		ash := sh
		ash.BlockSize = sh.BlockSize / 2
		ash.Blocks = nil
		for off := int64(0); off < ash.Size; off += ash.BlockSize {
			ash.Blocks = append(ash.Blocks, rdrr.Sum(real[off:min(off+ash.BlockSize, ash.Size)]))
		}
		ash.Root = rdrr.MerkleRoot(ash.Blocks)
		alt.Shards[0] = ash
		altRaw, err := alt.Encode()
		if err != nil {
			t.Fatal(err)
		}
		s := emptyStore(t, src)
		if err := put(s, sh, real); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddModel(altRaw, nil); err != nil {
			t.Fatalf("AddModel of a true table in other blocks: %v", err)
		}
		if len(s.Models()) != 2 || !s.Has(sh.Hash) || !bytes.Equal(stored(s), real) {
			t.Fatal("adding the second table changed the held shard")
		}
	})

	t.Run("with two tables Complete checks the name", func(t *testing.T) {
		s := openStore(t, t.TempDir(), 0)
		for _, m := range [][]byte{lieRaw, honestRaw} {
			if _, err := s.AddModel(m, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := put(s, lsh, fake); !errors.Is(err, rdrr.ErrManifest) {
			t.Fatalf("Complete: %v, want ErrManifest", err)
		}
		if s.Has(sh.Hash) {
			t.Fatal("a shard whose bytes do not hash to its name was kept")
		}
	})

	t.Run("an import checks the name", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, rdrr.ManifestFile), lieRaw, 0o644); err != nil {
			t.Fatal(err)
		}
		for i, x := range lie.Shards {
			data := shardData(src, honest.Shards[i])
			if i == 0 {
				data = fake
			}
			if err := os.WriteFile(filepath.Join(dir, x.Hash.String()), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		s := openStore(t, t.TempDir(), 0)
		_, err := s.ImportDir(context.Background(), dir)
		if !errors.Is(err, rdrr.ErrManifest) || !strings.Contains(err.Error(), sh.Hash.Short()) {
			t.Fatalf("import of a directory whose shard is not its name: %v, want ErrManifest naming %s", err, sh.Hash.Short())
		}
		if s.Has(sh.Hash) {
			t.Fatal("the import stored the shard")
		}
	})
}

func parseManifest(t *testing.T, dir string) *rdrr.Manifest {
	t.Helper()
	m, err := rdrr.ParseManifest(readManifest(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
