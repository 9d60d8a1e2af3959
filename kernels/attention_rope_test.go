//go:build cgo || js

package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttentionRoPE checks AttnOpts.RoPE for one token (a decode step):
// Attention doing RoPEKV's work itself gives the output and the caches
// that RoPEKV followed by Attention give, across rotation styles, partial
// rotary dims, grouped heads, q/k/v layouts, ring caches with a window,
// and both cache dtypes.
func TestAttentionRoPE(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(51, 52))
	cases := []struct {
		heads, kvHeads, hd, dim int
		capacity, window, pos   int
		neox, f16, planar       bool
	}{
		{heads: 4, kvHeads: 4, hd: 16, dim: 16, capacity: 32, pos: 0},
		{heads: 8, kvHeads: 2, hd: 64, dim: 64, capacity: 128, pos: 77, f16: true},
		{heads: 8, kvHeads: 2, hd: 64, dim: 32, capacity: 128, pos: 100, neox: true, planar: true},
		{heads: 6, kvHeads: 3, hd: 128, dim: 128, capacity: 16, window: 16, pos: 250, neox: true, f16: true},
		{heads: 32, kvHeads: 8, hd: 128, dim: 128, capacity: 1024, pos: 700, f16: true},
		{heads: 2, kvHeads: 1, hd: 20, dim: 12, capacity: 8, window: 5, pos: 9, planar: true},
	}
	for _, c := range cases {
		name := fmt.Sprintf("h%d-kv%d-hd%d-dim%d/cap%d-win%d-pos%d/neox=%v/f16=%v/planar=%v", c.heads, c.kvHeads, c.hd, c.dim, c.capacity, c.window, c.pos, c.neox, c.f16, c.planar)
		t.Run(name, func(t *testing.T) {
			rows := stacked(1, c.heads, c.kvHeads, c.hd)
			if c.planar {
				rows = planar(1, c.heads, c.kvHeads, c.hd, 4)
			}
			_, _, vs := rows.spans()
			x := randF32(r, vs.end(), 1)
			cache := randF32(r, c.kvHeads*c.capacity*c.hd, 1)
			rp := RoPEParams{Dim: c.dim, Neox: c.neox, InvFreq: testInvFreq(c.dim, 10000)}
			o := AttnOpts{Scale: float32(1 / math.Sqrt(float64(c.hd))), Window: c.window, F16: c.f16, QStride: rows.QStride}
			run := func(fused bool) (out, k, v []float32) {
				xb := newBufferInit(t, d, "qkv", asBytes(x))
				kb := newBufferInit(t, d, "k cache", encodeKV(cache, c.f16))
				vb := newBufferInit(t, d, "v cache", encodeKV(cache, c.f16))
				pb := newBufferInit(t, d, "pos", asBytes([]uint32{uint32(c.pos)}))
				ob := newBufferInit(t, d, "out", make([]byte, c.heads*c.hd*4))
				var ops []*Op
				q, oo := BufferRange{Buf: xb, Offset: uint64(rows.QOff) * 4}, o
				if fused {
					q, oo.RoPE = Whole(xb), &AttnRoPE{Rows: rows, Params: rp}
				} else {
					rk, err := d.RoPEKV(Whole(xb), Whole(kb), Whole(vb), Whole(pb), rows, c.capacity, c.f16, rp)
					if err != nil {
						t.Fatal(err)
					}
					ops = append(ops, rk)
				}
				att, err := d.Attention(q, Whole(kb), Whole(vb), Whole(ob), Whole(pb), 1, c.heads, c.kvHeads, c.hd, c.capacity, oo)
				if err != nil {
					t.Fatal(err)
				}
				ops = append(ops, att...)
				defer releaseOps(ops)
				e := d.NewEncoder()
				e.SetPositions(c.pos, 1)
				e.Run(ops...)
				if err := e.Submit(); err != nil {
					t.Fatal(err)
				}
				if fused {
					// q's rows stay as they were.
					for i, v := range fromBytes[float32](readAll(t, d, xb)) {
						if v != x[i] {
							t.Fatalf("qkv[%d] = %v, was %v", i, v, x[i])
						}
					}
				}
				return fromBytes[float32](readAll(t, d, ob)), DecodeKVCache(readAll(t, d, kb), c.f16), DecodeKVCache(readAll(t, d, vb), c.f16)
			}
			wantOut, wantK, wantV := run(false)
			gotOut, gotK, gotV := run(true)
			for i := range wantOut {
				if !closeTo(gotOut[i], wantOut[i], 1e-5, 1e-5) {
					t.Fatalf("out[%d] = %v, RoPEKV + Attention %v", i, gotOut[i], wantOut[i])
				}
			}
			compareKV(t, gotK, wantK, c.f16, 0, "K cache")
			compareKV(t, gotV, wantV, c.f16, 0, "V cache")
		})
	}
}

// TestAttentionRoPEErrors: a fused RoPE the kernel cannot serve is an
// error.
func TestAttentionRoPEErrors(t *testing.T) {
	d := testDevice(t)
	rows := stacked(2, 4, 2, 16)
	b, _ := d.NewBuffer("b", 1<<16)
	defer b.Release()
	rp := RoPEParams{Dim: 16, InvFreq: testInvFreq(16, 10000)}
	one := stacked(1, 4, 2, 16)
	for _, c := range []struct {
		name     string
		m, hd    int
		rope     AttnRoPE
		capacity int
	}{
		{"two tokens, one sequence", 2, 16, AttnRoPE{Rows: rows, Params: rp}, 32},
		{"rows of another shape", 1, 16, AttnRoPE{Rows: stacked(1, 4, 4, 16), Params: rp}, 32},
		{"bad rotary dims", 1, 16, AttnRoPE{Rows: one, Params: RoPEParams{Dim: 18, InvFreq: testInvFreq(18, 10000)}}, 32},
		{"head dim not a multiple of 4", 1, 18, AttnRoPE{Rows: stacked(1, 4, 2, 18), Params: rp}, 32},
	} {
		ops, err := d.Attention(Whole(b), Whole(b), Whole(b), Whole(b), Whole(b), c.m, 4, c.rope.Rows.KVHeads, c.hd, c.capacity, AttnOpts{Scale: 1, RoPE: &c.rope})
		if err == nil {
			releaseOps(ops)
			t.Errorf("%s: no error", c.name)
		}
	}
}
