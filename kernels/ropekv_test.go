//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

func TestRoPEKVParamsSize(t *testing.T) {
	if n := binary.Size(ropeKVParams{}); n%16 != 0 || n != 64+4*ropeMaxFreqs {
		t.Fatalf("ropeKVParams is %d bytes, want %d (a multiple of 16)", n, 64+4*ropeMaxFreqs)
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

// stacked is the layout of one [q; k; v] matmul output row per token.
func stacked(m, heads, kvHeads, headDim int) QKVRows {
	q, kv := heads*headDim, kvHeads*headDim
	w := q + 2*kv
	return QKVRows{M: m, Heads: heads, KVHeads: kvHeads, HeadDim: headDim,
		QOff: 0, QStride: w, KOff: q, KStride: w, VOff: q + kv, VStride: w}
}

// planar is three blocks of rows (q, then k, then v), each at its own
// stride, with gaps between them.
func planar(m, heads, kvHeads, headDim, pad int) QKVRows {
	q, kv := heads*headDim, kvHeads*headDim
	r := QKVRows{M: m, Heads: heads, KVHeads: kvHeads, HeadDim: headDim, QStride: q + pad, KStride: kv, VStride: kv + pad}
	r.KOff = (m*r.QStride + 127) / 64 * 64 // past q, at a bindable offset
	r.VOff = (r.KOff + m*r.KStride + 127) / 64 * 64
	return r
}

func TestRoPEKV(t *testing.T) {
	d := testDevice(t)
	rng := rand.New(rand.NewPCG(21, 22))
	cases := []struct {
		name     string
		rows     QKVRows
		dim      int
		neox     bool
		scale    float32
		capacity int
		pos0     int
		f16      bool
	}{
		{"decode/stacked/neox/f16", stacked(1, 4, 2, 32), 32, true, 0, 16, 5, true},
		{"decode/stacked/interleaved/f32", stacked(1, 4, 2, 32), 32, false, 0, 16, 5, false},
		{"prefill/stacked/gqa/neox/f16", stacked(7, 8, 2, 64), 64, true, 1.3465736, 32, 3, true},
		{"prefill/stacked/gqa/interleaved/f16", stacked(7, 8, 2, 64), 64, false, 1.3465736, 32, 3, true},
		{"prefill/many tokens", stacked(64, 4, 4, 16), 16, false, 0.5, 128, 1000, true},
		{"prefill/planar/partial/f16", planar(5, 3, 1, 80, 16), 32, false, 0, 64, 100, true},
		{"prefill/planar/partial/f32", planar(5, 3, 3, 80, 16), 32, true, 0, 64, 100, false},
		{"ring/wraps", stacked(4, 4, 4, 16), 16, false, 0.5, 6, 4, true},
		{"ring/m>capacity", stacked(10, 4, 4, 16), 16, true, 0, 4, 0, false},
		{"large position", stacked(2, 2, 2, 128), 128, true, 0, 8, 70000, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.rows
			p := RoPEParams{Dim: c.dim, Neox: c.neox, InvFreq: testInvFreq(c.dim, 10000), Scale: c.scale}
			q, k, v := r.spans()
			x := randF32(rng, max(q.end(), k.end(), v.end())+32, 2)
			size := KVCacheBytes(r.KVHeads, c.capacity, r.HeadDim, c.f16)
			cacheF32 := make([]float32, r.KVHeads*c.capacity*r.HeadDim)
			kInit, vInit := randF32(rng, len(cacheF32), 1), randF32(rng, len(cacheF32), 1)
			if c.f16 { // what the cache holds: f16-exact values
				for i := range kInit {
					kInit[i], vInit[i] = quant.F16ToF32(quant.F32ToF16(kInit[i])), quant.F16ToF32(quant.F32ToF16(vInit[i]))
				}
			}
			bufs := func() (xb, kb, vb, pb *Buffer) {
				xb, _ = d.NewBufferInit("x", asBytes(x))
				kb, _ = d.NewBufferInit("kc", encodeKV(kInit, c.f16))
				vb, _ = d.NewBufferInit("vc", encodeKV(vInit, c.f16))
				pb = newPos(t, d, c.pos0)
				if kb.Size() != size {
					t.Fatalf("cache buffer %d bytes, want %d", kb.Size(), size)
				}
				return
			}
			read := func(b *Buffer, f16 bool) []float32 {
				raw, err := d.Read(b, 0, b.Size())
				if err != nil {
					t.Fatal(err)
				}
				if b.Size() == size {
					return DecodeKVCache(raw, f16)
				}
				return fromBytes[float32](raw)
			}

			// The fused op.
			xb, kb, vb, pb := bufs()
			defer func() { xb.Release(); kb.Release(); vb.Release(); pb.Release() }()
			op, err := d.RoPEKV(Whole(xb), Whole(kb), Whole(vb), Whole(pb), r, c.capacity, c.f16, p)
			if err != nil {
				t.Fatal(err)
			}
			defer op.Release()
			e := d.NewEncoder()
			e.Run(op)
			if err := e.Submit(); err != nil {
				t.Fatal(err)
			}
			d.Wait()
			gx, gk, gv := read(xb, false), read(kb, c.f16), read(vb, c.f16)

			// The reference.
			wk, wv := append([]float32(nil), kInit...), append([]float32(nil), vInit...)
			wx := RoPEKVRef(x, wk, wv, c.pos0, r, c.capacity, c.f16, p)
			// Both rotate by the same f32 angle (the GPU reduces it mod 2π,
			// exactly enough for k < 2^16, before its cos/sin polynomials);
			// pack2x16float's rounding may be an f16 ulp off.
			rel := 1e-5
			if c.f16 {
				rel = 1.0 / 1024
			}
			for _, cmp := range []struct {
				what      string
				got, want []float32
				rel       float64
			}{{"x", gx, wx, 1e-5}, {"K cache", gk, wk, rel}, {"V cache", gv, wv, rel}} {
				bad := 0
				for i := range cmp.want {
					if !closeTo(cmp.got[i], cmp.want[i], 3e-5, cmp.rel) {
						if bad++; bad <= 5 {
							t.Errorf("%s[%d] = %v, want %v", cmp.what, i, cmp.got[i], cmp.want[i])
						}
					}
				}
				if bad > 0 {
					t.Errorf("%s: %d of %d values off", cmp.what, bad, len(cmp.want))
				}
			}
			// k's rows in x are read, not rotated.
			for i := range r.M * r.KVHeads * r.HeadDim {
				t0, j := i/(r.KVHeads*r.HeadDim), i%(r.KVHeads*r.HeadDim)
				if at := r.KOff + t0*r.KStride + j; gx[at] != x[at] {
					t.Fatalf("x[%d] (k) changed: %v, was %v", at, gx[at], x[at])
				}
			}
		})
	}
}

// encodeKV is the cache bytes of decoded values: f32, or f16 pairs.
func encodeKV(v []float32, f16 bool) []byte {
	if !f16 {
		return asBytes(v)
	}
	out := make([]byte, 2*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint16(out[2*i:], quant.F32ToF16(f))
	}
	return out
}

func TestRoPEKVErrors(t *testing.T) {
	d := testDevice(t)
	xb, _ := d.NewBuffer("x", 4*1024)
	defer xb.Release()
	kb, _ := d.NewBuffer("kc", KVCacheBytes(2, 8, 32, true))
	defer kb.Release()
	pb := newPos(t, d, 0)
	defer pb.Release()
	p := RoPEParams{Dim: 32, InvFreq: testInvFreq(32, 10000)}
	overlap := stacked(2, 4, 2, 32)
	overlap.KOff = 64 // inside q's heads
	for _, c := range []struct {
		name     string
		rows     QKVRows
		capacity int
		p        RoPEParams
	}{
		{"q overlaps k", overlap, 8, p},
		{"stride below the heads", QKVRows{M: 1, Heads: 4, KVHeads: 2, HeadDim: 32, QStride: 100, KOff: 128, KStride: 64, VOff: 192, VStride: 64}, 8, p},
		{"no capacity", stacked(1, 4, 2, 32), 0, p},
		{"x too small", stacked(16, 4, 2, 32), 8, p},
		{"rotary dim past the head", stacked(1, 4, 2, 32), 8, RoPEParams{Dim: 64, InvFreq: testInvFreq(64, 10000)}},
		{"odd rotary dim", stacked(1, 4, 2, 32), 8, RoPEParams{Dim: 31, InvFreq: make([]float32, 15)}},
		{"too few frequencies", stacked(1, 4, 2, 32), 8, RoPEParams{Dim: 32, InvFreq: make([]float32, 8)}},
	} {
		if op, err := d.RoPEKV(Whole(xb), Whole(kb), Whole(kb), Whole(pb), c.rows, c.capacity, true, c.p); err == nil {
			op.Release()
			t.Errorf("%s: accepted", c.name)
		}
	}
}

func TestSpanApart(t *testing.T) {
	for _, c := range []struct {
		a, b span
		want bool
	}{
		{span{0, 10, 4, 3}, span{4, 10, 3, 3}, true},  // interleaved, side by side
		{span{0, 10, 4, 3}, span{3, 10, 3, 3}, false}, // one column shared
		{span{0, 10, 4, 3}, span{8, 10, 3, 3}, false}, // runs into the next row
		{span{0, 10, 4, 3}, span{24, 10, 4, 3}, true}, // a row later, in the gap
		{span{0, 4, 4, 3}, span{12, 2, 2, 3}, true},   // blocks one after the other
		{span{0, 4, 4, 3}, span{10, 2, 2, 3}, false},  // blocks that meet
		{span{10, 8, 4, 2}, span{0, 8, 4, 2}, false},  // order does not matter
		{span{12, 8, 4, 2}, span{0, 8, 4, 2}, true},
	} {
		if got := c.a.apart(c.b); got != c.want {
			t.Errorf("%+v apart %+v = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
