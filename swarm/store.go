package swarm

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
)

// On-disk layout of a store directory:
//
//	models/<model-id>/manifest.json   the manifest, exactly as published
//	models/<model-id>/manifest.sig    its signature, when it has one
//	shards/<hash>                     a complete shard: every block verified
//	partial/<hash>                    a shard being fetched (full size, sparse)
//	partial/<hash>.blocks             the partial's sidecar: verified blocks
//
// A file under shards/ only ever appears by an fsync'd rename of a partial
// whose every block matched its table (and, when two manifests name the
// shard with different tables, whose whole-file hash matched: see
// Complete), so a crash can leave a partial behind but never a shard that
// claims to be complete. The sidecar
// is an 8-byte magic followed by little-endian uint32 block indices,
// appended after each block is written; on restart the blocks it names are
// trusted only after they are hashed again (lazily, on first read, or all at
// once in Complete). Names starting with "." are temporaries, removed by Open:
// under models/, and the .import-* directories at the top (import.go).

// Sentinel errors of the store.
var (
	// ErrUnknownModel: no manifest with this ID in the store.
	ErrUnknownModel = errors.New("unknown model")
	// ErrUnknownShard: no manifest in the store names this shard.
	ErrUnknownShard = errors.New("unknown shard")
	// ErrMissingBlock: the store has no verified copy of the block.
	ErrMissingBlock = errors.New("block not in store")
	// ErrIncomplete: Complete was called before every block was verified.
	ErrIncomplete = errors.New("shard incomplete")
	// ErrQuota: the quota cannot make room (everything left is in use).
	ErrQuota = errors.New("store quota exceeded")
	// ErrInUse: the shard is pinned.
	ErrInUse = errors.New("shard in use")
)

const sidecarMagic = "DPRTL\x00\x00\x01"

// Clock is the time source of the store and the fetcher; tests inject one.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d, unless stopped.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is what Clock.AfterFunc returns; *time.Timer satisfies it.
type Timer interface {
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// RealClock returns the wall clock.
func RealClock() Clock { return realClock{} }

// StoreOptions configures a Store. Zero values take the defaults shown.
type StoreOptions struct {
	// Quota bounds the bytes of shards kept, complete and partial (0: no
	// limit); least recently used shards of unpinned models are evicted.
	Quota int64
	// Clock gives last-use times for eviction (the wall clock).
	Clock  Clock
	Logger *slog.Logger
	// MaxOpenFiles bounds the shard files (and partial shards' sidecars)
	// the store keeps open; beyond it the least recently used are closed,
	// to be opened again when next read (512). Many stores in one process
	// (a simulation) set it low.
	MaxOpenFiles int
}

type shardState int

const (
	stateMissing shardState = iota
	statePartial
	stateComplete
)

// entry is what the store knows of one shard hash.
type entry struct {
	sh     rdrr.Shard
	models map[rdrr.ModelID]bool

	// io guards f and side and the file's location: reads and writes hold
	// it, state changes (create, complete, evict, remove) hold it
	// exclusively. Lock order: io before Store.mu.
	io   sync.RWMutex
	f    *os.File // opened lazily; survives the partial → shard rename
	side *os.File // the partial's sidecar, append-only

	// Guarded by Store.mu.
	state shardState
	// conflict: some model names this shard with a table other than sh
	// (size, block size or root), so one of the manifests lies about it;
	// Complete then checks the whole-file hash as well.
	conflict bool
	have     []bool // verified when written, or claimed by disk after a restart
	checked  []bool // hashed since this process opened the store
	nhave    int
	pins     int
	lastUse  time.Time
}

// Store is a content-addressed shard store on disk with a size quota and
// LRU eviction. It is safe for concurrent use.
type Store struct {
	dir   string
	quota int64
	log   *slog.Logger
	clock Clock
	fetch *Fetcher

	mu      sync.Mutex
	models  map[rdrr.ModelID]*rdrr.Manifest
	names   map[rdrr.ModelID]string // from info.json, outside the ID
	entries map[rdrr.Hash]*entry
	used    int64 // bytes of complete and partial shards
	st      StoreStats
	watch   []chan struct{} // Changes subscribers
	bwatch  []chan struct{} // BlockChanges subscribers

	open    atomic.Int64 // shard files and sidecars open (entry.f, entry.side)
	maxOpen int          // StoreOptions.MaxOpenFiles
}

// StoreStats are the store's counters.
type StoreStats struct {
	BytesServed   int64 // bytes handed out by ReadBlock (uploads to peers)
	BytesWritten  int64 // verified block bytes written by WriteBlock
	BadOnDisk     int   // blocks that failed re-verification and were dropped
	Evictions     int   // shards evicted for the quota
	Reverified    int   // blocks hashed again after a restart
	ShardsStored  int   // shards completed (renamed into shards/)
	PartialsFound int   // partial shards found by Open
	Fetch         FetchStats
}

// Open opens (creating if needed) the store in dir. Open finds every
// model, complete shard and partial shard left by an earlier run; their
// blocks are re-verified lazily.
func Open(dir string, o StoreOptions) (*Store, error) {
	quota, log := o.Quota, o.Logger
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, sub := range []string{"models", "shards", "partial"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	s := &Store{
		dir: dir, quota: quota, log: log, clock: o.Clock,
		models: map[rdrr.ModelID]*rdrr.Manifest{}, names: map[rdrr.ModelID]string{}, entries: map[rdrr.Hash]*entry{},
		maxOpen: o.MaxOpenFiles,
	}
	if s.maxOpen <= 0 {
		s.maxOpen = 512
	}
	s.fetch = NewFetcher(s, FetcherOptions{Logger: log})
	s.removeTemps()
	if err := s.loadModels(); err != nil {
		return nil, err
	}
	if err := s.loadShards(); err != nil {
		return nil, err
	}
	if err := s.loadPartials(); err != nil {
		return nil, err
	}
	return s, nil
}

// Close records last-use times on disk (as file mtimes, which Open reads
// back for LRU order) and closes open files. The store must not be used
// afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, e := range s.entries {
		if e.state == stateComplete && !e.lastUse.IsZero() {
			os.Chtimes(s.shardPath(h), e.lastUse, e.lastUse)
		}
		s.closeFiles(e)
	}
	return nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) modelDir(id rdrr.ModelID) string { return filepath.Join(s.dir, "models", id.String()) }
