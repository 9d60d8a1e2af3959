//go:build js && wasm

package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"syscall/js"

	"github.com/doppler-llm/doppler/p2p/shardproto"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// store keeps models in the Origin Private File System:
//
//	doppler/models/<model-id>/manifest.json (and manifest.sig)
//	doppler/shards/<hash>                    complete, verified shards
//	doppler/partial/<hash>/<block index>     verified blocks of a shard being fetched
//
// A block file is written whole by one FileSystemWritableFileStream,
// which commits atomically on close, so a reload finds the whole block or
// an empty file (created, never committed), which Complete refetches; a
// complete shard is written from its blocks, checked against the shard
// hash, then its partial directory is removed — a shard file of the wrong
// size (a visit cut off mid-write) is dropped when its manifest is read. Reads
// (the engine, peers) go through File.slice; the rdrr reader and the shard
// protocol check every block they read against the manifest, so a file
// damaged in OPFS is never used.
//
// It is the fetcher's swarm.BlockStore, the shard protocol's
// shardproto.Provider (what this browser serves) and the engine's
// rdrr.ShardSource.
type store struct {
	ctx                     context.Context
	models, shards, partial js.Value // directory handles

	mu        sync.Mutex
	manifests map[rdrr.ModelID]*storedModel
	table     map[rdrr.Hash]rdrr.Shard
	complete  map[rdrr.Hash]bool
	have      map[rdrr.Hash][]bool // blocks of partial shards held
	files     map[rdrr.Hash]js.Value
	dirs      map[rdrr.Hash]js.Value // partial directory handles
	onChange  func()
}

type storedModel struct {
	raw, sig []byte
	m        *rdrr.Manifest
	index    map[rdrr.Hash]int // shard hash → place in m.Shards (inventory bitmaps)
}

var (
	_ swarm.BlockStore    = (*store)(nil)
	_ shardproto.Provider = (*store)(nil)
	_ rdrr.ShardSource    = (*store)(nil)
)

// openStore opens (creating) the OPFS directories and lists the complete
// shards; models and partial shards are read when a manifest is added.
func openStore(ctx context.Context) (*store, error) {
	sm := js.Global().Get("navigator").Get("storage")
	if sm.IsUndefined() || sm.Get("getDirectory").IsUndefined() {
		return nil, errors.New("this browser has no Origin Private File System (navigator.storage.getDirectory); a secure context (https or localhost) is needed")
	}
	root, err := callAwait(ctx, sm, "getDirectory")
	if err != nil {
		return nil, fmt.Errorf("OPFS: %w", err)
	}
	s := &store{ctx: ctx, manifests: map[rdrr.ModelID]*storedModel{}, table: map[rdrr.Hash]rdrr.Shard{},
		complete: map[rdrr.Hash]bool{}, have: map[rdrr.Hash][]bool{}, files: map[rdrr.Hash]js.Value{}, dirs: map[rdrr.Hash]js.Value{}}
	top, err := subdir(ctx, root, "doppler")
	if err != nil {
		return nil, err
	}
	for _, d := range []struct {
		name string
		h    *js.Value
	}{{"models", &s.models}, {"shards", &s.shards}, {"partial", &s.partial}} {
		if *d.h, err = subdir(ctx, top, d.name); err != nil {
			return nil, err
		}
	}
	names, err := list(ctx, s.shards)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if h, err := rdrr.ParseHash(n); err == nil {
			s.complete[h] = true
		}
	}
	return s, nil
}

func subdir(ctx context.Context, dir js.Value, name string) (js.Value, error) {
	d, err := callAwait(ctx, dir, "getDirectoryHandle", name, object(map[string]any{"create": true}))
	if err != nil {
		return d, fmt.Errorf("OPFS directory %s: %w", name, err)
	}
	return d, nil
}

// list returns the names in an OPFS directory.
func list(ctx context.Context, dir js.Value) ([]string, error) {
	it, err := call(dir, "keys")
	if err != nil {
		return nil, err
	}
	var names []string
	for range 1 << 20 {
		r, err := callAwait(ctx, it, "next")
		if err != nil {
			return nil, fmt.Errorf("OPFS list: %w", err)
		}
		if r.Get("done").Bool() {
			return names, nil
		}
		names = append(names, r.Get("value").String())
	}
	return nil, errors.New("OPFS list: too many entries")
}

// readFile reads a whole OPFS file; ok is false when it does not exist.
func readFile(ctx context.Context, dir js.Value, name string) (b []byte, ok bool, err error) {
	fh, err := callAwait(ctx, dir, "getFileHandle", name)
	if err != nil {
		return nil, false, nil // NotFoundError
	}
	f, err := callAwait(ctx, fh, "getFile")
	if err != nil {
		return nil, false, err
	}
	ab, err := callAwait(ctx, f, "arrayBuffer")
	if err != nil {
		return nil, false, err
	}
	return goBytes(ab), true, nil
}

