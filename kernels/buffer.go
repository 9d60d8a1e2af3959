//go:build cgo || js

package kernels

import (
	"fmt"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/oliverbestmann/webgpu/wgpu"
)

const storageUsage = wgpu.BufferUsageStorage | wgpu.BufferUsageCopySrc | wgpu.BufferUsageCopyDst

// Buffer is a GPU storage buffer (usable as storage, copy source and copy
// destination). Its size is a multiple of 4.
type Buffer struct {
	d        *Device
	buf      *wgpu.Buffer
	label    string
	size     uint64 // what was asked for, rounded up to 4
	cap      uint64 // what was allocated (≥ size for scratch buffers)
	scratch  bool
	released atomic.Bool
}

// BufferRange is a byte range of a buffer to bind. Size 0 means "to the
// end". Offset must be a multiple of Limits().MinStorageOffsetAlignment.
type BufferRange struct {
	Buf          *Buffer
	Offset, Size uint64
}

// Whole binds all of b.
func Whole(b *Buffer) BufferRange { return BufferRange{Buf: b} }

// size resolves Size 0.
func (r BufferRange) size() uint64 {
	if r.Size == 0 && r.Buf != nil && r.Offset < r.Buf.size {
		return r.Buf.size - r.Offset
	}
	return r.Size
}

func round4(n uint64) uint64 { return (n + 3) &^ 3 }

// sizeClass is the pooled capacity for a request of n bytes.
func sizeClass(n uint64) uint64 {
	if n <= 256 {
		return 256
	}
	return 1 << bits.Len64(n-1)
}

// NewBuffer allocates a zeroed storage buffer of size bytes (rounded up to 4).
func (d *Device) NewBuffer(label string, size uint64) (*Buffer, error) {
	size = max(round4(size), 4)
	return d.newBuffer(label, size, size)
}

