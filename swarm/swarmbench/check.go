package swarmbench

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// StoreCheck is what CheckStore found in one store.
type StoreCheck struct {
	// Complete: the store lists every shard of the model complete.
	Complete bool
	// BadBytes: bytes of blocks the store holds as verified (complete
	// shards, and the blocks of partial shards it reports held) that fail
	// their hashes.
	BadBytes int64
	// BadShards names the complete shards that fail verification.
	BadShards []rdrr.Hash
}

// CheckStore opens the swarm store in dir (no other process may have it
// open) and checks every byte it claims to hold of model id against the
// manifest: each complete shard file block by block and whole, and each
// held block of each partial shard. It reads the files directly, not
// through the store's read path (which would drop a bad block quietly).
func CheckStore(dir string, id rdrr.ModelID, man *rdrr.Manifest) (StoreCheck, error) {
	var c StoreCheck
	s, err := swarm.Open(dir, swarm.StoreOptions{})
	if err != nil {
		return c, err
	}
	defer s.Close()
	st, ok := s.Status(id)
	c.Complete = ok && st.Shards > 0 && st.CompleteShards == st.Shards
	buf := make([]byte, 0, 1<<20)
	for _, sh := range man.Shards {
		full := filepath.Join(dir, "shards", sh.Hash.String())
		f, err := os.Open(full)
		switch {
		case err == nil:
			bad, whole, err := checkFile(f, sh, nil, &buf)
			f.Close()
			if err != nil {
				return c, fmt.Errorf("shard %s: %w", sh.Hash.Short(), err)
			}
			if bad > 0 || !whole {
				c.BadBytes += max(bad, 1)
				c.BadShards = append(c.BadShards, sh.Hash)
			}
			continue
		case !errors.Is(err, fs.ErrNotExist):
			return c, err
		}
		held := s.HaveBlocks(sh.Hash)
		if held == nil {
			continue
		}
		f, err = os.Open(filepath.Join(dir, "partial", sh.Hash.String()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return c, err
		}
		bad, _, err := checkFile(f, sh, held, &buf)
		f.Close()
		if err != nil {
			return c, fmt.Errorf("partial %s: %w", sh.Hash.Short(), err)
		}
		c.BadBytes += bad
	}
	return c, nil
}

// checkFile hashes the blocks of f (all, or those held says) against sh;
// it returns the bytes of bad blocks and, when every block was read,
// whether the whole file hashes to sh.Hash.
func checkFile(f *os.File, sh rdrr.Shard, held []bool, buf *[]byte) (bad int64, whole bool, err error) {
	if int64(cap(*buf)) < sh.BlockSize {
		*buf = make([]byte, 0, sh.BlockSize)
	}
	h := sha256.New()
	for i := range sh.Blocks {
		if held != nil && (i >= len(held) || !held[i]) {
			continue
		}
		n := sh.BlockLen(i)
		b := (*buf)[:n]
		k, err := f.ReadAt(b, int64(i)*sh.BlockSize)
		if err != nil && !(errors.Is(err, io.EOF) && k == n) {
			if errors.Is(err, io.EOF) { // a short file: the missing bytes are bad
				bad += int64(n)
				continue
			}
			return bad, false, err
		}
		if sh.CheckBlock(i, b) != nil {
			bad += int64(n)
		}
		if held == nil {
			h.Write(b)
		}
	}
	if held != nil {
		return bad, false, nil
	}
	return bad, rdrr.Hash(h.Sum(nil)) == sh.Hash, nil
}