// writeFile writes a whole OPFS file atomically (the writable stream
// commits on close) from one or more chunks.
func writeFile(ctx context.Context, dir js.Value, name string, chunks func(yield func([]byte) error) error) error {
	fh, err := callAwait(ctx, dir, "getFileHandle", name, object(map[string]any{"create": true}))
	if err != nil {
		return fmt.Errorf("OPFS %s: %w", name, err)
	}
	w, err := callAwait(ctx, fh, "createWritable")
	if err != nil {
		return fmt.Errorf("OPFS %s: %w", name, err)
	}
	err = chunks(func(b []byte) error {
		_, err := callAwait(ctx, w, "write", jsBytes(b))
		return err
	})
	if err != nil {
		callAwait(ctx, w, "abort")
		return fmt.Errorf("OPFS %s: %w", name, err)
	}
	if _, err := callAwait(ctx, w, "close"); err != nil {
		return fmt.Errorf("OPFS %s: %w", name, err)
	}
	return nil
}

func whole(b []byte) func(yield func([]byte) error) error {
	return func(yield func([]byte) error) error { return yield(b) }
}

// Load reads a model's manifest from OPFS; ok is false when it is not there.
func (s *store) Load(id rdrr.ModelID) (ok bool, err error) {
	dir, err := subdir(s.ctx, s.models, id.String())
	if err != nil {
		return false, err
	}
	raw, ok, err := readFile(s.ctx, dir, rdrr.ManifestFile)
	if err != nil || !ok {
		return false, err
	}
	if rdrr.Sum(raw) != id {
		return false, nil // damaged: fetched again
	}
	sig, _, err := readFile(s.ctx, dir, rdrr.SignatureFile)
	if err != nil {
		return false, err
	}
	return true, s.add(id, raw, sig)
}

// AddManifest keeps a verified manifest (and signature) in OPFS.
func (s *store) AddManifest(id rdrr.ModelID, raw, sig []byte) error {
	if rdrr.Sum(raw) != id {
		return fmt.Errorf("manifest of %s: %w", id.Short(), shardproto.ErrBadManifest)
	}
	dir, err := subdir(s.ctx, s.models, id.String())
	if err != nil {
		return err
	}
	if len(sig) > 0 {
		if err := writeFile(s.ctx, dir, rdrr.SignatureFile, whole(sig)); err != nil {
			return err
		}
	}
	if err := writeFile(s.ctx, dir, rdrr.ManifestFile, whole(raw)); err != nil {
		return err
	}
	return s.add(id, raw, sig)
}

// add parses a manifest and learns its shards, reading which blocks of
// each partial shard OPFS holds.
func (s *store) add(id rdrr.ModelID, raw, sig []byte) error {
	m, err := rdrr.ParseManifest(raw)
	if err != nil {
		return fmt.Errorf("manifest of %s: %w", id.Short(), err)
	}
	if len(sig) > 0 {
		if _, err := rdrr.VerifySignature(raw, sig); err != nil {
			return fmt.Errorf("manifest of %s: %w", id.Short(), err)
		}
	}
	partials, err := list(s.ctx, s.partial)
	if err != nil {
		return err
	}
	for _, sh := range m.Shards {
		s.mu.Lock()
		s.table[sh.Hash] = sh
		done := s.complete[sh.Hash]
		_, known := s.have[sh.Hash]
		s.mu.Unlock()
		if done {
			// A visit cut off while a complete shard was being written
			// leaves the file empty (getFileHandle creates it; the
			// writable commits only on close): such a file is dropped.
			if f, err := s.file(s.ctx, sh.Hash); err == nil && int64(f.Get("size").Float()) == sh.Size {
				continue
			}
			callAwait(s.ctx, s.shards, "removeEntry", sh.Hash.String())
			s.mu.Lock()
			delete(s.complete, sh.Hash)
			delete(s.files, sh.Hash)
			s.mu.Unlock()
		} else if known {
			continue
		}
		have := make([]bool, len(sh.Blocks))
		if slices.Contains(partials, sh.Hash.String()) {
			dir, err := subdir(s.ctx, s.partial, sh.Hash.String())
			if err != nil {
				return err
			}
			names, err := list(s.ctx, dir)
			if err != nil {
				return err
			}
			for _, n := range names {
				if i, err := strconv.Atoi(n); err == nil && i >= 0 && i < len(have) {
					have[i] = true // hashed again by Complete
				}
			}
		}
		s.mu.Lock()
		s.have[sh.Hash] = have
		s.mu.Unlock()
	}
	index := make(map[rdrr.Hash]int, len(m.Shards))
	for i, sh := range m.Shards {
		index[sh.Hash] = i
	}
	s.mu.Lock()
	s.manifests[id] = &storedModel{raw: raw, sig: sig, m: m, index: index}
	s.mu.Unlock()
	return nil
}

