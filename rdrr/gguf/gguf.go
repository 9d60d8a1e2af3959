package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/doppler-llm/doppler/rdrr/dtype"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the tensor-data alignment when general.alignment is absent.
const DefaultAlignment = 32

// Bounds on what a header may ask us to allocate.
const (
	maxStringLen = 64 << 20 // one string (a chat template, a merge)
	maxArrayLen  = 1 << 26  // elements of one array (vocabularies are ~256k)
	maxKV        = 1 << 20
	maxTensors   = 1 << 20
	maxDims      = 4
)

// ErrFormat is wrapped by every error about a malformed file.
var ErrFormat = errors.New("malformed GGUF")

// ValueType is a GGUF metadata value type.
type ValueType uint32

// GGUF metadata value types.
const (
	TypeUint8 ValueType = iota
	TypeInt8
	TypeUint16
	TypeInt16
	TypeUint32
	TypeInt32
	TypeFloat32
	TypeBool
	TypeString
	TypeArray
	TypeUint64
	TypeInt64
	TypeFloat64
)

// KV is one metadata entry. Value holds a Go value: uint8…int64, float32,
// float64, bool, string, or a slice of one of those ([]string, []float32, …).
type KV struct {
	Key   string
	Type  ValueType
	Value any
}

// TensorInfo describes one tensor. Dims are in GGML order: Dims[0] is the
// innermost (contiguous) dimension.
type TensorInfo struct {
	Name   string
	Dims   []uint64
	GGML   uint32      // raw ggml_type
	DType  dtype.DType // Invalid when GGML is a type DOPPLER does not support
	Offset uint64      // relative to the start of the data section
	Size   uint64      // bytes, valid when DType is valid
}

// Elements returns the number of values in the tensor.
func (t *TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF header. Tensor bytes are read on demand.
type File struct {
	Path       string
	Version    uint32
	KV         []KV
	Tensors    []TensorInfo
	Alignment  uint64
	DataOffset int64 // absolute offset of the tensor data section
	FileSize   int64

	kv     map[string]int
	tensor map[string]int
	r      io.ReaderAt
	closer io.Closer
}

// Open parses the GGUF file at path. The file stays open for ReadTensor
// until Close.
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
	f, err := Parse(fh, st.Size())
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.Path = path
	f.closer = fh
	return f, nil
}

// Close closes the underlying file, if Open opened it.
func (f *File) Close() error {
	if f.closer != nil {
		return f.closer.Close()
	}
	return nil
}