func (s *Store) shardPath(h rdrr.Hash) string    { return filepath.Join(s.dir, "shards", h.String()) }
func (s *Store) partialPath(h rdrr.Hash) string  { return filepath.Join(s.dir, "partial", h.String()) }
func (s *Store) sidecarPath(h rdrr.Hash) string {
	return filepath.Join(s.dir, "partial", h.String()+".blocks")
}

func (s *Store) loadModels() error {
	root := filepath.Join(s.dir, "models")
	des, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, de := range des {
		name := de.Name()
		if len(name) > 0 && name[0] == '.' {
			os.RemoveAll(filepath.Join(root, name))
			continue
		}
		id, err := rdrr.ParseHash(name)
		if err != nil {
			s.log.Warn("store: ignoring unknown entry", "path", filepath.Join(root, name))
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, name, rdrr.ManifestFile))
		if err != nil {
			s.log.Warn("store: model without manifest", "model", id, "err", err)
			continue
		}
		sig, err := os.ReadFile(filepath.Join(root, name, rdrr.SignatureFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		m, err := checkManifest(b, sig)
		if err == nil && rdrr.Sum(b) != id {
			err = fmt.Errorf("manifest hash %s does not match its directory", rdrr.Sum(b).Short())
		}
		if err != nil {
			s.log.Warn("store: ignoring model", "model", id, "err", err)
			continue
		}
		s.addModelLocked(id, m)
		if in, err := rdrr.ReadInfo(filepath.Join(root, name), m); err != nil {
			s.log.Warn("store: model info unreadable", "model", id, "err", err)
		} else {
			s.names[id] = in.Name
		}
	}
	return nil
}

func checkManifest(manifest, sig []byte) (*rdrr.Manifest, error) {
	m, err := rdrr.ParseManifest(manifest)
	if err != nil {
		return nil, err
	}
	if sig != nil {
		if _, err := rdrr.VerifySignature(manifest, sig); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (s *Store) addModelLocked(id rdrr.ModelID, m *rdrr.Manifest) {
	s.models[id] = m
	for _, sh := range m.Shards {
		e, ok := s.entries[sh.Hash]
		if !ok {
			n := len(sh.Blocks)
			e = &entry{sh: sh, models: map[rdrr.ModelID]bool{}, have: make([]bool, n), checked: make([]bool, n)}
			s.entries[sh.Hash] = e
		}
		if !sameTable(e.sh, sh) {
			e.conflict = true
		}
		e.models[id] = true
	}
	s.changedLocked()
}

func (s *Store) loadShards() error {
	root := filepath.Join(s.dir, "shards")
	des, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, de := range des {
		path := filepath.Join(root, de.Name())
		h, err := rdrr.ParseHash(de.Name())
		e, ok := s.entries[h]
		if err != nil || !ok {
			s.log.Info("store: removing unreferenced file", "path", path)
			os.Remove(path)
			continue
		}
		fi, err := de.Info()
		if err != nil || fi.Size() != e.sh.Size {
			s.log.Warn("store: removing shard of the wrong size", "shard", h.Short())
			os.Remove(path)
			continue
		}
		e.state = stateComplete
		for i := range e.have {
			e.have[i] = true
		}
		e.nhave = len(e.have)
		e.lastUse = fi.ModTime()
		s.used += e.sh.Size
	}
	return nil
}

func (s *Store) loadPartials() error {
	root := filepath.Join(s.dir, "partial")
	des, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	names := map[string]bool{}
	for _, de := range des {
		names[de.Name()] = true
	}
	for _, de := range des {
		name := de.Name()
		path := filepath.Join(root, name)
		if filepath.Ext(name) == ".blocks" {
			if !names[name[:len(name)-len(".blocks")]] {
				os.Remove(path)
			}
			continue
		}
		h, err := rdrr.ParseHash(name)
		e, ok := s.entries[h]
		if err != nil || !ok || e.state == stateComplete {
			os.Remove(path)
			os.Remove(path + ".blocks")
			continue
		}
		fi, err := de.Info()
		if err != nil || fi.Size() != e.sh.Size {
			os.Remove(path)
			os.Remove(path + ".blocks")
			continue
		}
		side, err := os.ReadFile(path + ".blocks")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		e.state = statePartial
		e.lastUse = fi.ModTime()
		s.used += e.sh.Size
		s.st.PartialsFound++
		if len(side) >= len(sidecarMagic) && string(side[:len(sidecarMagic)]) == sidecarMagic {
			for rec := side[len(sidecarMagic):]; len(rec) >= 4; rec = rec[4:] {
				i := int(uint32(rec[0]) | uint32(rec[1])<<8 | uint32(rec[2])<<16 | uint32(rec[3])<<24)
				if i < len(e.have) && !e.have[i] {
					e.have[i] = true
					e.nhave++
				}
			}
		}
		s.log.Debug("store: found partial shard", "shard", h.Short(), "blocks", e.nhave, "of", len(e.have))
	}
	return nil
}

// AddModel parses and validates a manifest (and its signature, when sig is
// not nil), stores both and returns the model ID. Adding a model twice is
// not an error.
func (s *Store) AddModel(manifest, sig []byte) (rdrr.ModelID, error) {
	m, err := checkManifest(manifest, sig)
	if err != nil {
		return rdrr.ModelID{}, err
	}
	id := rdrr.Sum(manifest)
	s.mu.Lock()
	_, have := s.models[id]
	s.mu.Unlock()
	if have {
		return id, nil
	}
	if err := s.settleTables(m); err != nil {
		return id, err
	}
	root := filepath.Join(s.dir, "models")
	tmp, err := os.MkdirTemp(root, ".add-")
	if err != nil {
		return id, err
	}
	defer os.RemoveAll(tmp)
	if err := rdrr.WriteFileAtomic(filepath.Join(tmp, rdrr.ManifestFile), manifest); err != nil {
		return id, err
	}
	if sig != nil {
		if err := rdrr.WriteFileAtomic(filepath.Join(tmp, rdrr.SignatureFile), sig); err != nil {
			return id, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, have := s.models[id]; have {
		return id, nil
	}
	if err := os.Rename(tmp, s.modelDir(id)); err != nil && !errors.Is(err, os.ErrExist) {
		return id, err
	}
	syncDir(root)
	s.addModelLocked(id, m)
	s.log.Info("store: model added", "model", id, "shards", len(m.Shards), "bytes", m.TotalSize())
	return id, nil
}

// sameTable reports whether two tables of one shard hash agree: size,
// block size and root (which the manifest's validation ties to its
// blocks).
func sameTable(a, b rdrr.Shard) bool {
	return a.Size == b.Size && a.BlockSize == b.BlockSize && a.Root == b.Root
}

// settleTables checks m's shards against those the store holds complete
// under another table (another model names the same hash with another
// size, block size or root). Two tables of one shard are both true when
// they cut the same bytes into blocks of different sizes; but Complete
// keeps a shard whose blocks match its table without hashing it whole,
// so the stored file may hold what a lying manifest described. The file
// decides: if it hashes to the shard's name and m's table describes it,
// m is added; if it hashes to the name and m's table does not describe
// it, m lies and is refused (rdrr.ErrManifest); if it does not hash to
// the name, the table it was stored under lied, and the file goes, to be
// fetched again under m's table.
func (s *Store) settleTables(m *rdrr.Manifest) error {
	for i, sh := range m.Shards {
		s.mu.Lock()
		e, ok := s.entries[sh.Hash]
		differs := ok && !sameTable(e.sh, sh) && e.state == stateComplete
		s.mu.Unlock()
		if !differs {
			continue
		}
		lies, err := s.settle(e, sh)
		if err != nil {
			return fmt.Errorf("shard %d (%s): %w", i, sh.Hash.Short(), err)
		}
		if lies {
			return fmt.Errorf("shard %d (%s): its block table disagrees with the stored shard of that hash: %w", i, sh.Hash.Short(), rdrr.ErrManifest)
		}
	}
	return nil
}

// settle reads complete shard e once, hashing it whole and checking it
// against sh's blocks. When the bytes are the shard sh.Hash names, it
// reports whether sh's table lies about them; when they are not, it drops
// them and takes sh as the entry's table (the one it had lied). The
// caller holds no lock.
func (s *Store) settle(e *entry, sh rdrr.Shard) (lies bool, err error) {
	h := sh.Hash
	e.io.Lock()
	defer e.io.Unlock()
	s.mu.Lock()
	complete, size := e.state == stateComplete, e.sh.Size
	s.mu.Unlock()
	if !complete {
		return false, nil
	}
	f, err := os.Open(s.shardPath(h))
	if err != nil {
		return false, err
	}
	defer f.Close()
	whole := sha256.New()
	fits := size == sh.Size // sh's table describes the file so far
	buf := make([]byte, sh.BlockSize)
	for i, off := 0, int64(0); off < size; i++ {
		blk := buf[:min(sh.BlockSize, size-off)]
		if _, err := f.ReadAt(blk, off); err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		whole.Write(blk)
		fits = fits && sh.CheckBlock(i, blk) == nil
		off += int64(len(blk))
	}
	got := sumOf(whole)
	if got == h {
		return !fits, nil
	}
	s.log.Warn("store: a complete shard's bytes are not its name; the table it was fetched under lied, dropping it", "shard", h.Short(), "hashes_to", got.Short())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropFilesLocked(h, e)
	e.sh = sh
	e.have, e.checked, e.nhave = make([]bool, len(sh.Blocks)), make([]bool, len(sh.Blocks)), 0
	e.conflict = true
	return false, nil
}

// SetInfo records a model's name and provenance (info.json, outside its
// ID) unless the store has them already: the same model imported again
// under another name keeps its first.
func (s *Store) SetInfo(id rdrr.ModelID, in rdrr.Info) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.models[id]; !ok {
		return fmt.Errorf("model %s: %w", id.Short(), ErrUnknownModel)
	}
	if s.names[id] != "" || in.Name == "" {
		return nil
	}
	if err := rdrr.WriteInfo(s.modelDir(id), in); err != nil {
		return err
	}
	s.names[id] = in.Name
	return nil
}

// Models returns the IDs of the stored models, sorted.
func (s *Store) Models() []rdrr.ModelID {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]rdrr.ModelID, 0, len(s.models))
	for id := range s.models {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	return ids
}

// Manifest returns a model's manifest bytes and signature (nil when it has
// none).
func (s *Store) Manifest(id rdrr.ModelID) (manifest, sig []byte, ok bool) {
	s.mu.Lock()
	_, ok = s.models[id]
	s.mu.Unlock()
	if !ok {
		return nil, nil, false
	}
	manifest, err := os.ReadFile(filepath.Join(s.modelDir(id), rdrr.ManifestFile))
	if err != nil || rdrr.Sum(manifest) != id {
		return nil, nil, false
	}
	sig, err = os.ReadFile(filepath.Join(s.modelDir(id), rdrr.SignatureFile))
	if err != nil {
		sig = nil
	}
	return manifest, sig, true
}

func (s *Store) manifest(id rdrr.ModelID) (*rdrr.Manifest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.models[id]
	return m, ok
}

// ModelStatus tells how much of a model is in the store.
type ModelStatus struct {
	ID             rdrr.ModelID
	Name           string
	Shards         int
	CompleteShards int
	Bytes          int64 // total size
	HaveBytes      int64 // bytes of verified (or stored, not yet re-verified) blocks
}

// HoldsModel reports whether the store holds every shard of model id.
func (s *Store) HoldsModel(id rdrr.ModelID) bool {
	st, ok := s.Status(id)
	return ok && st.CompleteShards == st.Shards
}

// Status reports how much of model id the store holds.
func (s *Store) Status(id rdrr.ModelID) (ModelStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.models[id]
	if !ok {
		return ModelStatus{}, false
	}
	st := ModelStatus{ID: id, Name: s.names[id], Shards: len(m.Shards), Bytes: m.TotalSize()}
	for _, sh := range m.Shards {
		e := s.entries[sh.Hash]
		if e.state == stateComplete {
			st.CompleteShards++
			st.HaveBytes += sh.Size
			continue
		}
		for i, ok := range e.have {
			if ok {
				st.HaveBytes += int64(sh.BlockLen(i))
			}
		}
	}
	return st, true
}

// OpenModel opens a stored model for the engine: the store is its shard
// source. Shards not in the store fail to read (fetch the model first).
func (s *Store) OpenModel(id rdrr.ModelID) (*rdrr.Model, error) {
	b, sig, ok := s.Manifest(id)
	if !ok {
		return nil, fmt.Errorf("model %s: %w", id.Short(), ErrUnknownModel)
	}
	m, err := rdrr.Open(b, sig, s)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	m.Info.Name = s.names[id]
	s.mu.Unlock()
	return m, nil
}

// Shard returns a shard's table entry (from the first manifest naming it).
func (s *Store) Shard(h rdrr.Hash) (rdrr.Shard, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[h]
	if !ok {
		return rdrr.Shard{}, false
	}
	return e.sh, true
}

// Has reports whether the shard is complete in the store.
func (s *Store) Has(h rdrr.Hash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[h]
	return ok && e.state == stateComplete
}

// HaveBlocks returns which blocks of the shard the store holds (nil when
// no manifest names it). After a restart a block counts as held until a
// re-verification finds it bad.
func (s *Store) HaveBlocks(h rdrr.Hash) []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[h]
	if !ok {
		return nil
	}
	return append([]bool(nil), e.have...)
}

// PartialBlocks returns, for a shard held only partly, which blocks the
// store holds verified in this process (written after their hash matched,
// or hashed again since a restart): the blocks it serves without reading
// anything unverified. It returns nil for a shard held complete or not at
// all, or when no block is verified.
func (s *Store) PartialBlocks(h rdrr.Hash) []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[h]
	if !ok || e.state != statePartial {
		return nil
	}
	var out []bool
	for i, ok := range e.have {
		if ok && e.checked[i] {
			if out == nil {
				out = make([]bool, len(e.have))
			}
			out[i] = true
		}
	}
	return out
}

// Stats returns the store's counters.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	st := s.st
	s.mu.Unlock()
	st.Fetch = s.fetch.Stats()
	return st
}

