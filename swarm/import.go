package swarm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/doppler-llm/doppler/rdrr"
)

// Importing a model directory. ImportDir copies a directory the store does
// not own (the user's RDRR directory): every block is verified on its way
// into a partial, and the partial renamed into shards/ (blocks.go). A
// model converted for the store (a GGUF or HF directory served or seeded)
// need not exist twice: it is converted into a directory TempDir makes,
// on the store's file system, and ImportTemp moves its shard files into
// shards/ once each is verified, so the store holds the only copy.

// tempPrefix names the store's temporary directories; Open removes those
// an earlier run left (a conversion killed half-way).
const tempPrefix = ".import-"

// TempDir creates a directory on the store's file system for ImportTemp
// (a conversion's output). The caller removes it when done; Open removes
// any left behind.
func (s *Store) TempDir() (string, error) {
	return os.MkdirTemp(s.dir, tempPrefix)
}

// removeTemps removes the temporary directories of an earlier run.
func (s *Store) removeTemps() {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, de := range des {
		if de.IsDir() && strings.HasPrefix(de.Name(), tempPrefix) {
			s.log.Info("store: removing an unfinished import", "path", filepath.Join(s.dir, de.Name()))
			os.RemoveAll(filepath.Join(s.dir, de.Name()))
		}
	}
}

// ImportDir copies the RDRR directory dir into the store, verifying every
// block on the way, and returns the model ID. Shards already complete in
// the store are not copied again. A failure part way leaves the model in
// the store with the shards imported so far (a pull can finish it), and
// every other model as it was.
func (s *Store) ImportDir(ctx context.Context, dir string) (rdrr.ModelID, error) {
	return s.importDir(ctx, dir, false)
}

// ImportTemp imports the RDRR directory dir, which TempDir made, moving
// its shard files into the store rather than copying them: each is hashed
// block by block and whole, synced, and renamed into shards/, so the
// store never holds a shard that does not verify and the bytes exist once
// on disk. A shard the store holds already, or holds part of, is not
// moved (its file stays in dir). The caller removes dir afterwards. A
// failure part way leaves the store as ImportDir's does.
func (s *Store) ImportTemp(ctx context.Context, dir string) (rdrr.ModelID, error) {
	if rel, err := filepath.Rel(s.dir, dir); err != nil || !strings.HasPrefix(rel, tempPrefix) {
		return rdrr.ModelID{}, fmt.Errorf("%s: not in one of the store's TempDirs", dir)
	}
	return s.importDir(ctx, dir, true)
}

func (s *Store) importDir(ctx context.Context, dir string, move bool) (rdrr.ModelID, error) {
	b, err := os.ReadFile(filepath.Join(dir, rdrr.ManifestFile))
	if err != nil {
		return rdrr.ModelID{}, fmt.Errorf("%s: not an RDRR directory: %w", dir, err)
	}
	sig, err := os.ReadFile(filepath.Join(dir, rdrr.SignatureFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return rdrr.ModelID{}, err
	}
	id, err := s.AddModel(b, sig)
	if err != nil {
		return id, fmt.Errorf("%s: %w", dir, err)
	}
	m, _ := s.manifest(id)
	in, err := rdrr.ReadInfo(dir, m)
	if err != nil {
		return id, err
	}
	if err := s.SetInfo(id, in); err != nil {
		return id, err
	}
	unpin := s.pinModel(m)
	defer unpin()
	buf := make([]byte, rdrr.MaxBlockSize)
	for _, sh := range m.Shards {
		if err := ctx.Err(); err != nil {
			return id, err
		}
		if s.Has(sh.Hash) {
			continue
		}
		path := filepath.Join(dir, sh.Hash.String())
		if move {
			moved, err := s.adoptShard(path, sh, buf)
			if err != nil {
				return id, fmt.Errorf("%s: shard %s: %w", dir, sh.Hash.Short(), err)
			}
			if moved {
				continue
			}
		}
		if err := s.importShard(ctx, path, sh, buf); err != nil {
			return id, fmt.Errorf("%s: shard %s: %w", dir, sh.Hash.Short(), err)
		}
	}
	return id, nil
}

func (s *Store) importShard(ctx context.Context, path string, sh rdrr.Shard, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	// The store hashes fetched shards once, block by block (Complete); an
	// import checks the file's name too, so that a directory whose
	// manifest names a shard by a hash its bytes do not have is refused
	// here, naming the shard, rather than stored.
	if fi, err := f.Stat(); err != nil {
		return err
	} else if fi.Size() != sh.Size {
		return fmt.Errorf("%s: %d bytes, want %d: %w", path, fi.Size(), sh.Size, rdrr.ErrBadBlock)
	}
	whole := sha256.New()
	if _, err := io.CopyBuffer(whole, io.NewSectionReader(f, 0, sh.Size), buf); err != nil {
		return err
	}
	if got := sumOf(whole); got != sh.Hash {
		return fmt.Errorf("the file hashes to %s: %w", got.Short(), rdrr.ErrManifest)
	}
	have := s.HaveBlocks(sh.Hash)
	for i := range sh.Blocks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if have != nil && have[i] {
			continue
		}
		n := sh.BlockLen(i)
		if _, err := f.ReadAt(buf[:n], int64(i)*sh.BlockSize); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("block %d: %w", i, err)
		}
		if err := s.WriteBlock(sh.Hash, i, buf[:n]); err != nil {
			return err
		}
	}
	return s.Complete(sh.Hash)
}