// Model returns a stored model's manifest.
func (s *store) Model(id rdrr.ModelID) (*storedModel, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sm, ok := s.manifests[id]
	return sm, ok
}

// Held returns the verified bytes held of a model and its size.
func (s *store) Held(id rdrr.ModelID) (held, total int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sm, ok := s.manifests[id]
	if !ok {
		return 0, 0
	}
	for _, sh := range sm.m.Shards {
		total += sh.Size
		if s.complete[sh.Hash] {
			held += sh.Size
			continue
		}
		for i, ok := range s.have[sh.Hash] {
			if ok {
				held += int64(sh.BlockLen(i))
			}
		}
	}
	return held, total
}

// Manifest implements shardproto.Provider.
func (s *store) Manifest(id rdrr.ModelID) (manifest, sig []byte, ok bool) {
	sm, ok := s.Model(id)
	if !ok {
		return nil, nil, false
	}
	return sm.raw, sm.sig, true
}

// Shard implements shardproto.Provider.
func (s *store) Shard(h rdrr.Hash) (rdrr.Shard, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.table[h]
	return sh, ok
}

// Has implements swarm.BlockStore.
func (s *store) Has(h rdrr.Hash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, known := s.table[h]
	return known && s.complete[h]
}

// HaveBlocks implements swarm.BlockStore.
func (s *store) HaveBlocks(h rdrr.Hash) []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.table[h]
	switch {
	case !ok:
		return nil
	case s.complete[h]:
		all := make([]bool, len(sh.Blocks))
		for i := range all {
			all[i] = true
		}
		return all
	}
	return slices.Clone(s.have[h])
}

// partialDir returns (creating) the directory of a partial shard.
func (s *store) partialDir(h rdrr.Hash) (js.Value, error) {
	s.mu.Lock()
	d, ok := s.dirs[h]
	s.mu.Unlock()
	if ok {
		return d, nil
	}
	d, err := subdir(s.ctx, s.partial, h.String())
	if err != nil {
		return d, err
	}
	s.mu.Lock()
	s.dirs[h] = d
	s.mu.Unlock()
	return d, nil
}

// PutBlock implements swarm.BlockStore: the block is hashed against the
// manifest and written as its own file.
func (s *store) PutBlock(h rdrr.Hash, index int, data []byte) (bool, error) {
	sh, ok := s.Shard(h)
	if !ok {
		return false, fmt.Errorf("shard %s: %w", h.Short(), swarm.ErrUnknownShard)
	}
	if err := sh.CheckBlock(index, data); err != nil {
		return false, err
	}
	s.mu.Lock()
	held := s.complete[h] || s.have[h][index]
	s.mu.Unlock()
	if held {
		return false, nil
	}
	dir, err := s.partialDir(h)
	if err != nil {
		return false, err
	}
	if err := writeFile(s.ctx, dir, strconv.Itoa(index), whole(data)); err != nil {
		return false, err
	}
	s.mu.Lock()
	wrote := !s.have[h][index]
	s.have[h][index] = true
	s.mu.Unlock()
	return wrote, nil
}