// Used returns the bytes of shards (complete and partial) in the store.
func (s *Store) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Remove deletes a model and every shard of it that no other model uses.
// It fails with ErrInUse, changing nothing, when one of those is pinned.
func (s *Store) Remove(id rdrr.ModelID) error {
	s.mu.Lock()
	m, ok := s.models[id]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("model %s: %w", id.Short(), ErrUnknownModel)
	}
	var gone []rdrr.Hash
	for _, sh := range m.Shards {
		e := s.entries[sh.Hash]
		if len(e.models) == 1 {
			if e.pins > 0 {
				s.mu.Unlock()
				return fmt.Errorf("model %s: shard %s: %w", id.Short(), sh.Hash.Short(), ErrInUse)
			}
			gone = append(gone, sh.Hash)
		}
	}
	// The manifest goes first: a crash part way leaves orphan shard files,
	// which the next Open deletes.
	tmp := filepath.Join(s.dir, "models", ".rm-"+id.String())
	if err := os.Rename(s.modelDir(id), tmp); err != nil {
		s.mu.Unlock()
		return err
	}
	delete(s.models, id)
	delete(s.names, id)
	s.changedLocked()
	var drop []*entry
	for _, sh := range m.Shards {
		e := s.entries[sh.Hash]
		delete(e.models, id)
		if len(e.models) == 0 {
			delete(s.entries, sh.Hash)
			drop = append(drop, e)
		}
	}
	s.mu.Unlock()
	os.RemoveAll(tmp)
	for i, e := range drop {
		e.io.Lock()
		s.mu.Lock()
		s.dropFilesLocked(gone[i], e)
		s.mu.Unlock()
		e.io.Unlock()
	}
	s.log.Info("store: model removed", "model", id, "shards_deleted", len(gone))
	return nil
}