// adoptShard makes the file at path shard sh of the store by renaming it
// into shards/, once every block and the whole file hash as sh says and
// the file is synced. It returns false, touching nothing, when the store
// has blocks of the shard already (the caller copies the rest). A file
// that does not verify is an error wrapping rdrr.ErrBadBlock (or
// rdrr.ErrManifest), and the store is unchanged.
func (s *Store) adoptShard(path string, sh rdrr.Shard, buf []byte) (bool, error) {
	e, err := s.lookup(sh.Hash)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	state := e.state
	s.mu.Unlock()
	if state != stateMissing {
		return false, nil
	}
	if err := verifyFile(path, e.sh, buf); err != nil {
		return false, err
	}
	if err := s.makeRoom(e.sh.Size, e); err != nil {
		return false, err
	}
	e.io.Lock()
	defer e.io.Unlock()
	s.mu.Lock()
	if e.state != stateMissing {
		s.mu.Unlock()
		return false, nil
	}
	if s.quota > 0 && s.used+e.sh.Size > s.quota {
		s.mu.Unlock()
		return false, ErrQuota
	}
	s.used += e.sh.Size
	e.state = statePartial // reserved: no writer creates a partial meanwhile
	s.mu.Unlock()
	if err := os.Rename(path, s.shardPath(sh.Hash)); err != nil {
		s.mu.Lock()
		s.used -= e.sh.Size
		e.state = stateMissing
		s.mu.Unlock()
		return false, err
	}
	syncDir(filepath.Dir(s.shardPath(sh.Hash)))
	s.mu.Lock()
	e.state = stateComplete
	for i := range e.have {
		e.have[i], e.checked[i] = true, true
	}
	e.nhave = len(e.have)
	e.lastUse = s.clock.Now()
	s.st.ShardsStored++
	s.changedLocked()
	s.mu.Unlock()
	s.log.Debug("store: shard moved in", "shard", sh.Hash.Short(), "bytes", e.sh.Size)
	return true, nil
}

// verifyFile hashes the file at path against sh, block by block and
// whole, and syncs it to disk.
func verifyFile(path string, sh rdrr.Shard, buf []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != sh.Size {
		return fmt.Errorf("%s: %d bytes, want %d: %w", path, fi.Size(), sh.Size, rdrr.ErrBadBlock)
	}
	whole := sha256.New()
	for i := range sh.Blocks {
		blk := buf[:sh.BlockLen(i)]
		if _, err := f.ReadAt(blk, int64(i)*sh.BlockSize); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("block %d: %w", i, err)
		}
		if err := sh.CheckBlock(i, blk); err != nil {
			return err
		}
		whole.Write(blk)
	}
	if got := sumOf(whole); got != sh.Hash {
		return fmt.Errorf("blocks match the manifest but the content hashes to %s: %w", got.Short(), rdrr.ErrManifest)
	}
	return f.Sync()
}
