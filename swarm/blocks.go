package swarm

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/doppler-llm/doppler/rdrr"
)

func (s *Store) lookup(h rdrr.Hash) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[h]
	if !ok {
		return nil, fmt.Errorf("shard %s: %w", h.Short(), ErrUnknownShard)
	}
	return e, nil
}

// WriteBlock stores block index of shard h in the shard's partial file. The
// data is hashed against the manifest first: a block that does not match
// is refused with an error wrapping rdrr.ErrBadBlock and nothing is
// written. Writing a block the store already has verified is a no-op.
// The first block of a shard reserves the shard's size under the quota,
// evicting least-recently-used shards when needed.
func (s *Store) WriteBlock(h rdrr.Hash, index int, data []byte) error {
	_, err := s.PutBlock(h, index, data)
	return err
}

// PutBlock is WriteBlock telling whether the block was new (BlockStore).
func (s *Store) PutBlock(h rdrr.Hash, index int, data []byte) (wrote bool, err error) {
	return s.put(h, index, data, nil)
}

// PutVerifiedBlock is PutBlock for a block its caller has hashed against
// sh.Blocks[index] already (VerifiedBlockStore): when the store's table
// names the same block hash and size, the block is not hashed again, so
// each received byte is hashed once on its way to disk. A table that
// differs (another manifest naming the same shard) gets the full check.
func (s *Store) PutVerifiedBlock(sh rdrr.Shard, index int, data []byte) (wrote bool, err error) {
	return s.put(sh.Hash, index, data, &sh)
}

// ReadsVerified marks the store as a shardproto.VerifiedProvider:
// ReadBlock returns only blocks hashed in this process (when stored, or
// on their first read after a restart), so a server sends them without
// hashing them again.
func (s *Store) ReadsVerified() {}

func (s *Store) put(h rdrr.Hash, index int, data []byte, verified *rdrr.Shard) (wrote bool, err error) {
	e, err := s.lookup(h)
	if err != nil {
		return false, err
	}
	if !sameBlock(e.sh, verified, index, len(data)) {
		if err := e.sh.CheckBlock(index, data); err != nil {
			return false, err
		}
	}
	s.mu.Lock()
	state := e.state
	s.mu.Unlock()
	if state == stateMissing {
		if err := s.makeRoom(e.sh.Size, e); err != nil {
			return false, fmt.Errorf("shard %s: %w", h.Short(), err)
		}
	}
	e.io.Lock()
	defer e.io.Unlock()
	s.mu.Lock()
	if e.state == stateComplete || (e.have[index] && e.checked[index]) {
		s.mu.Unlock()
		return false, nil
	}
	if e.state == stateMissing {
		if s.quota > 0 && s.used+e.sh.Size > s.quota {
			s.mu.Unlock()
			return false, fmt.Errorf("shard %s: %w", h.Short(), ErrQuota)
		}
		s.used += e.sh.Size
		e.state = statePartial
		s.mu.Unlock()
		if err := s.createPartial(h, e); err != nil {
			s.mu.Lock()
			s.dropFilesLocked(h, e)
			s.mu.Unlock()
			return false, err
		}
	} else {
		s.mu.Unlock()
	}
	if err := s.openPartial(h, e); err != nil {
		return false, err
	}
	if _, err := e.f.WriteAt(data, int64(index)*e.sh.BlockSize); err != nil {
		return false, fmt.Errorf("shard %s block %d: %w", h.Short(), index, err)
	}
	var rec [4]byte
	binary.LittleEndian.PutUint32(rec[:], uint32(index))
	if _, err := e.side.Write(rec[:]); err != nil {
		return false, fmt.Errorf("shard %s sidecar: %w", h.Short(), err)
	}
	s.mu.Lock()
	if !e.have[index] {
		e.have[index] = true
		e.nhave++
	}
	e.checked[index] = true
	e.lastUse = s.clock.Now()
	s.st.BytesWritten += int64(len(data))
	s.blockChangedLocked()
	s.mu.Unlock()
	return true, nil
}

// sameBlock reports whether block index of a caller's shard table, which
// the caller verified data against, is block index of the store's own
// table: same shard geometry, same leaf hash, the data of its length.
func sameBlock(own rdrr.Shard, theirs *rdrr.Shard, index, n int) bool {
	return theirs != nil && index >= 0 && index < len(own.Blocks) && index < len(theirs.Blocks) &&
		theirs.Size == own.Size && theirs.BlockSize == own.BlockSize &&
		theirs.Blocks[index] == own.Blocks[index] && n == own.BlockLen(index)
}