// dropFilesLocked deletes a shard's files and forgets its blocks. The
// caller holds e.io exclusively and s.mu.
func (s *Store) dropFilesLocked(h rdrr.Hash, e *entry) {
	s.closeFiles(e)
	if e.state != stateMissing {
		s.used -= e.sh.Size
	}
	os.Remove(s.shardPath(h))
	os.Remove(s.partialPath(h))
	os.Remove(s.sidecarPath(h))
	e.state = stateMissing
	for i := range e.have {
		e.have[i], e.checked[i] = false, false
	}
	e.nhave = 0
	s.changedLocked()
}

// Pin marks a shard in use: it is not evicted or removed until every pin
// is released. The returned func releases this pin (idempotent).
func (s *Store) Pin(h rdrr.Hash) (unpin func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[h]
	if !ok {
		return func() {}
	}
	e.pins++
	e.lastUse = s.clock.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			e.pins--
			s.mu.Unlock()
		})
	}
}

func (s *Store) pinModel(m *rdrr.Manifest) func() {
	unpins := make([]func(), 0, len(m.Shards))
	for _, sh := range m.Shards {
		unpins = append(unpins, s.Pin(sh.Hash))
	}
	return func() {
		for _, u := range unpins {
			u()
		}
	}
}

// makeRoom evicts least-recently-used shards that are not pinned, not
// busy and not keep, until need more bytes fit under the quota.
func (s *Store) makeRoom(need int64, keep *entry) error {
	if s.quota <= 0 {
		return nil
	}
	tried := map[*entry]bool{}
	for range len(s.entries) + 1 {
		s.mu.Lock()
		if s.used+need <= s.quota {
			s.mu.Unlock()
			return nil
		}
		var victim *entry
		var vh rdrr.Hash
		for h, e := range s.entries {
			if e == keep || tried[e] || e.pins > 0 || e.state == stateMissing {
				continue
			}
			if victim == nil || e.lastUse.Before(victim.lastUse) {
				victim, vh = e, h
			}
		}
		s.mu.Unlock()
		if victim == nil {
			return fmt.Errorf("%w: %d bytes used of %d, %d more needed, the rest is in use", ErrQuota, s.Used(), s.quota, need)
		}
		tried[victim] = true
		if !victim.io.TryLock() {
			continue // being read or written: in use
		}
		s.mu.Lock()
		if victim.pins == 0 && victim.state != stateMissing {
			s.log.Info("store: evicting shard", "shard", vh.Short(), "bytes", victim.sh.Size, "last_use", victim.lastUse)
			s.dropFilesLocked(vh, victim)
			s.st.Evictions++
		}
		s.mu.Unlock()
		victim.io.Unlock()
	}
	return ErrQuota
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// closeFiles closes the shard's open file and sidecar. The caller holds
// e.io exclusively.
func (s *Store) closeFiles(e *entry) {
	if e.f != nil {
		e.f.Close()
		e.f = nil
		s.open.Add(-1)
	}
	s.closeSide(e)
}

// closeSide closes the partial shard's sidecar. The caller holds e.io
// exclusively.
func (s *Store) closeSide(e *entry) {
	if e.side != nil {
		e.side.Close()
		e.side = nil
		s.open.Add(-1)
	}
}

// trimFiles closes the files of the least recently used shards while more
// than maxOpen are open, skipping keep and any shard in use (its io held):
// a store keeps a file open per shard it has read or written, and a
// thousand stores in one simulation ran out of the process's 20,000. Call
// it without s.mu.
func (s *Store) trimFiles(keep *entry) {
	if s.open.Load() <= int64(s.maxOpen) {
		return
	}
	s.mu.Lock()
	var lru []*entry
	for _, e := range s.entries {
		if e != keep && e.state != stateMissing {
			lru = append(lru, e)
		}
	}
	slices.SortFunc(lru, func(a, b *entry) int { return a.lastUse.Compare(b.lastUse) })
	s.mu.Unlock()
	for _, e := range lru {
		if s.open.Load() <= int64(s.maxOpen) {
			return
		}
		if e.io.TryLock() {
			s.closeFiles(e)
			e.io.Unlock()
		}
	}
}
