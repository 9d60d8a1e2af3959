package rdrr

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/doppler-llm/doppler/rdrr/dtype"
)

// WriterOptions sets how a Writer cuts shards.
type WriterOptions struct {
	ShardSize int64 // 0 = DefaultShardSize
	BlockSize int64 // 0 = DefaultBlockSize; a power of two in [MinBlockSize, MaxBlockSize]
}

func (o *WriterOptions) fill() error {
	if o.ShardSize == 0 {
		o.ShardSize = DefaultShardSize
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < MinBlockSize || o.BlockSize > MaxBlockSize || o.BlockSize&(o.BlockSize-1) != 0 {
		return fmt.Errorf("block size %d is not a power of two in [%d, %d]", o.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if o.ShardSize < o.BlockSize || o.ShardSize < Alignment {
		return fmt.Errorf("shard size %d is smaller than the block size %d", o.ShardSize, o.BlockSize)
	}
	return nil
}

// Writer writes tensors into shards in a directory. Dense tensors are packed
// in order and span shards when they do not fit; each MoE expert's slices go
// into shards of their own. Finish writes the manifest.
type Writer struct {
	dir     string
	opts    WriterOptions
	shards  []Shard
	tensors []Tensor
	index   map[string]int
	experts []Expert
	cur     *shardFile
	group   *Expert // the expert whose shards are being written, if any
}

// NewWriter writes shards into dir, which must exist.
func NewWriter(dir string, opts WriterOptions) (*Writer, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	return &Writer{dir: dir, opts: opts, index: map[string]int{}}, nil
}

// AddTensor writes a dense tensor of size bytes read from r.
func (w *Writer) AddTensor(name string, dt dtype.DType, shape []int64, r io.Reader) error {
	if w.group != nil {
		return fmt.Errorf("tensor %s: dense tensor inside expert group", name)
	}
	t, err := w.newTensor(name, dt, shape, 0)
	if err != nil {
		return err
	}
	spans, err := w.write(r, t.Size, 0)
	if err != nil {
		return fmt.Errorf("tensor %s: %w", name, err)
	}
	if len(spans) == 1 {
		t.Shard, t.Offset = spans[0].Shard, spans[0].Offset
	} else {
		t.Spans = spans
	}
	return nil
}

// DeclareExpertTensor registers a tensor whose outermost dimension is the
// expert; its slices are written later with AddExpertSlice.
func (w *Writer) DeclareExpertTensor(name string, dt dtype.DType, shape []int64) error {
	_, err := w.newTensor(name, dt, shape, int(shape[0]))
	return err
}

// BeginExpert starts the shards of one expert.
func (w *Writer) BeginExpert(layer, expert int) error {
	if w.group != nil {
		return errors.New("BeginExpert inside an expert group")
	}
	if err := w.closeShard(); err != nil {
		return err
	}
	w.group = &Expert{Layer: layer, Expert: expert}
	return nil
}

// AddExpertSlice writes the current expert's slice of a declared expert tensor.
func (w *Writer) AddExpertSlice(name string, r io.Reader) error {
	if w.group == nil {
		return fmt.Errorf("tensor %s: expert slice outside an expert group", name)
	}
	i, ok := w.index[name]
	if !ok || w.tensors[i].Experts == 0 {
		return fmt.Errorf("tensor %s: not a declared expert tensor", name)
	}
	t := &w.tensors[i]
	spans, err := w.write(r, t.Size/int64(t.Experts), w.group.Expert)
	if err != nil {
		return fmt.Errorf("tensor %s expert %d: %w", name, w.group.Expert, err)
	}
	t.Spans = append(t.Spans, spans...)
	for _, s := range spans {
		if n := len(w.group.Shards); n == 0 || w.group.Shards[n-1] != s.Shard {
			w.group.Shards = append(w.group.Shards, s.Shard)
		}
	}
	return nil
}

// EndExpert closes the current expert's shards.
func (w *Writer) EndExpert() error {
	if w.group == nil {
		return errors.New("EndExpert outside an expert group")
	}
	if err := w.closeShard(); err != nil {
		return err
	}
	w.experts = append(w.experts, *w.group)
	w.group = nil
	return nil
}

// Finish closes the last shard, completes m with the tensor, shard and
// expert tables, and writes manifest.json. It returns the model ID.
func (w *Writer) Finish(m *Manifest) (ModelID, error) {
	if w.group != nil {
		return ModelID{}, errors.New("Finish inside an expert group")
	}
	if err := w.closeShard(); err != nil {
		return ModelID{}, err
	}
	for _, t := range w.tensors {
		if t.Experts > 0 {
			var sum int64
			for _, s := range t.Spans {
				sum += s.Size
			}
			if sum != t.Size {
				return ModelID{}, fmt.Errorf("tensor %s: %d of %d bytes of expert slices written", t.Name, sum, t.Size)
			}
		}
	}
	m.Format = Format
	m.Tensors, m.Shards, m.Experts = w.tensors, w.shards, w.experts
	if err := m.Validate(); err != nil {
		return ModelID{}, err
	}
	b, err := m.Encode()
	if err != nil {
		return ModelID{}, err
	}
	if err := WriteFileAtomic(filepath.Join(w.dir, ManifestFile), b); err != nil {
		return ModelID{}, err
	}
	return Sum(b), nil
}

// Abort removes partially written shard files.
func (w *Writer) Abort() {
	if w.cur != nil {
		w.cur.f.Close()
		os.Remove(w.cur.f.Name())
		w.cur = nil
	}
}

func (w *Writer) newTensor(name string, dt dtype.DType, shape []int64, experts int) (*Tensor, error) {
	if _, dup := w.index[name]; dup {
		return nil, fmt.Errorf("tensor %s written twice", name)
	}
	if len(shape) == 0 {
		return nil, fmt.Errorf("tensor %s: empty shape", name)
	}
	n := int64(1)
	for _, d := range shape {
		if d <= 0 {
			return nil, fmt.Errorf("tensor %s: shape %v", name, shape)
		}
		n *= d
	}
	row, err := dt.RowBytes(int(shape[len(shape)-1]))
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	size := int64(row) * (n / shape[len(shape)-1])
	w.index[name] = len(w.tensors)
	w.tensors = append(w.tensors, Tensor{Name: name, DType: dt, Shape: shape, Size: size, Experts: experts})
	return &w.tensors[len(w.tensors)-1], nil
}

// write copies size bytes from r into shards, starting aligned, spilling
// into new shards as needed.
func (w *Writer) write(r io.Reader, size int64, expert int) ([]Span, error) {
	var spans []Span
	for size > 0 {
		if w.cur != nil && w.cur.aligned() >= w.opts.ShardSize {
			if err := w.closeShard(); err != nil {
				return nil, err
			}
		}
		if w.cur == nil {
			if err := w.openShard(); err != nil {
				return nil, err
			}
		}
		if err := w.cur.pad(); err != nil {
			return nil, err
		}
		n := min(size, w.opts.ShardSize-w.cur.size)
		span := Span{Shard: len(w.shards), Offset: w.cur.size, Size: n, Expert: expert}
		if _, err := io.CopyN(w.cur, r, n); err != nil {
			return nil, fmt.Errorf("read tensor data: %w", err)
		}
		spans = append(spans, span)
		size -= n
	}
	return spans, nil
}

func (w *Writer) openShard() error {
	f, err := os.CreateTemp(w.dir, ".shard-*")
	if err != nil {
		return err
	}
	w.cur = &shardFile{f: f, whole: sha256.New(), block: sha256.New(), blockSize: w.opts.BlockSize}
	return nil
}

func (w *Writer) closeShard() error {
	sf := w.cur
	if sf == nil {
		return nil
	}
	w.cur = nil
	s, err := sf.finish()
	if err != nil {
		os.Remove(sf.f.Name())
		return err
	}
	if err := os.Rename(sf.f.Name(), filepath.Join(w.dir, s.Hash.String())); err != nil {
		return err
	}
	for i := range w.shards {
		if w.shards[i].Hash == s.Hash {
			// Identical content (tied experts, say): one file, one entry.
			w.remapShard(len(w.shards), i)
			return nil
		}
	}
	w.shards = append(w.shards, s)
	return nil
}

// remapShard points every reference to shard index from at index to.
func (w *Writer) remapShard(from, to int) {
	for i := range w.tensors {
		t := &w.tensors[i]
		if len(t.Spans) == 0 && t.Shard == from && t.Size > 0 {
			t.Shard = to
		}
		for j := range t.Spans {
			if t.Spans[j].Shard == from {
				t.Spans[j].Shard = to
			}
		}
	}
	if w.group != nil {
		for j, s := range w.group.Shards {
			if s == from {
				w.group.Shards[j] = to
			}
		}
	}
}

// shardFile hashes a shard as it is written: the whole file and each block.
type shardFile struct {
	f         *os.File
	whole     hash.Hash
	block     hash.Hash
	blockSize int64
	inBlock   int64
	size      int64
	blocks    []Hash
}

func (s *shardFile) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(int64(len(p)), s.blockSize-s.inBlock)
		if _, err := s.f.Write(p[:k]); err != nil {
			return n, err
		}
		s.whole.Write(p[:k])
		s.block.Write(p[:k])
		s.inBlock += k
		s.size += k
		n += int(k)
		p = p[k:]
		if s.inBlock == s.blockSize {
			s.endBlock()
		}
	}
	return n, nil
}

func (s *shardFile) endBlock() {
	var h Hash
	s.block.Sum(h[:0])
	s.blocks = append(s.blocks, h)
	s.block.Reset()
	s.inBlock = 0
}

func (s *shardFile) aligned() int64 { return (s.size + Alignment - 1) / Alignment * Alignment }

func (s *shardFile) pad() error {
	var zero [Alignment]byte
	_, err := s.Write(zero[:s.aligned()-s.size])
	return err
}

func (s *shardFile) finish() (Shard, error) {
	if s.inBlock > 0 || len(s.blocks) == 0 {
		s.endBlock()
	}
	if err := s.f.Sync(); err != nil {
		s.f.Close()
		return Shard{}, err
	}
	if err := s.f.Close(); err != nil {
		return Shard{}, err
	}
	var h Hash
	s.whole.Sum(h[:0])
	return Shard{Hash: h, Size: s.size, BlockSize: s.blockSize, Blocks: s.blocks, Root: MerkleRoot(s.blocks)}, nil
}

// WriteFileAtomic writes a file through a temporary name in the same
// directory, syncs it and renames it into place: readers see the old file
// or the whole new one, never a part.
func WriteFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
