package rdrr

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Problem is one defect found by VerifyDir.
type Problem struct {
	Shard int  // index in the shard table, -1 for the manifest
	Hash  Hash // the shard's expected hash
	Block int  // -1 when the whole shard is concerned
	Err   error
}

func (p Problem) String() string {
	switch {
	case p.Shard < 0:
		return p.Err.Error()
	case p.Block < 0:
		return fmt.Sprintf("shard %d %s: %v", p.Shard, p.Hash, p.Err)
	}
	return fmt.Sprintf("shard %d %s block %d: %v", p.Shard, p.Hash, p.Block, p.Err)
}

// VerifyReport is what VerifyDir found.
type VerifyReport struct {
	ID       ModelID
	Signed   bool
	Shards   int
	Bytes    int64
	Problems []Problem
}

// VerifyDir rehashes every shard of the RDRR directory dir, block by block,
// and reports every missing, truncated or modified shard and bad block. It
// returns an error only when the manifest itself cannot be trusted.
// progress, if not nil, is called with the bytes hashed so far.
func VerifyDir(dir string, progress func(done int64)) (*VerifyReport, error) {
	m, err := OpenDir(dir)
	if err != nil {
		return nil, err
	}
	r := &VerifyReport{ID: m.ID, Signed: m.Signer != nil, Shards: len(m.Manifest.Shards)}
	buf := make([]byte, MaxBlockSize)
	for i, sh := range m.Manifest.Shards {
		bad := func(block int, err error) {
			r.Problems = append(r.Problems, Problem{Shard: i, Hash: sh.Hash, Block: block, Err: err})
		}
		path := filepath.Join(dir, sh.Hash.String())
		f, err := os.Open(path)
		if err != nil {
			bad(-1, fmt.Errorf("missing: %w", err))
			continue
		}
		st, err := f.Stat()
		if err == nil && st.Size() != sh.Size {
			bad(-1, fmt.Errorf("size %d, want %d", st.Size(), sh.Size))
		}
		whole := sha256.New()
		for b := range sh.Blocks {
			blk := buf[:sh.BlockLen(b)]
			if _, err := io.ReadFull(f, blk); err != nil {
				bad(b, fmt.Errorf("unreadable: %w", err))
				break
			}
			whole.Write(blk)
			r.Bytes += int64(len(blk))
			if progress != nil {
				progress(r.Bytes)
			}
			if sh.CheckBlock(b, blk) != nil {
				bad(b, ErrBadBlock)
			}
		}
		f.Close()
		var h Hash
		whole.Sum(h[:0])
		if h != sh.Hash && !hasShardProblem(r.Problems, i) {
			bad(-1, errors.New("content hash mismatch"))
		}
	}
	return r, nil
}

func hasShardProblem(ps []Problem, shard int) bool {
	for _, p := range ps {
		if p.Shard == shard {
			return true
		}
	}
	return false
}
