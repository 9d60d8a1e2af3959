//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestRoPEParamsSize(t *testing.T) {
	if n := binary.Size(ropeParams{}); n%16 != 0 || n != 32+4*ropeMaxFreqs {
		t.Fatalf("ropeParams is %d bytes, want %d (a multiple of 16)", n, 32+4*ropeMaxFreqs)
	}
}

// testInvFreq is theta^(-2i/dim) for i < dim/2.
func testInvFreq(dim int, theta float64) []float32 {
	f := make([]float32, dim/2)
	for i := range f {
		f[i] = float32(1 / math.Pow(theta, float64(2*i)/float64(dim)))
	}
	return f
}

// newPos returns a 4-byte buffer holding pos0.
func newPos(tb testing.TB, d *Device, pos0 int) *Buffer {
	tb.Helper()
	b, err := d.NewBuffer("pos", 4)
	if err != nil {
		tb.Fatal(err)
	}
	if err := d.WriteU32(b, 0, []uint32{uint32(pos0)}); err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestRoPE(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(7, 8))
	cases := []struct {
		m, heads, headDim, stride, dim, pos0 int
		neox                                 bool
		scale                                float32
	}{
		{1, 4, 32, 128, 32, 0, true, 0},
		{1, 4, 32, 128, 32, 5, false, 0},
		{7, 2, 64, 128, 64, 3, true, 1.3465736},
		{7, 2, 64, 128, 64, 3, false, 1.3465736},
		{5, 3, 80, 3*80 + 16, 32, 100, true, 0}, // partial rotary, padded rows
		{5, 3, 80, 3*80 + 16, 32, 100, false, 0},
		{3, 1, 128, 128, 128, 70000, true, 0}, // a large position
		{64, 2, 16, 32, 16, 1000, false, 0.5},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("m%d/h%d/hd%d/dim%d/pos%d/neox=%v/scale%g", c.m, c.heads, c.headDim, c.dim, c.pos0, c.neox, c.scale), func(t *testing.T) {
			p := RoPEParams{Dim: c.dim, Neox: c.neox, InvFreq: testInvFreq(c.dim, 10000), Scale: c.scale}
			x := randF32(r, c.m*c.stride, 2)
			xb, err := d.NewBufferInit("rope x", asBytes(x))
			if err != nil {
				t.Fatal(err)
			}
			defer xb.Release()
			pb := newPos(t, d, c.pos0)
			defer pb.Release()
			op, err := d.RoPE(Whole(xb), Whole(pb), c.m, c.heads, c.headDim, c.stride, p)
			if err != nil {
				t.Fatal(err)
			}
			defer op.Release()
			e := d.NewEncoder()
			e.Run(op)
			raw, err := e.SubmitRead(xb, 0, uint64(len(x)*4))
			if err != nil {
				t.Fatal(err)
			}
			got := fromBytes[float32](raw)
			want := RoPERef(x, c.pos0, c.m, c.heads, c.headDim, c.stride, p)
			// Both sides rotate by the same f32 angle; the GPU reduces it
			// mod 2π (exactly enough for k < 2^16) before cos/sin.
			abs := 3e-5
			bad := 0
			for i := range want {
				if !closeTo(got[i], want[i], abs, 1e-5) {
					if bad++; bad <= 5 {
						t.Errorf("x[%d] = %v, want %v (was %v)", i, got[i], want[i], x[i])
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d values off", bad, len(want))
			}
		})
	}
}

func TestRoPEErrors(t *testing.T) {
	d := testDevice(t)
	xb, _ := d.NewBuffer("x", 4*128)
	defer xb.Release()
	pb := newPos(t, d, 0)
	defer pb.Release()
	for _, p := range []RoPEParams{
		{Dim: 33, InvFreq: make([]float32, 16)},
		{Dim: 64, InvFreq: make([]float32, 32)}, // > headDim 32
		{Dim: 32, InvFreq: make([]float32, 8)},
	} {
		if op, err := d.RoPE(Whole(xb), Whole(pb), 1, 4, 32, 128, p); err == nil {
			op.Release()
			t.Errorf("%+v accepted", p)
		}
	}
}
