package swarm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
)

// stepClock advances by a millisecond on every reading, so LRU order is
// the order of calls.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func (c *stepClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

func TestStoreImportReopen(t *testing.T) {
	src, id := synthModel(t, 6<<20, 1<<20, 16<<10, 1)
	dir := t.TempDir()
	s := openStore(t, dir, 0)
	got, err := s.ImportDir(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if got != id {
		t.Fatalf("id %s, want %s", got.Short(), id.Short())
	}
	sameShards(t, s, src, id)
	if _, err := s.ImportDir(context.Background(), src); err != nil {
		t.Fatalf("second import: %v", err)
	}
	s.Close()

	s2 := openStore(t, dir, 0)
	if ids := s2.Models(); len(ids) != 1 || ids[0] != id {
		t.Fatalf("after reopen: models %v", ids)
	}
	b, sig, ok := s2.Manifest(id)
	if !ok || rdrr.Sum(b) != id || sig != nil {
		t.Fatal("manifest lost on reopen")
	}
	sameShards(t, s2, src, id)
	if st := s2.Stats(); st.Reverified == 0 {
		t.Fatal("no block re-verified lazily after reopen")
	}
	r, err := rdrr.VerifyDir(src, nil)
	if err != nil || len(r.Problems) > 0 {
		t.Fatal(err, r.Problems)
	}
}

func TestStoreRefusesBadBlock(t *testing.T) {
	src, _ := synthModel(t, 2<<20, 1<<20, 16<<10, 2)
	s := openStore(t, t.TempDir(), 0)
	if _, err := s.AddModel(readManifest(t, src), nil); err != nil {
		t.Fatal(err)
	}
	m, _ := s.manifest(s.Models()[0])
	sh := m.Shards[0]
	data := make([]byte, sh.BlockSize)
	f, _ := os.Open(filepath.Join(src, sh.Hash.String()))
	f.ReadAt(data, 0)
	f.Close()
	data[7] ^= 0x40
	if err := s.WriteBlock(sh.Hash, 0, data); !errors.Is(err, rdrr.ErrBadBlock) {
		t.Fatalf("WriteBlock of a flipped block: %v, want ErrBadBlock", err)
	}
	if _, err := os.Stat(s.partialPath(sh.Hash)); !os.IsNotExist(err) {
		t.Fatal("a bad block created a partial file")
	}
	if err := s.WriteBlock(sh.Hash, 1, data); !errors.Is(err, rdrr.ErrBadBlock) {
		t.Fatal("block 0's data accepted as block 1")
	}
	buf := make([]byte, sh.BlockSize)
	if _, err := s.ReadBlock(sh.Hash, 0, buf); !errors.Is(err, ErrMissingBlock) {
		t.Fatalf("ReadBlock of an absent block: %v", err)
	}
	if _, err := s.AddModel([]byte(`{"format":"rdrr/1"}`), nil); !errors.Is(err, rdrr.ErrManifest) {
		t.Fatalf("bad manifest: %v", err)
	}
	if _, err := s.AddModel(readManifest(t, src), []byte(`{"alg":"ed25519","key":"00","sig":"00"}`)); !errors.Is(err, rdrr.ErrBadSignature) {
		t.Fatalf("bad signature: %v", err)
	}
}

// TestStoreCrashMidWrite drops a store part way through a shard (no Close,
// no Complete), with a sidecar that claims one block the "crash" lost, and
// checks the reopened store claims no complete shard and resumes.
func TestStoreCrashMidWrite(t *testing.T) {
	src, id := synthModel(t, 2<<20, 1<<20, 16<<10, 3)
	dir := t.TempDir()
	s, err := Open(dir, StoreOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddModel(readManifest(t, src), nil); err != nil {
		t.Fatal(err)
	}
	m, _ := s.manifest(id)
	sh := m.Shards[0]
	raw, err := os.ReadFile(filepath.Join(src, sh.Hash.String()))
	if err != nil {
		t.Fatal(err)
	}
	block := func(i int) []byte { return raw[int64(i)*sh.BlockSize : int64(i)*sh.BlockSize+int64(sh.BlockLen(i))] }
	half := len(sh.Blocks) / 2
	for i := range half {
		if err := s.WriteBlock(sh.Hash, i, block(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Complete(sh.Hash); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Complete of half a shard: %v", err)
	}
	// The crash: block 3's bytes never reached the disk though the sidecar
	// names it, and a torn record ends the sidecar.
	zero := make([]byte, sh.BlockSize)
	pf, err := os.OpenFile(s.partialPath(sh.Hash), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	pf.WriteAt(zero, 3*sh.BlockSize)
	pf.Close()
	side, _ := os.OpenFile(s.sidecarPath(sh.Hash), os.O_WRONLY|os.O_APPEND, 0)
	side.Write([]byte{byte(half), 0})
	side.Close()
	os.WriteFile(filepath.Join(dir, "shards", ".tmp-123"), []byte("junk"), 0o644)
	// s is dropped here without Close.

	s2 := openStore(t, dir, 0)
	if s2.Has(sh.Hash) {
		t.Fatal("a shard claims to be complete after a crash mid-write")
	}
	if des, _ := os.ReadDir(filepath.Join(dir, "shards")); len(des) != 0 {
		t.Fatalf("shards/ holds %d files after the crash", len(des))
	}
	have := s2.HaveBlocks(sh.Hash)
	n := 0
	for _, ok := range have {
		if ok {
			n++
		}
	}
	if n != half {
		t.Fatalf("reopened store holds %d blocks, want %d", n, half)
	}
	buf := make([]byte, sh.BlockSize)
	if _, err := s2.ReadBlock(sh.Hash, 3, buf); !errors.Is(err, rdrr.ErrBadBlock) {
		t.Fatalf("ReadBlock of the lost block: %v, want ErrBadBlock", err)
	}
	if _, err := s2.ReadBlock(sh.Hash, 2, buf); err != nil {
		t.Fatalf("ReadBlock of a good partial block: %v", err)
	}
	// Resume: write what is missing; Complete must re-verify before renaming.
	for i, ok := range s2.HaveBlocks(sh.Hash) {
		if !ok {
			if err := s2.WriteBlock(sh.Hash, i, block(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s2.Complete(sh.Hash); err != nil {
		t.Fatal(err)
	}
	if !s2.Has(sh.Hash) {
		t.Fatal("shard not complete after resume")
	}
	if _, err := os.Stat(s2.sidecarPath(sh.Hash)); !os.IsNotExist(err) {
		t.Fatal("sidecar left behind")
	}
}

func TestStoreQuotaLRU(t *testing.T) {
	srcA, idA := synthModel(t, 3<<20, 1<<20, 16<<10, 4)
	srcB, _ := synthModel(t, 3<<20, 1<<20, 16<<10, 5)
	srcC, _ := synthModel(t, 3<<20, 1<<20, 16<<10, 6)
	ctx := context.Background()
	s := openStore(t, t.TempDir(), 5<<20, &stepClock{})
	if _, err := s.ImportDir(ctx, srcA); err != nil {
		t.Fatal(err)
	}
	a, _ := s.manifest(idA)
	if len(a.Shards) != 3 {
		t.Fatalf("model A has %d shards, want 3", len(a.Shards))
	}
	// Order of use: A2 oldest-but-pinned, then A0, then A1 most recent.
	unpin := s.Pin(a.Shards[2].Hash)
	buf := make([]byte, 16<<10)
	for _, i := range []int{0, 1} {
		if _, err := s.ReadBlock(a.Shards[i].Hash, 0, buf); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ImportDir(ctx, srcB); err != nil {
		t.Fatal(err)
	}
	if s.Has(a.Shards[0].Hash) {
		t.Fatal("least recently used shard A0 not evicted")
	}
	if !s.Has(a.Shards[1].Hash) || !s.Has(a.Shards[2].Hash) {
		t.Fatal("evicted a recent or pinned shard")
	}
	if s.Used() > 5<<20 {
		t.Fatalf("used %d bytes over the quota", s.Used())
	}
	if st := s.Stats(); st.Evictions != 1 {
		t.Fatalf("%d evictions, want 1", st.Evictions)
	}
	// Everything pinned: a third model cannot fit.
	for _, id := range s.Models() {
		m, _ := s.manifest(id)
		defer s.pinModel(m)()
	}
	if _, err := s.ImportDir(ctx, srcC); !errors.Is(err, ErrQuota) {
		t.Fatalf("import with every shard pinned: %v, want ErrQuota", err)
	}
	if !s.Has(a.Shards[2].Hash) {
		t.Fatal("pinned shard evicted")
	}
	unpin()
	unpin() // idempotent
}

// TestStoreReverifyAfterRestart corrupts a stored shard on disk between two
// runs: the first read of the block finds it, drops it and reports it; the
// rest of the shard stays, and one good block makes it complete again.
func TestStoreReverifyAfterRestart(t *testing.T) {
	src, id := synthModel(t, 2<<20, 1<<20, 16<<10, 7)
	dir := t.TempDir()
	s := openStore(t, dir, 0)
	if _, err := s.ImportDir(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	m, _ := s.manifest(id)
	sh := m.Shards[1]
	s.Close()
	path := filepath.Join(dir, "shards", sh.Hash.String())
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	const bad = 5
	var b [1]byte
	f.ReadAt(b[:], bad*sh.BlockSize+100)
	b[0] ^= 1
	f.WriteAt(b[:], bad*sh.BlockSize+100)
	f.Close()

	s2 := openStore(t, dir, 0)
	if !s2.Has(sh.Hash) {
		t.Fatal("shard not found after restart")
	}
	md, err := s2.OpenModel(id)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, sh.BlockSize)
	if _, err := s2.ReadBlock(sh.Hash, bad, buf); !errors.Is(err, rdrr.ErrBadBlock) {
		t.Fatalf("ReadBlock of a corrupted block: %v, want ErrBadBlock", err)
	}
	if s2.Has(sh.Hash) {
		t.Fatal("shard with a dropped block still complete")
	}
	if _, err := s2.ReadBlock(sh.Hash, bad, buf); !errors.Is(err, ErrMissingBlock) {
		t.Fatalf("second read: %v, want ErrMissingBlock", err)
	}
	if st := s2.Stats(); st.BadOnDisk != 1 {
		t.Fatalf("BadOnDisk %d", st.BadOnDisk)
	}
	tensorErr := false
	for _, tn := range m.Tensors {
		if _, err := md.ReadTensor(context.Background(), tn.Name); err != nil {
			tensorErr = true
		}
	}
	if !tensorErr {
		t.Fatal("a tensor over the dropped block read without error")
	}
	raw, _ := os.ReadFile(filepath.Join(src, sh.Hash.String()))
	if err := s2.WriteBlock(sh.Hash, bad, raw[bad*sh.BlockSize:(bad+1)*sh.BlockSize]); err != nil {
		t.Fatal(err)
	}
	if err := s2.Complete(sh.Hash); err != nil {
		t.Fatal(err)
	}
	sameShards(t, s2, src, id)
}

func TestStoreRemove(t *testing.T) {
	srcA, idA := synthModel(t, 2<<20, 1<<20, 16<<10, 8)
	srcB, idB := synthModel(t, 2<<20, 1<<20, 16<<10, 9)
	dir := t.TempDir()
	s := openStore(t, dir, 0)
	ctx := context.Background()
	for _, src := range []string{srcA, srcB} {
		if _, err := s.ImportDir(ctx, src); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := s.manifest(idA)
	unpin := s.Pin(a.Shards[0].Hash)
	if err := s.Remove(idA); !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove with a pinned shard: %v", err)
	}
	unpin()
	if err := s.Remove(idA); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(idA); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("second Remove: %v", err)
	}
	for _, sh := range a.Shards {
		if _, err := os.Stat(filepath.Join(dir, "shards", sh.Hash.String())); !os.IsNotExist(err) {
			t.Fatal("removed model's shard still on disk")
		}
	}
	s.Close()
	s2 := openStore(t, dir, 0)
	if ids := s2.Models(); len(ids) != 1 || ids[0] != idB {
		t.Fatalf("after remove and reopen: %v", ids)
	}
	sameShards(t, s2, srcB, idB)
}

// copyDir copies the files of src into dst (created).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	des, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(src, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, de.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestImportTemp: a model in one of the store's TempDirs is moved in, not
// copied — its shard files leave the directory and the store's bytes grow
// by the model's size once. An import that meets a corrupt shard part way
// fails naming it and leaves the store consistent: the models stored
// before untouched, the shards moved before it complete, the bad one not
// stored; reopening removes the unfinished import, and importing again
// completes the model.
func TestImportTemp(t *testing.T) {
	ctx := context.Background()
	srcA, idA := synthModel(t, 3<<20, 1<<20, 64<<10, 1)
	srcB, idB := synthModel(t, 4<<20, 1<<20, 64<<10, 2)
	dir := t.TempDir()
	s := openStore(t, dir, 0)
	if _, err := s.ImportDir(ctx, srcA); err != nil {
		t.Fatal(err)
	}
	usedA := s.Used()
	if _, err := s.ImportTemp(ctx, srcB); err == nil {
		t.Fatal("ImportTemp of a directory outside the store's TempDirs succeeded")
	}

	tmp, err := s.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(tmp, "model")
	copyDir(t, srcB, b)
	m, err := rdrr.ParseManifest(readManifest(t, srcB))
	if err != nil || len(m.Shards) < 3 {
		t.Fatalf("model B: %d shards, %v; want several", len(m.Shards), err)
	}
	bad := m.Shards[1]
	badPath := filepath.Join(b, bad.Hash.String())
	raw, err := os.ReadFile(badPath)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 1
	if err := os.WriteFile(badPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = s.ImportTemp(ctx, b)
	if !errors.Is(err, rdrr.ErrBadBlock) || !strings.Contains(err.Error(), bad.Hash.Short()) {
		t.Fatalf("import with a corrupt shard: %v, want a bad block naming shard %s", err, bad.Hash.Short())
	}
	if !s.Has(m.Shards[0].Hash) || s.Has(bad.Hash) || s.HaveBlocks(bad.Hash)[0] {
		t.Fatal("after the failed import: want the first shard complete and nothing of the corrupt one")
	}
	if _, err := os.Stat(filepath.Join(b, m.Shards[0].Hash.String())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the first shard was copied, not moved: %v", err)
	}
	if got, want := s.Used(), usedA+m.Shards[0].Size; got != want {
		t.Errorf("after the failed import: %d bytes used, want %d", got, want)
	}
	sameShards(t, s, srcA, idA)
	s.Close() // as if killed: the temporary directory stays

	s = openStore(t, dir, 0)
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reopened: the unfinished import %s is still there (%v)", tmp, err)
	}
	sameShards(t, s, srcA, idA)
	if st, ok := s.Status(idB); !ok || st.CompleteShards != 1 {
		t.Fatalf("reopened: model B %+v, want 1 shard complete", st)
	}

	tmp, err = s.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	b = filepath.Join(tmp, "model")
	copyDir(t, srcB, b)
	if got, err := s.ImportTemp(ctx, b); err != nil || got != idB {
		t.Fatalf("import again: %v, %v", got.Short(), err)
	}
	sameShards(t, s, srcB, idB)
	if got, want := s.Used(), usedA+m.TotalSize(); got != want {
		t.Errorf("%d bytes used, want %d: every shard once", got, want)
	}
	for _, sh := range m.Shards[1:] {
		if _, err := os.Stat(filepath.Join(b, sh.Hash.String())); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("shard %s was copied, not moved: %v", sh.Hash.Short(), err)
		}
	}
	os.RemoveAll(tmp)
}

// TestStoreMaxOpenFiles: stores that may keep only 2 shard files open
// serve and fetch a model of 8 shards concurrently (partial files and
// sidecars opened, closed and opened again) and end with every byte
// right, never more files open than the bound once an operation returns.
func TestStoreMaxOpenFiles(t *testing.T) {
	src, id := synthModel(t, 2<<20, 256<<10, 64<<10, 41)
	bounded := func(full bool) *Store {
		s, err := Open(t.TempDir(), StoreOptions{Logger: testLogger(t), MaxOpenFiles: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if full {
			if _, err := s.ImportDir(context.Background(), src); err != nil {
				t.Fatal(err)
			}
		} else if _, err := s.AddModel(readManifest(t, src), nil); err != nil {
			t.Fatal(err)
		}
		return s
	}
	net := &testNet{}
	seed := bounded(true)
	net.add(newStorePeer("seed", seed, 4, 0), seed.Has)
	stores := make([]*Store, 3)
	for i := range stores {
		stores[i] = bounded(false)
		net.add(newStorePeer(peerName(i), stores[i], 4, 0), stores[i].Has)
	}
	fetchAll(t, net, src, id, stores, FetchOptions{Poll: 10 * time.Millisecond})
	for i, s := range append([]*Store{seed}, stores...) {
		if n := s.open.Load(); n > 2 || n < 0 {
			t.Errorf("store %d: %d files open, bound 2", i, n)
		}
	}
	// Every shard read again, through files closed and reopened.
	m, _ := seed.manifest(id)
	for _, s := range stores {
		for _, sh := range m.Shards {
			buf := make([]byte, sh.BlockSize)
			for b := range sh.Blocks {
				n, err := s.ReadBlock(sh.Hash, b, buf)
				if err != nil || sh.CheckBlock(b, buf[:n]) != nil {
					t.Fatalf("shard %s block %d: %v", sh.Hash.Short(), b, err)
				}
			}
			if n := s.open.Load(); n > 2 {
				t.Fatalf("%d files open after a read, bound 2", n)
			}
		}
	}
}
