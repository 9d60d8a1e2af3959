//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestRMSNormParamsSize(t *testing.T) {
	if n := binary.Size(rmsnormParams{}); n%16 != 0 {
		t.Fatalf("rmsnormParams is %d bytes, want a multiple of 16", n)
	}
}

func randF32(r *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (r.Float32()*2 - 1) * scale
	}
	return v
}

func TestRMSNorm(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 7, 64, 100, 257, 4096} {
		for _, rows := range []int{1, 3, 17} {
			for _, addOne := range []bool{false, true} {
				if n == 4096 && rows == 17 && addOne {
					continue // keep lavapipe time down; the other 4096 cases cover it
				}
				t.Run(fmt.Sprintf("n%d/rows%d/addOne=%v", n, rows, addOne), func(t *testing.T) {
					x := randF32(r, rows*n, 3)
					w := randF32(r, n, 1)
					checkRMSNorm(t, d, x, w, rows, n, 1e-6, addOne, 0)
				})
			}
		}
	}
}

// TestRMSNormOffsets binds sub-ranges at non-zero offsets of shared buffers.
func TestRMSNormOffsets(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(3, 4))
	x := randF32(r, 2*100, 1)
	w := randF32(r, 100, 1)
	checkRMSNorm(t, d, x, w, 2, 100, 1e-5, true, uint64(d.Limits().MinStorageOffsetAlignment))
}

func checkRMSNorm(t *testing.T, d *Device, x, w []float32, rows, n int, eps float32, addOne bool, off uint64) {
	t.Helper()
	bytesX, bytesW := uint64(len(x)*4), uint64(n*4)
	align := uint64(d.Limits().MinStorageOffsetAlignment)
	// x and w share one read-only buffer (w at an aligned offset after x);
	// out is its own buffer (writable bindings cannot share a buffer).
	wOff := (off + bytesX + align - 1) / align * align
	buf, err := d.NewBuffer("rmsnorm in", wOff+bytesW)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Release()
	outBuf, err := d.NewBuffer("rmsnorm out", off+bytesX)
	if err != nil {
		t.Fatal(err)
	}
	defer outBuf.Release()
	xr := BufferRange{Buf: buf, Offset: off, Size: bytesX}
	wr := BufferRange{Buf: buf, Offset: wOff, Size: bytesW}
	or := BufferRange{Buf: outBuf, Offset: off}
	if err := d.WriteF32(buf, xr.Offset, x); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteF32(buf, wr.Offset, w); err != nil {
		t.Fatal(err)
	}
	op, err := d.RMSNorm(xr, wr, or, rows, n, eps, addOne)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Release()
	e := d.NewEncoder()
	e.Run(op)
	raw, err := e.SubmitRead(outBuf, or.Offset, bytesX)
	if err != nil {
		t.Fatal(err)
	}
	got := fromBytes[float32](raw)
	want := RMSNormRef(x, w, rows, n, eps, addOne)
	bad := 0
	for i := range want {
		if !closeTo(got[i], want[i], 1e-5, 1e-4) {
			if bad++; bad <= 5 {
				t.Errorf("out[%d][%d] = %v, want %v", i/n, i%n, got[i], want[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d values off", bad, len(want))
	}
}

// BenchmarkRMSNorm times one op per iteration, all iterations recorded in
// one pass of one submit (the per-token shape), for decode and prefill rows.
func BenchmarkRMSNorm(b *testing.B) {
	d := testDevice(b)
	b.Logf("adapter: %s (%s, %s)", d.Info().Name, d.Info().Backend, d.Info().Type)
	for _, c := range []struct{ rows, n int }{{1, 2048}, {1, 4096}, {64, 4096}} {
		b.Run(fmt.Sprintf("rows%d/n%d", c.rows, c.n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(5, 6))
			x, _ := d.NewBuffer("x", uint64(c.rows*c.n*4))
			w, _ := d.NewBuffer("w", uint64(c.n*4))
			y, _ := d.NewBuffer("y", uint64(c.rows*c.n*4))
			defer x.Release()
			defer w.Release()
			defer y.Release()
			d.WriteF32(x, 0, randF32(r, c.rows*c.n, 1))
			d.WriteF32(w, 0, randF32(r, c.n, 1))
			op, err := d.RMSNorm(Whole(x), Whole(w), Whole(y), c.rows, c.n, 1e-6, false)
			if err != nil {
				b.Fatal(err)
			}
			defer op.Release()
			b.SetBytes(int64(2*c.rows*c.n*4 + c.n*4))
			b.ResetTimer()
			e := d.NewEncoder()
			for range b.N {
				e.Run(op)
			}
			if _, err := e.SubmitRead(y, 0, 4); err != nil {
				b.Fatal(err)
			}
		})
	}
}
