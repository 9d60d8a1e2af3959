//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestAddParamsSize(t *testing.T) {
	if n := binary.Size(addParams{}); n%16 != 0 {
		t.Fatalf("addParams is %d bytes", n)
	}
}

func TestAdd(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(9, 10))
	align := uint64(d.Limits().MinStorageOffsetAlignment)
	for _, n := range []int{1, 7, 256, 1000, 65537} {
		t.Run(fmt.Sprintf("n%d", n), func(t *testing.T) {
			a, b := randF32(r, n, 4), randF32(r, n, 4)
			want := AddRef(a, b)
			// a and b share one buffer (b at an aligned offset), out its own.
			bOff := (uint64(n*4) + align - 1) / align * align
			in, _ := d.NewBuffer("in", bOff+uint64(n*4))
			defer in.Release()
			out, _ := d.NewBuffer("out", uint64(n*4))
			defer out.Release()
			d.WriteF32(in, 0, a)
			d.WriteF32(in, bOff, b)
			ar := BufferRange{Buf: in, Size: uint64(n * 4)}
			br := BufferRange{Buf: in, Offset: bOff, Size: uint64(n * 4)}
			op, err := d.Add(ar, br, Whole(out), n)
			if err != nil {
				t.Fatal(err)
			}
			defer op.Release()
			e := d.NewEncoder()
			e.Run(op)
			raw, err := e.SubmitRead(out, 0, uint64(n*4))
			if err != nil {
				t.Fatal(err)
			}
			if got := fromBytes[float32](raw); !slices.Equal(got, want) {
				t.Errorf("Add differs")
			}

			// acc += b twice in one pass: acc = a + 2b.
			acc, _ := d.NewBufferInit("acc", asBytes(a))
			defer acc.Release()
			op2, err := d.AddInPlace(Whole(acc), br, n)
			if err != nil {
				t.Fatal(err)
			}
			defer op2.Release()
			e = d.NewEncoder()
			e.Run(op2, op2)
			raw, err = e.SubmitRead(acc, 0, uint64(n*4))
			if err != nil {
				t.Fatal(err)
			}
			want2 := AddRef(want, b)
			if got := fromBytes[float32](raw); !slices.Equal(got, want2) {
				t.Errorf("AddInPlace differs")
			}
		})
	}
}

func TestAddErrors(t *testing.T) {
	d := testDevice(t)
	x, _ := d.NewBuffer("x", 64)
	defer x.Release()
	y, _ := d.NewBuffer("y", 64)
	defer y.Release()
	if _, err := d.Add(Whole(x), Whole(x), Whole(x), 16); err == nil {
		t.Error("out aliasing an input accepted")
	}
	if _, err := d.Add(Whole(x), Whole(x), Whole(y), 17); err == nil {
		t.Error("too-small ranges accepted")
	}
	if _, err := d.AddInPlace(Whole(x), Whole(x), 16); err == nil {
		t.Error("acc aliasing b accepted")
	}
}

func BenchmarkAdd(b *testing.B) {
	d := testDevice(b)
	const n = 4096
	x, _ := d.NewBuffer("x", n*4)
	y, _ := d.NewBuffer("y", n*4)
	defer x.Release()
	defer y.Release()
	op, err := d.AddInPlace(Whole(x), Whole(y), n)
	if err != nil {
		b.Fatal(err)
	}
	defer op.Release()
	b.SetBytes(3 * n * 4)
	b.ResetTimer()
	e := d.NewEncoder()
	for range b.N {
		e.Run(op)
	}
	if _, err := e.SubmitRead(x, 0, 4); err != nil {
		b.Fatal(err)
	}
}
