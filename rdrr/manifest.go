package rdrr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/doppler-llm/doppler/rdrr/dtype"
)

// Format is the manifest format this package reads and writes.
const Format = "rdrr/1"

// File names inside an RDRR directory.
const (
	ManifestFile  = "manifest.json"
	SignatureFile = "manifest.sig"
)

// Defaults for writing.
const (
	DefaultShardSize = 64 << 20
	DefaultBlockSize = 1 << 20
	MaxBlockSize     = 1 << 20
	MinBlockSize     = 1 << 10
	Alignment        = 256
	// MaxManifestSize bounds what a reader accepts.
	MaxManifestSize = 256 << 20
)

// ErrManifest is wrapped by every error about an invalid manifest.
var ErrManifest = errors.New("invalid manifest")

// Manifest is the root of trust of a model: its configuration, tokenizer and
// the tables that locate and verify every byte of every tensor.
type Manifest struct {
	Format    string     `json:"format"`
	Name      string     `json:"name,omitempty"`
	Config    Config     `json:"config"`
	Tokenizer *Tokenizer `json:"tokenizer,omitempty"`
	Tensors   []Tensor   `json:"tensors"`
	Shards    []Shard    `json:"shards"`
	Experts   []Expert   `json:"experts,omitempty"`
	Source    *Source    `json:"source,omitempty"`
}