func (d *Device) newBuffer(label string, size, capacity uint64) (*Buffer, error) {
	if capacity > d.limits.MaxBufferSize {
		return nil, fmt.Errorf("kernels: buffer %q: %d bytes exceeds the device's max buffer size %d", label, capacity, d.limits.MaxBufferSize)
	}
	var buf *wgpu.Buffer
	err := d.checked("buffer "+label, func() (err error) {
		d.serial(func() {
			buf, err = d.dev.TryCreateBuffer(&wgpu.BufferDescriptor{Label: label, Size: capacity, Usage: storageUsage})
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("kernels: create buffer %q (%d bytes): %w", label, capacity, err)
	}
	d.allocated.Add(capacity)
	return &Buffer{d: d, buf: buf, label: label, size: size, cap: capacity}, nil
}

// NewBufferInit allocates a buffer holding a copy of data (zero-padded to 4
// bytes). Data is uploaded byte for byte: quantized shards go up as-is.
func (d *Device) NewBufferInit(label string, data []byte) (*Buffer, error) {
	b, err := d.NewBuffer(label, uint64(len(data)))
	if err != nil {
		return nil, err
	}
	if err := d.Write(b, 0, data); err != nil {
		b.Release()
		return nil, err
	}
	return b, nil
}

// Size is the buffer's usable size in bytes.
func (b *Buffer) Size() uint64 { return b.size }

// Label is the name given at creation.
func (b *Buffer) Label() string { return b.label }

// Release frees the buffer's GPU memory. Ops that bind it must not run again.
func (b *Buffer) Release() {
	if b == nil || b.released.Swap(true) {
		return
	}
	b.d.allocated.Add(-b.cap)
	b.d.serial(func() {
		b.buf.Destroy()
		b.buf.Release()
	})
}

// Scratch returns a transient buffer of at least size bytes from the
// device's pool (capacity rounded up to a power of two). Give it back with
// Put once no queued work reads it any more; the queue keeps order, so
// "after the last Submit that uses it" is enough.
func (d *Device) Scratch(size uint64) (*Buffer, error) {
	size = max(round4(size), 4)
	class := sizeClass(size)
	d.mu.Lock()
	if list := d.scratch[class]; len(list) > 0 {
		b := list[len(list)-1]
		d.scratch[class] = list[:len(list)-1]
		d.mu.Unlock()
		b.size = size
		return b, nil
	}
	d.mu.Unlock()
	b, err := d.newBuffer("scratch", size, class)
	if err != nil {
		return nil, err
	}
	b.scratch = true
	return b, nil
}

// Put returns a Scratch buffer to the pool. Any other buffer is released.
func (d *Device) Put(b *Buffer) {
	if b == nil || b.released.Load() {
		return
	}
	if !b.scratch {
		b.Release()
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		b.Release()
		return
	}
	d.scratch[b.cap] = append(d.scratch[b.cap], b)
}

// Write copies data into b at offset (a multiple of 4) through the queue;
// it lands before the next submit. A length that is not a multiple of 4 is
// zero-padded, so the padding bytes of b are overwritten.
func (d *Device) Write(b *Buffer, offset uint64, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if b.released.Load() {
		return fmt.Errorf("kernels: write %q: %w", b.label, ErrReleased)
	}
	n := round4(uint64(len(data)))
	if offset%4 != 0 || offset+n > b.cap {
		return fmt.Errorf("kernels: write %q: [%d, %d) out of range or offset not a multiple of 4 (buffer %d bytes)", b.label, offset, offset+n, b.cap)
	}
	if uint64(len(data)) != n {
		padded := make([]byte, n)
		copy(padded, data)
		data = padded
	}
	if err := d.writeBuffer(b.buf, offset, data); err != nil {
		return fmt.Errorf("kernels: write %q: %w", b.label, err)
	}
	return nil
}

// Read copies size bytes at offset out of b (one submit, then a wait).
func (d *Device) Read(b *Buffer, offset, size uint64) ([]byte, error) {
	return d.NewEncoder().SubmitRead(b, offset, size)
}

// WriteF32 writes float32 values (host order, little-endian on every
// supported target) at a byte offset.
func (d *Device) WriteF32(b *Buffer, offset uint64, v []float32) error {
	return d.Write(b, offset, asBytes(v))
}

// WriteU32 writes uint32 values at a byte offset.
func (d *Device) WriteU32(b *Buffer, offset uint64, v []uint32) error {
	return d.Write(b, offset, asBytes(v))
}

// ReadF32 reads n float32 values at a byte offset.
func (d *Device) ReadF32(b *Buffer, offset uint64, n int) ([]float32, error) {
	raw, err := d.Read(b, offset, uint64(n)*4)
	if err != nil {
		return nil, err
	}
	return fromBytes[float32](raw), nil
}

// ReadU32 reads n uint32 values at a byte offset.
func (d *Device) ReadU32(b *Buffer, offset uint64, n int) ([]uint32, error) {
	raw, err := d.Read(b, offset, uint64(n)*4)
	if err != nil {
		return nil, err
	}
	return fromBytes[uint32](raw), nil
}

func asBytes[T float32 | uint32](v []T) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*4)
}

func fromBytes[T float32 | uint32](b []byte) []T {
	out := make([]T, len(b)/4)
	copy(asBytes(out), b)
	return out
}

// staging returns an idle MapRead buffer of at least n bytes.
func (d *Device) getStaging(n uint64) (*wgpu.Buffer, uint64, error) {
	class := sizeClass(n)
	d.mu.Lock()
	for i, s := range d.staging {
		if sz := d.stageSize[s]; sz >= n {
			d.staging = append(d.staging[:i], d.staging[i+1:]...)
			d.mu.Unlock()
			return s, sz, nil
		}
	}
	d.mu.Unlock()
	var s *wgpu.Buffer
	err := d.checked("staging buffer", func() (err error) {
		d.serial(func() {
			s, err = d.dev.TryCreateBuffer(&wgpu.BufferDescriptor{
				Label: "staging",
				Size:  class,
				Usage: wgpu.BufferUsageMapRead | wgpu.BufferUsageCopyDst,
			})
		})
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("kernels: create staging buffer (%d bytes): %w", class, err)
	}
	d.allocated.Add(class)
	d.mu.Lock()
	if d.stageSize == nil {
		d.stageSize = map[*wgpu.Buffer]uint64{}
	}
	d.stageSize[s] = class
	d.mu.Unlock()
	return s, class, nil
}

func (d *Device) putStaging(s *wgpu.Buffer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		d.allocated.Add(-d.stageSize[s])
		delete(d.stageSize, s)
		d.serial(func() {
			s.Destroy()
			s.Release()
		})
		return
	}
	d.staging = append(d.staging, s)
}
