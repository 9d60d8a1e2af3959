package rdrr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ErrBadBlock is returned when a block's bytes do not match its hash.
var ErrBadBlock = errors.New("block hash mismatch")

// ShardSource supplies shard bytes by shard hash. Sources need not be
// trusted: the Reader verifies every block it gets against the manifest.
type ShardSource interface {
	// ReadShardAt reads len(p) bytes of the shard named h, starting at off.
	ReadShardAt(ctx context.Context, h Hash, p []byte, off int64) error
}

// DirSource reads shards from files named by their hash in a directory.
type DirSource struct{ Dir string }

// ReadShardAt implements ShardSource.
func (d DirSource) ReadShardAt(ctx context.Context, h Hash, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(d.Dir, h.String()))
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.ReadAt(p, off); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("shard %s: %w (truncated?)", h.Short(), io.ErrUnexpectedEOF)
		}
		return err
	}
	return nil
}

// Model is an opened RDRR model: its manifest and a verified view of its
// tensors. It is safe for concurrent use.
type Model struct {
	ID       ModelID
	Manifest *Manifest
	// Info is the model's name and provenance (info.json, outside the
	// ID); empty when unknown.
	Info Info
	// Signer is the publisher key when manifest.sig was present and valid.
	Signer []byte

	src    ShardSource
	byName map[string]*Tensor
}

// Open opens a model from manifest bytes, an optional signature, and a
// shard source. The signature, when given, must verify.
func Open(manifest, sig []byte, src ShardSource) (*Model, error) {
	m, err := ParseManifest(manifest)
	if err != nil {
		return nil, err
	}
	md := &Model{ID: Sum(manifest), Manifest: m, src: src, byName: map[string]*Tensor{}}
	if sig != nil {
		key, err := VerifySignature(manifest, sig)
		if err != nil {
			return nil, err
		}
		md.Signer = key
	}
	for i := range m.Tensors {
		md.byName[m.Tensors[i].Name] = &m.Tensors[i]
	}
	return md, nil
}

// OpenDir opens the RDRR directory dir.
func OpenDir(dir string) (*Model, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("%s: not an RDRR directory: %w", dir, err)
	}
	sig, err := os.ReadFile(filepath.Join(dir, SignatureFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	m, err := Open(b, sig, DirSource{Dir: dir})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestFile), err)
	}
	in, err := ReadInfo(dir, m.Manifest)
	if err != nil {
		return nil, err
	}
	m.Info = in
	return m, nil
}

// Tensor returns the named tensor's table entry.
func (m *Model) Tensor(name string) (*Tensor, bool) {
	t, ok := m.byName[name]
	return t, ok
}

// ReadTensor returns the whole tensor, reassembled from its spans.
func (m *Model) ReadTensor(ctx context.Context, name string) ([]byte, error) {
	t, ok := m.byName[name]
	if !ok {
		return nil, fmt.Errorf("tensor %s: not in the manifest", name)
	}
	buf := make([]byte, t.Size)
	off := int64(0)
	for _, s := range t.Pieces() {
		if err := m.readVerified(ctx, s.Shard, buf[off:off+s.Size], s.Offset); err != nil {
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		off += s.Size
	}
	return buf, nil
}

// ReadExpert returns expert e's slice of an expert tensor.
func (m *Model) ReadExpert(ctx context.Context, name string, e int) ([]byte, error) {
	t, ok := m.byName[name]
	if !ok {
		return nil, fmt.Errorf("tensor %s: not in the manifest", name)
	}
	if t.Experts == 0 || e < 0 || e >= t.Experts {
		return nil, fmt.Errorf("tensor %s: no expert %d", name, e)
	}
	buf := make([]byte, t.Size/int64(t.Experts))
	off := int64(0)
	for _, s := range t.Spans {
		if s.Expert != e {
			continue
		}
		if err := m.readVerified(ctx, s.Shard, buf[off:off+s.Size], s.Offset); err != nil {
			return nil, fmt.Errorf("tensor %s expert %d: %w", name, e, err)
		}
		off += s.Size
	}
	if off != int64(len(buf)) {
		return nil, fmt.Errorf("tensor %s expert %d: spans hold %d of %d bytes", name, e, off, len(buf))
	}
	return buf, nil
}

// readVerified fills p from shard si at off, reading and verifying every
// block that overlaps the range.
func (m *Model) readVerified(ctx context.Context, si int, p []byte, off int64) error {
	sh := &m.Manifest.Shards[si]
	bs := sh.BlockSize
	end := off + int64(len(p))
	var block []byte
	for b := off / bs; b*bs < end; b++ {
		start := b * bs
		n := int64(sh.BlockLen(int(b)))
		if cap(block) < int(n) {
			block = make([]byte, n)
		}
		block = block[:n]
		if err := m.src.ReadShardAt(ctx, sh.Hash, block, start); err != nil {
			return fmt.Errorf("shard %s block %d: %w", sh.Hash.Short(), b, err)
		}
		if err := sh.CheckBlock(int(b), block); err != nil {
			return err
		}
		lo, hi := max(off, start), min(end, start+n)
		copy(p[lo-off:hi-off], block[lo-start:hi-start])
	}
	return nil
}
