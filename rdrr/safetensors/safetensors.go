// Package safetensors reads the header and tensors of .safetensors files.
//
// Format: an 8-byte little-endian header length N, N bytes of JSON mapping
// tensor names to {dtype, shape, data_offsets: [begin, end)} relative to the
// data section that follows, plus an optional "__metadata__" object.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
)

// MaxHeaderSize bounds the JSON header a file may declare.
const MaxHeaderSize = 100 << 20

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("malformed safetensors")

// Tensor is one header entry.
type Tensor struct {
	Name   string
	DType  string // "F32", "F16", "BF16", "I8", …
	Shape  []int64
	Offset int64 // absolute offset in the file
	Size   int64
}

// File is an open safetensors file.
type File struct {
	Path     string
	Tensors  []Tensor // sorted by Offset
	Metadata map[string]string
	f        *os.File
}

var dtypeSize = map[string]int64{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
	"F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}

// Open parses the header of the file at path.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, err
	}
	f, err := parse(fh, st.Size())
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.Path, f.f = path, fh
	return f, nil
}

func parse(r io.ReaderAt, size int64) (*File, error) {
	var hb [8]byte
	if _, err := r.ReadAt(hb[:], 0); err != nil {
		return nil, fmt.Errorf("%w: file too short for a header", ErrFormat)
	}
	n := binary.LittleEndian.Uint64(hb[:])
	if n < 2 || n > MaxHeaderSize || int64(n) > size-8 {
		return nil, fmt.Errorf("%w: header length %d does not fit the %d-byte file", ErrFormat, n, size)
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, fmt.Errorf("%w: reading header: %v", ErrFormat, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("%w: header is not a JSON object: %v", ErrFormat, err)
	}
	data := int64(8 + n)
	f := &File{}
	for name, v := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(v, &f.Metadata); err != nil {
				return nil, fmt.Errorf("%w: __metadata__: %v", ErrFormat, err)
			}
			continue
		}
		var e struct {
			DType   string  `json:"dtype"`
			Shape   []int64 `json:"shape"`
			Offsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrFormat, name, err)
		}
		es, ok := dtypeSize[e.DType]
		if !ok {
			return nil, fmt.Errorf("%w: tensor %q: unknown dtype %q", ErrFormat, name, e.DType)
		}
		if len(e.Offsets) != 2 || e.Offsets[0] < 0 || e.Offsets[1] < e.Offsets[0] {
			return nil, fmt.Errorf("%w: tensor %q: bad data_offsets %v", ErrFormat, name, e.Offsets)
		}
		elems := int64(1)
		for _, d := range e.Shape {
			if d < 0 || (d > 0 && elems > (1<<50)/d) {
				return nil, fmt.Errorf("%w: tensor %q: bad shape %v", ErrFormat, name, e.Shape)
			}
			elems *= d
		}
		t := Tensor{Name: name, DType: e.DType, Shape: e.Shape, Offset: data + e.Offsets[0], Size: e.Offsets[1] - e.Offsets[0]}
		if t.Size != elems*es {
			return nil, fmt.Errorf("%w: tensor %q: %d bytes for %s%v", ErrFormat, name, t.Size, e.DType, e.Shape)
		}
		if e.Offsets[1] > size-data { // t.Offset+t.Size, which may overflow
			return nil, fmt.Errorf("%w: tensor %q runs past the end of the file; truncated?", ErrFormat, name)
		}
		f.Tensors = append(f.Tensors, t)
	}
	sort.Slice(f.Tensors, func(i, j int) bool { return f.Tensors[i].Offset < f.Tensors[j].Offset })
	return f, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Reader returns a reader over t's bytes.
func (f *File) Reader(t *Tensor) *io.SectionReader { return io.NewSectionReader(f.f, t.Offset, t.Size) }

// Read returns t's bytes.
func (f *File) Read(t *Tensor) ([]byte, error) {
	b := make([]byte, t.Size)
	if _, err := io.ReadFull(f.Reader(t), b); err != nil {
		return nil, fmt.Errorf("%s: tensor %s: %w", f.Path, t.Name, err)
	}
	return b, nil
}