// createPartial creates the partial file at full size and an empty
// sidecar. The caller holds e.io exclusively.
func (s *Store) createPartial(h rdrr.Hash, e *entry) error {
	f, err := os.OpenFile(s.partialPath(h), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(e.sh.Size); err != nil {
		f.Close()
		return err
	}
	if err := rdrr.WriteFileAtomic(s.sidecarPath(h), []byte(sidecarMagic)); err != nil {
		f.Close()
		return err
	}
	e.f = f
	s.open.Add(1)
	s.trimFiles(e)
	return nil
}

// openPartial opens the partial file and sidecar when they are not open.
// The caller holds e.io exclusively.
func (s *Store) openPartial(h rdrr.Hash, e *entry) error {
	if e.f != nil && e.side != nil {
		return nil // every block written comes here: nothing to open or trim
	}
	defer s.trimFiles(e)
	if e.f == nil {
		f, err := os.OpenFile(s.partialPath(h), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		e.f = f
		s.open.Add(1)
	}
	if e.side == nil {
		side, err := os.OpenFile(s.sidecarPath(h), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		if st, err := side.Stat(); err == nil && st.Size() < int64(len(sidecarMagic)) {
			side.Truncate(0)
			side.Write([]byte(sidecarMagic))
		}
		e.side = side
		s.open.Add(1)
	}
	return nil
}

// Complete moves a shard whose every block is in the partial file into
// shards/: it syncs the file, checks every block not yet hashed in this
// process, and renames. A crash at any point leaves either the partial or
// the complete shard, never a complete shard with a bad byte. Blocks found
// bad are dropped and the error wraps rdrr.ErrBadBlock and ErrIncomplete;
// fetch them again.
//
// Each byte is hashed once, against its block's leaf: a shard whose every
// block matches the store's table is the shard that table describes, and
// every model naming the shard with that table (its ID commits to it)
// gets exactly those bytes. The whole-file hash, the shard's name, is
// checked as well only when another model names the shard with another
// table (entry.conflict): then one of the two manifests lies, and the
// file decides; a shard whose bytes do not hash to its name is not kept
// (the error wraps rdrr.ErrManifest). AddModel settles a conflict with a
// shard already complete.
func (s *Store) Complete(h rdrr.Hash) error {
	e, err := s.lookup(h)
	if err != nil {
		return err
	}
	e.io.Lock()
	defer e.io.Unlock()
	s.mu.Lock()
	state, nhave, n, conflict := e.state, e.nhave, len(e.have), e.conflict
	checked := append([]bool(nil), e.checked...)
	s.mu.Unlock()
	if state == stateComplete {
		return nil
	}
	if state == stateMissing || nhave < n {
		return fmt.Errorf("shard %s: %d of %d blocks: %w", h.Short(), nhave, n, ErrIncomplete)
	}
	if err := s.openPartial(h, e); err != nil {
		return err
	}
	if err := e.f.Sync(); err != nil {
		return err
	}
	var whole hash.Hash
	if conflict {
		whole = sha256.New()
	}
	var bad []int
	if whole != nil || slices.Contains(checked, false) {
		// Blocks from an earlier run, or the name to prove: read the
		// shard back.
		buf := make([]byte, e.sh.BlockSize)
		for i := range n {
			if checked[i] && whole == nil {
				continue
			}
			blk := buf[:e.sh.BlockLen(i)]
			if _, err := e.f.ReadAt(blk, int64(i)*e.sh.BlockSize); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("shard %s block %d: %w", h.Short(), i, err)
			}
			if whole != nil {
				whole.Write(blk)
			}
			if !checked[i] && e.sh.CheckBlock(i, blk) != nil {
				bad = append(bad, i)
			}
		}
	}
	if len(bad) > 0 {
		s.dropBlocks(h, e, bad)
		return fmt.Errorf("shard %s: %d blocks bad on disk (%w): %w", h.Short(), len(bad), rdrr.ErrBadBlock, ErrIncomplete)
	}
	if whole != nil {
		if got := sumOf(whole); got != h {
			// Every block matches the table, but the blocks are not the
			// shard the name says: this table's manifest lies. Keep nothing.
			s.mu.Lock()
			s.dropFilesLocked(h, e)
			s.mu.Unlock()
			return fmt.Errorf("shard %s: blocks match the manifest but the content hashes to %s: %w", h.Short(), got.Short(), rdrr.ErrManifest)
		}
	}
	s.closeSide(e)
	if err := os.Rename(s.partialPath(h), s.shardPath(h)); err != nil {
		return err
	}
	syncDir(filepath.Dir(s.shardPath(h)))
	os.Remove(s.sidecarPath(h))
	s.mu.Lock()
	e.state = stateComplete
	for i := range e.checked {
		e.checked[i] = true
	}
	e.lastUse = s.clock.Now()
	s.st.ShardsStored++
	s.changedLocked()
	s.mu.Unlock()
	s.log.Debug("store: shard complete", "shard", h.Short(), "bytes", e.sh.Size)
	return nil
}

func sumOf(h hash.Hash) rdrr.Hash {
	var out rdrr.Hash
	h.Sum(out[:0])
	return out
}

// dropBlocks forgets blocks found bad on disk. A complete shard goes back
// to partial (its other blocks are kept, to be re-verified), so a fetch
// re-fetches only what was lost. The caller holds e.io exclusively.
func (s *Store) dropBlocks(h rdrr.Hash, e *entry, bad []int) {
	s.mu.Lock()
	for _, b := range bad {
		if e.have[b] {
			e.have[b] = false
			e.nhave--
		}
		e.checked[b] = false
		s.st.BadOnDisk++
	}
	wasComplete := e.state == stateComplete
	side := []byte(sidecarMagic)
	for i, ok := range e.have {
		if ok {
			side = binary.LittleEndian.AppendUint32(side, uint32(i))
		}
	}
	s.mu.Unlock()
	s.log.Warn("store: blocks bad on disk dropped", "shard", h.Short(), "blocks", bad)
	s.closeSide(e)
	if err := rdrr.WriteFileAtomic(s.sidecarPath(h), side); err != nil {
		s.log.Error("store: rewriting sidecar failed; dropping the shard", "shard", h.Short(), "err", err)
		s.mu.Lock()
		s.dropFilesLocked(h, e)
		s.mu.Unlock()
		return
	}
	if wasComplete {
		if err := os.Rename(s.shardPath(h), s.partialPath(h)); err != nil {
			s.mu.Lock()
			s.dropFilesLocked(h, e)
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		e.state = statePartial
		s.changedLocked()
		s.mu.Unlock()
	}
}

// ReadBlock copies verified block index of shard h into p (which must hold
// a whole block) and returns its length. It serves blocks of complete and
// partial shards. A block stored by an earlier run is hashed again the
// first time it is read; a bad one is dropped, logged and reported as an
// error wrapping rdrr.ErrBadBlock. Bytes served count as uploads.
func (s *Store) ReadBlock(h rdrr.Hash, index int, p []byte) (int, error) {
	e, err := s.lookup(h)
	if err != nil {
		return 0, err
	}
	if index < 0 || index >= len(e.sh.Blocks) {
		return 0, fmt.Errorf("shard %s: block %d of %d: %w", h.Short(), index, len(e.sh.Blocks), ErrMissingBlock)
	}
	n := e.sh.BlockLen(index)
	if len(p) < n {
		return 0, io.ErrShortBuffer
	}
	if err := s.readRange(h, e, p[:n], int64(index)*e.sh.BlockSize); err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.st.BytesServed += int64(n)
	s.mu.Unlock()
	return n, nil
}

// ReadShardAt implements rdrr.ShardSource: it reads verified bytes of a
// stored shard (complete, or partial when every block touched is held).
func (s *Store) ReadShardAt(ctx context.Context, h rdrr.Hash, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e, err := s.lookup(h)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(p)) > e.sh.Size {
		return fmt.Errorf("shard %s: read [%d, %d) outside %d bytes: %w", h.Short(), off, off+int64(len(p)), e.sh.Size, io.ErrUnexpectedEOF)
	}
	return s.readRange(h, e, p, off)
}

// readRange reads p at off after making sure every block it touches is
// held and verified in this process.
func (s *Store) readRange(h rdrr.Hash, e *entry, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	bs := e.sh.BlockSize
	first, last := int(off/bs), int((off+int64(len(p))-1)/bs)
	e.io.RLock()
	s.mu.Lock()
	if e.state == stateMissing {
		s.mu.Unlock()
		e.io.RUnlock()
		return fmt.Errorf("shard %s: %w", h.Short(), ErrMissingBlock)
	}
	var unchecked []int
	for b := first; b <= last; b++ {
		if !e.have[b] {
			s.mu.Unlock()
			e.io.RUnlock()
			return fmt.Errorf("shard %s block %d: %w", h.Short(), b, ErrMissingBlock)
		}
		if !e.checked[b] {
			unchecked = append(unchecked, b)
		}
	}
	opened := false
	if e.f == nil {
		path := s.shardPath(h)
		if e.state == statePartial {
			path = s.partialPath(h)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			s.mu.Unlock()
			e.io.RUnlock()
			return err
		}
		e.f = f
		s.open.Add(1)
		opened = true
	}
	f := e.f
	e.lastUse = s.clock.Now()
	s.mu.Unlock()
	if opened {
		s.trimFiles(e)
	}
	var bad []int
	if len(unchecked) > 0 {
		buf := make([]byte, bs)
		for _, b := range unchecked {
			blk := buf[:e.sh.BlockLen(b)]
			if _, err := f.ReadAt(blk, int64(b)*bs); err != nil && !errors.Is(err, io.EOF) {
				e.io.RUnlock()
				return err
			}
			if e.sh.CheckBlock(b, blk) != nil {
				bad = append(bad, b)
				continue
			}
			s.mu.Lock()
			e.checked[b] = true
			s.st.Reverified++
			s.mu.Unlock()
		}
	}
	if len(bad) > 0 {
		e.io.RUnlock()
		e.io.Lock()
		s.dropBlocks(h, e, bad)
		e.io.Unlock()
		return fmt.Errorf("shard %s block %d: stored copy is corrupt, dropped: %w", h.Short(), bad[0], rdrr.ErrBadBlock)
	}
	_, err := f.ReadAt(p, off)
	e.io.RUnlock()
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
