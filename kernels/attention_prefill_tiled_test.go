//go:build cgo || js

package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttentionPrefillTiled checks attention_prefill_tiled.wgsl against
// AttentionRef: each tile shape, batches that fill tiles or leave them
// partly empty, earlier positions in the cache, f16 and f32 caches, GQA,
// padded q rows, windows (a ring wrapping mid-batch), sinks and softcap;
// and the older prefill kernel where the tiled one cannot serve.
func TestAttentionPrefillTiled(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(31, 32))
	type tiledCase struct {
		attnCase
		tile attnTile // zero: the default pick
		old  bool     // the kernel expected: attention_prefill.wgsl
	}
	cases := []tiledCase{
		{attnCase: attnCase{m: 64, pos0: 0, heads: 4, kvHeads: 2, headDim: 64, capacity: 64}},
		{attnCase: attnCase{m: 70, pos0: 19, heads: 8, kvHeads: 2, headDim: 64, capacity: 96, f16: true}},
		{attnCase: attnCase{m: 33, pos0: 3, heads: 2, kvHeads: 2, headDim: 128, capacity: 40}},
		{attnCase: attnCase{m: 45, pos0: 7, heads: 4, kvHeads: 1, headDim: 128, capacity: 64, f16: true, qPad: 4}},
		{attnCase: attnCase{m: 5, pos0: 30, heads: 4, kvHeads: 2, headDim: 32, capacity: 64}},
		{attnCase: attnCase{m: 40, pos0: 0, heads: 4, kvHeads: 2, headDim: 32, capacity: 64, window: 9}},
		{attnCase: attnCase{m: 20, pos0: 30, heads: 4, kvHeads: 2, headDim: 64, capacity: 28, window: 9, sinks: true}}, // ring wraps mid-batch
		{attnCase: attnCase{m: 50, pos0: 0, heads: 2, kvHeads: 1, headDim: 64, capacity: 64, sinks: true}},
		{attnCase: attnCase{m: 37, pos0: 4, heads: 2, kvHeads: 1, headDim: 64, capacity: 64, softcap: 0.5, f16: true}},
		// Each tile shape.
		{attnCase: attnCase{m: 50, pos0: 5, heads: 2, kvHeads: 1, headDim: 64, capacity: 64}, tile: attnTile{32, 16}},
		{attnCase: attnCase{m: 50, pos0: 5, heads: 2, kvHeads: 1, headDim: 64, capacity: 64, f16: true}, tile: attnTile{16, 32}},
		{attnCase: attnCase{m: 50, pos0: 5, heads: 2, kvHeads: 1, headDim: 128, capacity: 64, sinks: true}, tile: attnTile{16, 16}},
		{attnCase: attnCase{m: 50, pos0: 5, heads: 2, kvHeads: 1, headDim: 32, capacity: 72, window: 20}, tile: attnTile{32, 32}},
		// Head dims it cannot serve: the older kernel.
		{attnCase: attnCase{m: 7, pos0: 5, heads: 4, kvHeads: 2, headDim: 80, capacity: 16}, old: true},
		{attnCase: attnCase{m: 9, pos0: 2, heads: 2, kvHeads: 1, headDim: 16, capacity: 16}, old: true},
	}
	defer func(t attnTune) { d.attn.tune = t }(d.attn.tune)
	for _, c := range cases {
		name := c.String()
		if c.tile != (attnTile{}) {
			name += fmt.Sprintf("/q%d_k%d", c.tile.bq, c.tile.bk)
		}
		t.Run(name, func(t *testing.T) {
			if c.tile != (attnTile{}) && !attnTiledFits(c.tile, c.headDim, d.Limits().MaxWorkgroupStorage) {
				c.tile = attnTile{}
			}
			d.attn.tune = attnTune{prefill: c.tile}
			if _, ok := d.attnPrefillTiledShape(c.headDim, c.m); ok == c.old {
				t.Errorf("tiled kernel %v, want %v", ok, !c.old)
			}
			h := newAttnHarness(t, d, r, c.attnCase, c.pos0+c.m)
			defer h.release()
			h.history(t, c.pos0)
			got, want := h.step(t, r, c.pos0, c.m)
			compareAttn(t, got, want, c.f16, "")
		})
	}
}

// BenchmarkAttentionPrefillTiled times a 512-token prefill chunk from
// position 0 (32 heads, 8 kv heads; head dim 64 as Llama-3.2-1B, 128 as
// Llama-3-8B; f16 cache) per kernel: "old" (attention_prefill.wgsl) and
// each tile of attention_prefill_tiled.wgsl that fits.
func BenchmarkAttentionPrefillTiled(b *testing.B) {
	d := testDevice(b)
	b.Logf("adapter: %s (%s, %s)", d.Info().Name, d.Info().Backend, d.Info().Type)
	const heads, kv = 32, 8
	m := 512
	if d.Info().Software {
		m = 128 // lavapipe: a multi-second dispatch crashes it at Close
	}
	defer func(t attnTune) { d.attn.tune = t }(d.attn.tune)
	r := rand.New(rand.NewPCG(33, 34))
	for _, hd := range []int{64, 128} {
		size := KVCacheBytes(kv, m, hd, true)
		kc, _ := d.NewBufferInit("k", asBytes(randF32(r, int(size/4), 0.01)))
		vc, _ := d.NewBufferInit("v", asBytes(randF32(r, int(size/4), 0.01)))
		q, _ := d.NewBufferInit("q", asBytes(randF32(r, m*heads*hd, 1)))
		out, _ := d.NewBuffer("out", uint64(m*heads*hd*4))
		pos := newPos(b, d, 0)
		for _, v := range []struct {
			name string
			tune attnTune
		}{
			{"old", attnTune{prefillOld: true}},
			{"q32k32", attnTune{prefill: attnTile{32, 32}}}, {"q32k16", attnTune{prefill: attnTile{32, 16}}},
			{"q16k32", attnTune{prefill: attnTile{16, 32}}}, {"q16k16", attnTune{prefill: attnTile{16, 16}}},
		} {
			if v.tune.prefill != (attnTile{}) && !attnTiledFits(v.tune.prefill, hd, d.Limits().MaxWorkgroupStorage) {
				continue
			}
			d.attn.tune = v.tune
			ops, err := d.Attention(Whole(q), Whole(kc), Whole(vc), Whole(out), Whole(pos), m, heads, kv, hd, m,
				AttnOpts{Scale: 1 / float32(math.Sqrt(float64(hd))), F16: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("hd%d/m%d/%s", hd, m, v.name), func(b *testing.B) {
				e := d.NewEncoder()
				for range b.N {
					e.Run(ops...)
				}
				b.ResetTimer()
				if _, err := e.SubmitRead(out, 0, 4); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				// 4·m²/2·hd·heads flops (QK and PV, causal half).
				b.ReportMetric(float64(4*m*m/2*hd*heads)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
			releaseOps(ops)
		}
		for _, buf := range []*Buffer{kc, vc, q, out, pos} {
			buf.Release()
		}
	}
}
