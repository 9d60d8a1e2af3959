package swarm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/doppler-llm/doppler/rdrr"
)

// Export writes model id, which must be complete in the store, as an RDRR
// directory at dir: manifest.json, manifest.sig when signed, and one file
// per shard named by its hash. Every byte is read through the store's
// verified path and every shard file is hashed whole before it is kept.
// The directory appears atomically (built beside dir, then renamed); an
// existing dir must be empty.
func (s *Store) Export(ctx context.Context, id rdrr.ModelID, dir string) error {
	man, sig, ok := s.Manifest(id)
	if !ok {
		return fmt.Errorf("model %s: %w", id.Short(), ErrUnknownModel)
	}
	m, _ := s.manifest(id)
	unpin := s.pinModel(m)
	defer unpin()
	for _, sh := range m.Shards {
		if !s.Has(sh.Hash) {
			return fmt.Errorf("model %s: shard %s: %w", id.Short(), sh.Hash.Short(), ErrIncomplete)
		}
	}
	if ents, err := os.ReadDir(dir); err == nil {
		if len(ents) > 0 {
			return fmt.Errorf("%s exists and is not empty", dir)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := rdrr.WriteFileAtomic(filepath.Join(tmp, rdrr.ManifestFile), man); err != nil {
		return err
	}
	if sig != nil {
		if err := rdrr.WriteFileAtomic(filepath.Join(tmp, rdrr.SignatureFile), sig); err != nil {
			return err
		}
	}
	buf := make([]byte, 4<<20)
	for _, sh := range m.Shards {
		if err := s.exportShard(ctx, sh, filepath.Join(tmp, sh.Hash.String()), buf); err != nil {
			return err
		}
	}
	syncDir(tmp)
	os.Remove(dir) // an empty directory, if any
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	syncDir(parent)
	return nil
}

func (s *Store) exportShard(ctx context.Context, sh rdrr.Shard, path string, buf []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	whole := sha256.New()
	for off := int64(0); off < sh.Size; {
		n := min(int64(len(buf)), sh.Size-off)
		if err := s.ReadShardAt(ctx, sh.Hash, buf[:n], off); err != nil {
			return err
		}
		whole.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			return err
		}
		off += n
	}
	if got := sumOf(whole); got != sh.Hash {
		return fmt.Errorf("shard %s: exported bytes hash to %s: %w", sh.Hash.Short(), got.Short(), rdrr.ErrBadBlock)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}