// Complete implements swarm.BlockStore: the blocks are read back, hashed
// (each against the manifest, all against the shard hash) and written as
// one file; the partial directory is then removed. Blocks found bad are
// dropped and ErrIncomplete sends the fetcher back for them.
func (s *store) Complete(h rdrr.Hash) error {
	sh, ok := s.Shard(h)
	if !ok {
		return fmt.Errorf("shard %s: %w", h.Short(), swarm.ErrUnknownShard)
	}
	if s.Has(h) {
		return nil
	}
	dir, err := s.partialDir(h)
	if err != nil {
		return err
	}
	var bad []int
	sum := sha256.New()
	err = writeFile(s.ctx, s.shards, h.String(), func(yield func([]byte) error) error {
		for i := range sh.Blocks {
			b, ok, err := readFile(s.ctx, dir, strconv.Itoa(i))
			if err != nil {
				return err
			}
			if !ok || sh.CheckBlock(i, b) != nil {
				bad = append(bad, i)
				continue
			}
			if len(bad) > 0 {
				continue
			}
			sum.Write(b)
			if err := yield(b); err != nil {
				return err
			}
		}
		if len(bad) > 0 {
			return swarm.ErrIncomplete
		}
		if rdrr.Hash(sum.Sum(nil)) != h {
			return fmt.Errorf("shard %s: its blocks match the manifest but not the shard hash: %w", h.Short(), rdrr.ErrBadBlock)
		}
		return nil
	})
	if len(bad) > 0 {
		s.mu.Lock()
		for _, i := range bad {
			s.have[h][i] = false
		}
		s.mu.Unlock()
		for _, i := range bad {
			callAwait(s.ctx, dir, "removeEntry", strconv.Itoa(i))
		}
		return fmt.Errorf("shard %s: %d blocks bad or missing in OPFS: %w", h.Short(), len(bad), swarm.ErrIncomplete)
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.complete[h] = true
	delete(s.have, h)
	delete(s.dirs, h)
	f := s.onChange
	s.mu.Unlock()
	callAwait(s.ctx, s.partial, "removeEntry", h.String(), object(map[string]any{"recursive": true}))
	if f != nil {
		f()
	}
	return nil
}

// file returns the File of a complete shard (cached: shards never change).
func (s *store) file(ctx context.Context, h rdrr.Hash) (js.Value, error) {
	s.mu.Lock()
	f, ok := s.files[h]
	s.mu.Unlock()
	if ok {
		return f, nil
	}
	fh, err := callAwait(ctx, s.shards, "getFileHandle", h.String())
	if err != nil {
		return f, fmt.Errorf("shard %s not in OPFS: %w", h.Short(), err)
	}
	f, err = callAwait(ctx, fh, "getFile")
	if err != nil {
		return f, fmt.Errorf("shard %s: %w", h.Short(), err)
	}
	s.mu.Lock()
	s.files[h] = f
	s.mu.Unlock()
	return f, nil
}

// ReadShardAt implements rdrr.ShardSource for complete shards.
func (s *store) ReadShardAt(ctx context.Context, h rdrr.Hash, p []byte, off int64) error {
	f, err := s.file(ctx, h)
	if err != nil {
		return err
	}
	if size := int64(f.Get("size").Float()); off < 0 || off+int64(len(p)) > size {
		return fmt.Errorf("shard %s: read [%d, %d) of a %d-byte file", h.Short(), off, off+int64(len(p)), size)
	}
	ab, err := callAwait(ctx, f.Call("slice", off, off+int64(len(p))), "arrayBuffer")
	if err != nil {
		return fmt.Errorf("shard %s: %w", h.Short(), err)
	}
	js.CopyBytesToGo(p, js.Global().Get("Uint8Array").New(ab))
	return nil
}

// ReadBlock implements shardproto.Provider (Answer hashes what it sends).
func (s *store) ReadBlock(h rdrr.Hash, index int, p []byte) (int, error) {
	sh, ok := s.Shard(h)
	if !ok || index < 0 || index >= len(sh.Blocks) {
		return 0, fmt.Errorf("shard %s block %d: %w", h.Short(), index, swarm.ErrMissingBlock)
	}
	n := sh.BlockLen(index)
	if len(p) < n {
		return 0, fmt.Errorf("shard %s block %d: buffer of %d bytes", h.Short(), index, len(p))
	}
	if s.Has(h) {
		return n, s.ReadShardAt(s.ctx, h, p[:n], int64(index)*sh.BlockSize)
	}
	s.mu.Lock()
	held := s.have[h] != nil && s.have[h][index]
	s.mu.Unlock()
	if !held {
		return 0, fmt.Errorf("shard %s block %d: %w", h.Short(), index, swarm.ErrMissingBlock)
	}
	dir, err := s.partialDir(h)
	if err != nil {
		return 0, err
	}
	b, ok, err := readFile(s.ctx, dir, strconv.Itoa(index))
	if err != nil || !ok || len(b) != n {
		return 0, fmt.Errorf("shard %s block %d: %w", h.Short(), index, swarm.ErrMissingBlock)
	}
	return copy(p, b), nil
}

// Forget removes a model's shards and manifest from OPFS.
func (s *store) Forget(id rdrr.ModelID) error {
	sm, ok := s.Model(id)
	if !ok {
		return nil
	}
	rec := object(map[string]any{"recursive": true})
	for _, sh := range sm.m.Shards {
		callAwait(s.ctx, s.shards, "removeEntry", sh.Hash.String())
		callAwait(s.ctx, s.partial, "removeEntry", sh.Hash.String(), rec)
		s.mu.Lock()
		delete(s.complete, sh.Hash)
		delete(s.have, sh.Hash)
		delete(s.files, sh.Hash)
		delete(s.dirs, sh.Hash)
		delete(s.table, sh.Hash)
		s.mu.Unlock()
	}
	_, err := callAwait(s.ctx, s.models, "removeEntry", id.String(), rec)
	s.mu.Lock()
	delete(s.manifests, id)
	s.mu.Unlock()
	return err
}