// Source records where a model was converted from (informational).
type Source struct {
	Format string `json:"format"` // "gguf" or "safetensors"
	File   string `json:"file,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

// Tensor locates one tensor. Shape is outermost first (row-major, as numpy
// and safetensors write it): a GGUF tensor with ne = [in, out] has shape
// [out, in]. A tensor in one piece has Shard/Offset/Size; one that crosses
// shards, or an expert tensor, has Spans instead.
type Tensor struct {
	Name  string      `json:"name"`
	DType dtype.DType `json:"dtype"`
	Shape []int64     `json:"shape"`
	Size  int64       `json:"size"`
	// Shard and Offset locate a tensor stored in one piece.
	Shard  int   `json:"shard"`
	Offset int64 `json:"offset"`
	// Spans, when present, are the pieces in order; their sizes add up to Size.
	Spans []Span `json:"spans,omitempty"`
	// Experts > 0 marks an expert tensor: the outermost dimension is the
	// expert, and expert e's slice is the spans whose Expert is e.
	Experts int `json:"experts,omitempty"`
}

// Span is one contiguous piece of a tensor inside one shard.
type Span struct {
	Shard  int   `json:"shard"`
	Offset int64 `json:"offset"`
	Size   int64 `json:"size"`
	Expert int   `json:"expert,omitempty"`
}

// Shard describes one shard file: its SHA-256 (also its file name), size,
// block size, the SHA-256 of every block and the Merkle root over them.
type Shard struct {
	Hash      Hash   `json:"hash"`
	Size      int64  `json:"size"`
	BlockSize int64  `json:"block_size"`
	Blocks    []Hash `json:"blocks"`
	Root      Hash   `json:"root"`
}

// Expert maps one MoE expert to the shards that hold all its tensors.
type Expert struct {
	Layer  int   `json:"layer"`
	Expert int   `json:"expert"`
	Shards []int `json:"shards"`
}

// NumBlocks returns the number of blocks of a shard of the given size.
func NumBlocks(size, blockSize int64) int {
	if size == 0 {
		return 1
	}
	return int((size + blockSize - 1) / blockSize)
}

// Pieces returns the spans of t, whether stored whole or in spans.
func (t *Tensor) Pieces() []Span {
	if len(t.Spans) > 0 {
		return t.Spans
	}
	return []Span{{Shard: t.Shard, Offset: t.Offset, Size: t.Size}}
}

// Elements returns the number of values of t.
func (t *Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Encode returns the canonical bytes of m: JSON with sorted keys, no
// insignificant whitespace and no HTML escaping. The model ID is their hash.
func (m *Manifest) Encode() ([]byte, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return Canonicalize(raw)
}

// Canonicalize rewrites JSON into the canonical form: object keys sorted,
// no whitespace, numbers exactly as written, no HTML escaping.
func Canonicalize(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ParseManifest parses and validates manifest bytes. It rejects bytes that
// are not in canonical form, so that one model has exactly one ID.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrManifest, len(b), MaxManifestSize)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrManifest)
	}
	canon, err := m.Encode()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w: not in canonical form (sorted keys, no whitespace, every field as written by doppler); was it edited by hand?", ErrManifest)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the manifest's internal consistency: every tensor lies
// inside its shards, spans are ordered and add up, block lists match shard
// sizes and roots.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrManifest, fmt.Sprintf(format, args...))
	}
	if m.Format != Format {
		return bad("format %q, want %q", m.Format, Format)
	}
	if err := m.Config.Validate(); err != nil {
		return bad("config: %v", err)
	}
	seen := make(map[Hash]bool, len(m.Shards))
	for i, s := range m.Shards {
		if seen[s.Hash] {
			return bad("shard %d (%s) listed twice", i, s.Hash.Short())
		}
		seen[s.Hash] = true
		if s.BlockSize < MinBlockSize || s.BlockSize > MaxBlockSize || s.BlockSize&(s.BlockSize-1) != 0 {
			return bad("shard %s: block size %d is not a power of two in [%d, %d]", s.Hash.Short(), s.BlockSize, MinBlockSize, MaxBlockSize)
		}
		if s.Size < 0 || len(s.Blocks) != NumBlocks(s.Size, s.BlockSize) {
			return bad("shard %s: %d block hashes for %d bytes", s.Hash.Short(), len(s.Blocks), s.Size)
		}
		if MerkleRoot(s.Blocks) != s.Root {
			return bad("shard %s: Merkle root does not match its block hashes", s.Hash.Short())
		}
	}
	names := make(map[string]bool, len(m.Tensors))
	for i := range m.Tensors {
		t := &m.Tensors[i]
		if t.Name == "" || names[t.Name] {
			return bad("tensor %d: empty or duplicate name %q", i, t.Name)
		}
		names[t.Name] = true
		if !t.DType.Valid() {
			return bad("tensor %s: unknown dtype", t.Name)
		}
		if len(t.Shape) == 0 || len(t.Shape) > 4 {
			return bad("tensor %s: shape %v", t.Name, t.Shape)
		}
		for _, d := range t.Shape {
			if d <= 0 {
				return bad("tensor %s: shape %v", t.Name, t.Shape)
			}
		}
		want, err := t.DType.RowBytes(int(t.Shape[len(t.Shape)-1]))
		if err != nil {
			return bad("tensor %s: %v", t.Name, err)
		}
		if int64(want)*(t.Elements()/t.Shape[len(t.Shape)-1]) != t.Size {
			return bad("tensor %s: size %d does not match %s%v", t.Name, t.Size, t.DType, t.Shape)
		}
		var sum int64
		for _, p := range t.Pieces() {
			if p.Shard < 0 || p.Shard >= len(m.Shards) {
				return bad("tensor %s: shard index %d out of range", t.Name, p.Shard)
			}
			if p.Offset < 0 || p.Size <= 0 || p.Offset+p.Size > m.Shards[p.Shard].Size {
				return bad("tensor %s: span [%d, %d) outside shard %d of %d bytes", t.Name, p.Offset, p.Offset+p.Size, p.Shard, m.Shards[p.Shard].Size)
			}
			sum += p.Size
		}
		if sum != t.Size {
			return bad("tensor %s: spans add up to %d bytes, want %d", t.Name, sum, t.Size)
		}
		if t.Experts > 0 {
			if t.Shape[0] != int64(t.Experts) || t.Size%int64(t.Experts) != 0 {
				return bad("tensor %s: %d experts do not divide shape %v", t.Name, t.Experts, t.Shape)
			}
			last := -1
			for _, p := range t.Spans {
				if p.Expert < last || p.Expert >= t.Experts {
					return bad("tensor %s: expert spans out of order", t.Name)
				}
				last = p.Expert
			}
		}
	}
	for _, e := range m.Experts {
		for _, s := range e.Shards {
			if s < 0 || s >= len(m.Shards) {
				return bad("expert (%d, %d): shard index %d out of range", e.Layer, e.Expert, s)
			}
		}
	}
	return nil
}

// Tensor returns the named tensor.
func (m *Manifest) Tensor(name string) (*Tensor, bool) {
	for i := range m.Tensors {
		if m.Tensors[i].Name == name {
			return &m.Tensors[i], true
		}
	}
	return nil, false
}

// TotalSize is the sum of all shard sizes.
func (m *Manifest) TotalSize() int64 {
	var n int64
	for _, s := range m.Shards {
		n += s.Size
	}
	return n
}

// DTypeCounts returns how many tensors use each dtype, sorted by name.
func (m *Manifest) DTypeCounts() []DTypeCount {
	counts := map[dtype.DType]int{}
	for _, t := range m.Tensors {
		counts[t.DType]++
	}
	out := make([]DTypeCount, 0, len(counts))
	for d, n := range counts {
		out = append(out, DTypeCount{d, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DType < out[j].DType })
	return out
}

// DTypeCount is one row of DTypeCounts.
type DTypeCount struct {
	DType dtype.DType
	Count int
}