// Parse reads a GGUF header from r, whose total size is size bytes.
func Parse(r io.ReaderAt, size int64) (*File, error) {
	d := &decoder{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<16), size: size}
	var magic [4]byte
	d.read(magic[:])
	if d.err != nil {
		return nil, fmt.Errorf("%w: file too short for a GGUF header", ErrFormat)
	}
	if string(magic[:]) != Magic {
		return nil, fmt.Errorf("%w: bad magic %q, want %q", ErrFormat, magic[:], Magic)
	}
	f := &File{Version: d.u32(), FileSize: size, r: r, Alignment: DefaultAlignment}
	if d.err == nil && f.Version != 2 && f.Version != 3 {
		return nil, fmt.Errorf("%w: unsupported GGUF version %d (want 2 or 3)", ErrFormat, f.Version)
	}
	nTensors, nKV := d.u64(), d.u64()
	if d.err != nil {
		return nil, d.fail("header")
	}
	if nTensors > maxTensors || nKV > maxKV {
		return nil, fmt.Errorf("%w: implausible counts: %d tensors, %d metadata keys", ErrFormat, nTensors, nKV)
	}
	f.kv = make(map[string]int, nKV)
	for i := uint64(0); i < nKV; i++ {
		key := d.str()
		typ := ValueType(d.u32())
		val := d.value(typ, 0)
		if d.err != nil {
			return nil, d.fail(fmt.Sprintf("metadata entry %d (%q)", i, key))
		}
		if _, dup := f.kv[key]; dup {
			return nil, fmt.Errorf("%w: duplicate metadata key %q", ErrFormat, key)
		}
		f.kv[key] = len(f.KV)
		f.KV = append(f.KV, KV{Key: key, Type: typ, Value: val})
	}
	if v, ok := f.Uint("general.alignment"); ok {
		if v == 0 || v&(v-1) != 0 || v > 1<<20 {
			return nil, fmt.Errorf("%w: general.alignment %d is not a power of two", ErrFormat, v)
		}
		f.Alignment = v
	}
	f.tensor = make(map[string]int, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		t := TensorInfo{Name: d.str()}
		nd := d.u32()
		if d.err == nil && (nd == 0 || nd > maxDims) {
			return nil, fmt.Errorf("%w: tensor %q has %d dimensions", ErrFormat, t.Name, nd)
		}
		for j := uint32(0); j < nd && d.err == nil; j++ {
			t.Dims = append(t.Dims, d.u64())
		}
		t.GGML = d.u32()
		t.Offset = d.u64()
		if d.err != nil {
			return nil, d.fail(fmt.Sprintf("tensor info %d", i))
		}
		if err := f.checkTensor(&t); err != nil {
			return nil, err
		}
		if _, dup := f.tensor[t.Name]; dup {
			return nil, fmt.Errorf("%w: duplicate tensor %q", ErrFormat, t.Name)
		}
		f.tensor[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}
	pos := d.pos
	f.DataOffset = int64(alignUp(uint64(pos), f.Alignment))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if !t.DType.Valid() {
			continue
		}
		if t.Offset%f.Alignment != 0 {
			return nil, fmt.Errorf("%w: tensor %q offset %d is not aligned to %d", ErrFormat, t.Name, t.Offset, f.Alignment)
		}
		end := uint64(f.DataOffset) + t.Offset + t.Size
		if end < t.Offset || end > uint64(size) {
			return nil, fmt.Errorf("%w: tensor %q data [%d, %d) runs past the end of the file (%d bytes); truncated?",
				ErrFormat, t.Name, uint64(f.DataOffset)+t.Offset, end, size)
		}
	}
	return f, nil
}

func (f *File) checkTensor(t *TensorInfo) error {
	n := uint64(1)
	for _, d := range t.Dims {
		if d == 0 || d > 1<<40 || n > (1<<50)/d {
			return fmt.Errorf("%w: tensor %q has bad shape %v", ErrFormat, t.Name, t.Dims)
		}
		n *= d
	}
	dt, ok := dtype.FromGGML(t.GGML)
	if !ok {
		// Unknown types are reported when the tensor is used, so that
		// inspect can still list the file.
		return nil
	}
	if t.Dims[0]%uint64(dt.BlockSize()) != 0 {
		return fmt.Errorf("%w: tensor %q (%s): row of %d values is not a multiple of the block size %d",
			ErrFormat, t.Name, dt, t.Dims[0], dt.BlockSize())
	}
	t.DType = dt
	t.Size = n / uint64(dt.BlockSize()) * uint64(dt.BlockBytes())
	return nil
}

// ErrUnknownType is returned when a tensor's ggml type is not supported.
var ErrUnknownType = errors.New("unsupported tensor type")

// Tensor returns the info of the named tensor.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tensor[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorReader returns a reader over the named tensor's bytes.
func (f *File) TensorReader(t *TensorInfo) (*io.SectionReader, error) {
	if !t.DType.Valid() {
		return nil, fmt.Errorf("tensor %q: %w: ggml type %d", t.Name, ErrUnknownType, t.GGML)
	}
	return io.NewSectionReader(f.r, f.DataOffset+int64(t.Offset), int64(t.Size)), nil
}

// ReadTensor reads the named tensor's raw bytes.
func (f *File) ReadTensor(t *TensorInfo) ([]byte, error) {
	sr, err := f.TensorReader(t)
	if err != nil {
		return nil, err
	}
	b := make([]byte, t.Size)
	if _, err := io.ReadFull(sr, b); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return b, nil
}

func alignUp(x, a uint64) uint64 { return (x + a - 1) / a * a }

type decoder struct {
	r    *bufio.Reader
	size int64
	pos  int64
	err  error
	buf  [8]byte
}

