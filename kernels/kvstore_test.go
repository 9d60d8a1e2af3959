//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestKVStoreParamsSize(t *testing.T) {
	if n := binary.Size(kvstoreParams{}); n%16 != 0 {
		t.Fatalf("kvstoreParams is %d bytes, want a multiple of 16", n)
	}
}

func TestKVF16(t *testing.T) {
	for _, c := range []struct {
		f float32
		h uint16
	}{{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, {6.1035156e-05, 0x0400},
		{5.9604645e-08, 0x0001}, {2.9802322e-08, 0}, {1.0009765625, 0x3c01}, {1.00048828125, 0x3c00}, {1.00146484375, 0x3c02}} {
		if got := kvF32ToF16(c.f); got != c.h {
			t.Errorf("f16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
		if c.h != 0x7c00 && c.h != 0 {
			if back := kvF16ToF32(c.h); math.Abs(float64(back-c.f)) > math.Abs(float64(c.f))/1024 {
				t.Errorf("f32(%#04x) = %g, want ≈%g", c.h, back, c.f)
			}
		}
	}
}

func TestKVStore(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct {
		kvHeads, headDim, capacity, stride int
		f16                                bool
		steps                              [][2]int // (pos0, m) stored in order
	}{
		{2, 16, 32, 32, false, [][2]int{{0, 7}, {7, 1}, {8, 1}}},
		{2, 16, 32, 40, true, [][2]int{{0, 7}, {7, 1}, {8, 1}}},
		{1, 80, 5, 80, false, [][2]int{{0, 3}, {3, 4}, {7, 1}, {8, 1}}}, // wraps
		{3, 6, 4, 24, true, [][2]int{{0, 10}, {10, 1}, {11, 3}}},        // m > capacity
	} {
		t.Run(fmt.Sprintf("kv%d/hd%d/cap%d/f16=%v", c.kvHeads, c.headDim, c.capacity, c.f16), func(t *testing.T) {
			size := KVCacheBytes(c.kvHeads, c.capacity, c.headDim, c.f16)
			cache, err := d.NewBuffer("cache", size)
			if err != nil {
				t.Fatal(err)
			}
			defer cache.Release()
			want := make([]float32, c.kvHeads*c.capacity*c.headDim)
			for _, s := range c.steps {
				pos0, m := s[0], s[1]
				src := randF32(r, m*c.stride, 3)
				sb, _ := d.NewBufferInit("src", asBytes(src))
				pb := newPos(t, d, pos0)
				op, err := d.KVStore(Whole(sb), Whole(cache), Whole(pb), m, c.kvHeads, c.headDim, c.capacity, c.stride, c.f16)
				if err != nil {
					t.Fatal(err)
				}
				e := d.NewEncoder()
				e.Run(op)
				if err := e.Submit(); err != nil {
					t.Fatal(err)
				}
				d.Wait()
				op.Release()
				sb.Release()
				pb.Release()
				KVStoreRef(want, src, pos0, m, c.kvHeads, c.headDim, c.capacity, c.stride, c.f16)
			}
			raw, err := d.Read(cache, 0, size)
			if err != nil {
				t.Fatal(err)
			}
			got := DecodeKVCache(raw, c.f16)
			// f32 copies are exact; pack2x16float's rounding is
			// implementation-defined: allow 1 f16 ulp.
			rel := 0.0
			if c.f16 {
				rel = 1.0 / 1024
			}
			bad := 0
			for i := range want {
				if !closeTo(got[i], want[i], 0, rel) {
					if bad++; bad <= 5 {
						t.Errorf("cache[%d] = %v, want %v", i, got[i], want[i])
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d values off", bad, len(want))
			}
		})
	}
}