func (d *decoder) fail(what string) error {
	if errors.Is(d.err, io.EOF) || errors.Is(d.err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated in %s at byte %d", ErrFormat, what, d.pos)
	}
	return fmt.Errorf("%w: %s: %v", ErrFormat, what, d.err)
}

func (d *decoder) read(b []byte) {
	if d.err != nil {
		return
	}
	n, err := io.ReadFull(d.r, b)
	d.pos += int64(n)
	d.err = err
}

func (d *decoder) u8() uint8   { d.read(d.buf[:1]); return d.buf[0] }
func (d *decoder) u16() uint16 { d.read(d.buf[:2]); return binary.LittleEndian.Uint16(d.buf[:2]) }
func (d *decoder) u32() uint32 { d.read(d.buf[:4]); return binary.LittleEndian.Uint32(d.buf[:4]) }
func (d *decoder) u64() uint64 { d.read(d.buf[:8]); return binary.LittleEndian.Uint64(d.buf[:8]) }

func (d *decoder) str() string {
	n := d.u64()
	if d.err != nil {
		return ""
	}
	if n > maxStringLen || int64(n) > d.size-d.pos {
		d.err = fmt.Errorf("string of %d bytes at byte %d exceeds the file or the %d-byte limit", n, d.pos, maxStringLen)
		return ""
	}
	b := make([]byte, n)
	d.read(b)
	return string(b)
}

func (d *decoder) value(t ValueType, depth int) any {
	switch t {
	case TypeUint8:
		return d.u8()
	case TypeInt8:
		return int8(d.u8())
	case TypeUint16:
		return d.u16()
	case TypeInt16:
		return int16(d.u16())
	case TypeUint32:
		return d.u32()
	case TypeInt32:
		return int32(d.u32())
	case TypeFloat32:
		return math.Float32frombits(d.u32())
	case TypeBool:
		return d.u8() != 0
	case TypeString:
		return d.str()
	case TypeUint64:
		return d.u64()
	case TypeInt64:
		return int64(d.u64())
	case TypeFloat64:
		return math.Float64frombits(d.u64())
	case TypeArray:
		if depth > 0 {
			d.setErr(fmt.Errorf("nested arrays are not supported"))
			return nil
		}
		et := ValueType(d.u32())
		n := d.u64()
		if d.err != nil {
			return nil
		}
		// Each element takes at least one byte, so n is bounded by what is left.
		if n > maxArrayLen || int64(n) > d.size-d.pos {
			d.setErr(fmt.Errorf("array of %d elements exceeds the file or the %d-element limit", n, maxArrayLen))
			return nil
		}
		return d.array(et, int(n))
	default:
		d.setErr(fmt.Errorf("unknown value type %d", t))
		return nil
	}
}

func (d *decoder) setErr(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) array(et ValueType, n int) any {
	switch et {
	case TypeString:
		out := make([]string, 0, min(n, 1<<16))
		for i := 0; i < n && d.err == nil; i++ {
			out = append(out, d.str())
		}
		return out
	case TypeFloat32:
		return arrayOf(d, n, func() float32 { return math.Float32frombits(d.u32()) })
	case TypeInt32:
		return arrayOf(d, n, func() int32 { return int32(d.u32()) })
	case TypeUint32:
		return arrayOf(d, n, d.u32)
	case TypeUint8:
		return arrayOf(d, n, d.u8)
	case TypeInt8:
		return arrayOf(d, n, func() int8 { return int8(d.u8()) })
	case TypeUint16:
		return arrayOf(d, n, d.u16)
	case TypeInt16:
		return arrayOf(d, n, func() int16 { return int16(d.u16()) })
	case TypeUint64:
		return arrayOf(d, n, d.u64)
	case TypeInt64:
		return arrayOf(d, n, func() int64 { return int64(d.u64()) })
	case TypeFloat64:
		return arrayOf(d, n, func() float64 { return math.Float64frombits(d.u64()) })
	case TypeBool:
		return arrayOf(d, n, func() bool { return d.u8() != 0 })
	default:
		d.setErr(fmt.Errorf("unknown array element type %d", et))
		return nil
	}
}

func arrayOf[T any](d *decoder, n int, next func() T) []T {
	out := make([]T, 0, min(n, 1<<16))
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, next())
	}
	return out
}
