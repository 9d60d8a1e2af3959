//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestAttentionParamsSize(t *testing.T) {
	if n := binary.Size(attentionParams{}); n%16 != 0 {
		t.Fatalf("attentionParams is %d bytes, want a multiple of 16", n)
	}
}

type attnCase struct {
	m, pos0, heads, kvHeads, headDim, capacity int
	window                                     int
	sinks                                      bool
	softcap                                    float32
	f16                                        bool
	qPad                                       int // extra elements per q row (QStride)
}

func (c attnCase) String() string {
	return fmt.Sprintf("m%d/pos%d/h%d/kv%d/hd%d/cap%d/w%d/sinks=%v/softcap%g/f16=%v/qpad%d",
		c.m, c.pos0, c.heads, c.kvHeads, c.headDim, c.capacity, c.window, c.sinks, c.softcap, c.f16, c.qPad)
}

// attnHarness holds K/V for positions 0..n-1 and their GPU caches.
type attnHarness struct {
	d                *Device
	c                attnCase
	k, v, sinks      []float32
	kHost, vHost     []float32 // what the caches hold, decoded
	kc, vc, pos, snk *Buffer
	noHint           bool // step without Encoder.SetPositions
}

func newAttnHarness(tb testing.TB, d *Device, r *rand.Rand, c attnCase, n int) *attnHarness {
	tb.Helper()
	h := &attnHarness{d: d, c: c}
	kvw := c.kvHeads * c.headDim
	h.k, h.v = randF32(r, n*kvw, 1), randF32(r, n*kvw, 1)
	size := KVCacheBytes(c.kvHeads, c.capacity, c.headDim, c.f16)
	h.kHost, h.vHost = make([]float32, c.kvHeads*c.capacity*c.headDim), make([]float32, c.kvHeads*c.capacity*c.headDim)
	var err error
	if h.kc, err = d.NewBuffer("k cache", size); err != nil {
		tb.Fatal(err)
	}
	if h.vc, err = d.NewBuffer("v cache", size); err != nil {
		tb.Fatal(err)
	}
	h.pos = newPos(tb, d, 0)
	if c.sinks {
		h.sinks = randF32(r, c.heads, 2)
		if h.snk, err = d.NewBufferInit("sinks", asBytes(h.sinks)); err != nil {
			tb.Fatal(err)
		}
	}
	return h
}

func (h *attnHarness) release() {
	h.kc.Release()
	h.vc.Release()
	h.pos.Release()
	if h.snk != nil {
		h.snk.Release()
	}
}

// store writes positions pos0..pos0+m-1 of k and v into the caches, as
// RoPEKV would (through KVStoreRef), before the next pass.
func (h *attnHarness) store(tb testing.TB, pos0, m int) {
	tb.Helper()
	c := h.c
	kvw := c.kvHeads * c.headDim
	for _, s := range []struct {
		rows, host []float32
		cache      *Buffer
	}{{h.k, h.kHost, h.kc}, {h.v, h.vHost, h.vc}} {
		KVStoreRef(s.host, s.rows[pos0*kvw:(pos0+m)*kvw], pos0, m, c.kvHeads, c.headDim, c.capacity, kvw, c.f16)
		if err := h.d.Write(s.cache, 0, encodeKV(s.host, c.f16)); err != nil {
			tb.Fatal(err)
		}
	}
}

// step stores positions pos0..pos0+m-1 and runs Attention for queries q
// there, in one pass of one submit, returning the output and reference.
func (h *attnHarness) step(tb testing.TB, r *rand.Rand, pos0, m int) (got, want []float32) {
	tb.Helper()
	c := h.c
	d := h.d
	if err := d.WriteU32(h.pos, 0, []uint32{uint32(pos0)}); err != nil {
		tb.Fatal(err)
	}
	qw := c.heads * c.headDim
	qStride := qw + c.qPad
	q := randF32(r, m*qStride, 1)
	qb, err := d.NewBufferInit("q", asBytes(q))
	if err != nil {
		tb.Fatal(err)
	}
	defer qb.Release()
	ob, err := d.NewBuffer("attn out", uint64(m*qw*4))
	if err != nil {
		tb.Fatal(err)
	}
	defer ob.Release()
	o := AttnOpts{Scale: float32(1 / math.Sqrt(float64(c.headDim))), Window: c.window, Softcap: c.softcap, F16: c.f16, QStride: qStride}
	if h.snk != nil {
		o.Sinks = Whole(h.snk)
	}
	ops, err := d.Attention(Whole(qb), Whole(h.kc), Whole(h.vc), Whole(ob), Whole(h.pos), m, c.heads, c.kvHeads, c.headDim, c.capacity, o)
	if err != nil {
		tb.Fatal(err)
	}
	defer releaseOps(ops)
	if prefill := strings.Contains(ops[0].p.Key(), "prefill"); prefill != (m > 1 && !d.attn.tune.forceSplit) {
		tb.Errorf("m=%d built %s", m, ops[0].p.Key())
	}
	h.store(tb, pos0, m)
	e := d.NewEncoder()
	if !h.noHint {
		e.SetPositions(pos0, m)
	}
	e.Run(ops...)
	raw, err := e.SubmitRead(ob, 0, uint64(m*qw*4))
	if err != nil {
		tb.Fatal(err)
	}
	packed := make([]float32, 0, m*qw)
	for t := range m {
		packed = append(packed, q[t*qStride:t*qStride+qw]...)
	}
	n := (pos0 + m) * c.kvHeads * c.headDim
	want = AttentionRef(packed, h.k[:n], h.v[:n], h.sinks, m, pos0, c.heads, c.kvHeads, c.headDim, o.Scale, c.window, c.softcap)
	return fromBytes[float32](raw), want
}

// history stores positions 0..n-1 in one submit.
func (h *attnHarness) history(tb testing.TB, n int) {
	tb.Helper()
	if n == 0 {
		return
	}
	if err := h.d.WriteU32(h.pos, 0, []uint32{0}); err != nil {
		tb.Fatal(err)
	}
	h.store(tb, 0, n)
}

func compareAttn(tb testing.TB, got, want []float32, f16 bool, what string) {
	tb.Helper()
	abs, rel := 1e-4, 1e-4
	if f16 {
		abs, rel = 2e-3, 2e-3
	}
	bad := 0
	for i := range want {
		if !closeTo(got[i], want[i], abs, rel) || math.IsNaN(float64(got[i])) {
			if bad++; bad <= 5 {
				tb.Errorf("%s: out[%d] = %v, want %v", what, i, got[i], want[i])
			}
		}
	}
	if bad > 0 {
		tb.Errorf("%s: %d of %d values off", what, bad, len(want))
	}
}

func TestAttention(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(11, 12))
	cases := []attnCase{
		// decode
		{m: 1, pos0: 0, heads: 4, kvHeads: 2, headDim: 32, capacity: 64},
		{m: 1, pos0: 37, heads: 8, kvHeads: 1, headDim: 64, capacity: 64},
		{m: 1, pos0: 37, heads: 8, kvHeads: 1, headDim: 64, capacity: 64, f16: true},
		{m: 1, pos0: 300, heads: 4, kvHeads: 2, headDim: 16, capacity: 512}, // two key chunks
		{m: 1, pos0: 12, heads: 2, kvHeads: 1, headDim: 80, capacity: 16, qPad: 8},
		{m: 1, pos0: 9, heads: 2, kvHeads: 2, headDim: 256, capacity: 16, f16: true},
		{m: 1, pos0: 10, heads: 4, kvHeads: 2, headDim: 32, capacity: 16, window: 4, sinks: true},
		{m: 1, pos0: 20, heads: 4, kvHeads: 2, headDim: 32, capacity: 32, softcap: 0.5},
		// prefill
		{m: 7, pos0: 0, heads: 4, kvHeads: 2, headDim: 16, capacity: 16},
		{m: 7, pos0: 5, heads: 4, kvHeads: 2, headDim: 80, capacity: 16},
		{m: 7, pos0: 5, heads: 4, kvHeads: 2, headDim: 80, capacity: 16, f16: true, qPad: 4},
		{m: 64, pos0: 0, heads: 4, kvHeads: 2, headDim: 32, capacity: 64},
		{m: 64, pos0: 19, heads: 8, kvHeads: 1, headDim: 64, capacity: 96, f16: true},
		{m: 33, pos0: 3, heads: 2, kvHeads: 2, headDim: 128, capacity: 40},
		{m: 9, pos0: 2, heads: 2, kvHeads: 1, headDim: 256, capacity: 16},
		{m: 21, pos0: 0, heads: 4, kvHeads: 2, headDim: 32, capacity: 64, window: 4},
		{m: 7, pos0: 10, heads: 4, kvHeads: 2, headDim: 32, capacity: 10, window: 4}, // ring wraps mid-batch
		{m: 7, pos0: 5, heads: 4, kvHeads: 2, headDim: 32, capacity: 16, window: 4, sinks: true},
		{m: 20, pos0: 0, heads: 2, kvHeads: 1, headDim: 32, capacity: 32, sinks: true},
		{m: 20, pos0: 4, heads: 2, kvHeads: 1, headDim: 32, capacity: 32, softcap: 0.5, f16: true},
	}
	for _, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			h := newAttnHarness(t, d, r, c, c.pos0+c.m)
			defer h.release()
			h.history(t, c.pos0)
			got, want := h.step(t, r, c.pos0, c.m)
			compareAttn(t, got, want, c.f16, "")
		})
	}
}

// TestAttentionWindowDecode decodes positions 0..20 one token at a time
// with window 4, for a ring of exactly the window and a large cache.
func TestAttentionWindowDecode(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(13, 14))
	for _, c := range []attnCase{
		{m: 1, heads: 4, kvHeads: 2, headDim: 16, capacity: 4, window: 4},
		{m: 1, heads: 4, kvHeads: 2, headDim: 16, capacity: 64, window: 4},
		{m: 1, heads: 4, kvHeads: 2, headDim: 16, capacity: 4, window: 4, sinks: true, f16: true},
	} {
		t.Run(c.String(), func(t *testing.T) {
			h := newAttnHarness(t, d, r, c, 21)
			defer h.release()
			for p := range 21 {
				got, want := h.step(t, r, p, 1)
				compareAttn(t, got, want, c.f16, fmt.Sprintf("pos %d", p))
			}
		})
	}
}

// TestAttentionSplit: split-K decode over long contexts (many chunks, a
// partial last chunk, chunks longer than a workgroup), windows, sinks, ring
// wrap, GQA groups served by one workgroup, head dims that are not a
// multiple of 4, other workgroup shapes, and m > 1 forced through it.
func TestAttentionSplit(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(19, 20))
	type splitCase struct {
		attnCase
		wg, target, minL int  // 0: defaults
		force            bool // m > 1 through the split kernel
	}
	cases := []splitCase{
		// defaults: 32-key chunks, last one partial (300 = 9·32 + 12, 1000 = 31·32 + 8)
		{attnCase: attnCase{m: 1, pos0: 299, heads: 4, kvHeads: 2, headDim: 32, capacity: 512}},
		{attnCase: attnCase{m: 1, pos0: 999, heads: 4, kvHeads: 2, headDim: 64, capacity: 1024}},
		{attnCase: attnCase{m: 1, pos0: 999, heads: 8, kvHeads: 2, headDim: 128, capacity: 1024, f16: true}},
		{attnCase: attnCase{m: 1, pos0: 999, heads: 6, kvHeads: 2, headDim: 64, capacity: 1000, sinks: true}},
		{attnCase: attnCase{m: 1, pos0: 999, heads: 4, kvHeads: 2, headDim: 32, capacity: 1024, window: 300, sinks: true}},
		{attnCase: attnCase{m: 1, pos0: 999, heads: 4, kvHeads: 2, headDim: 32, capacity: 300, window: 300, sinks: true, f16: true}}, // ring wrapped
		{attnCase: attnCase{m: 1, pos0: 299, heads: 4, kvHeads: 1, headDim: 32, capacity: 256, window: 200, softcap: 0.5}},
		{attnCase: attnCase{m: 1, pos0: 299, heads: 32, kvHeads: 1, headDim: 256, capacity: 300, f16: true}}, // 4 workgroups of 8 heads
		{attnCase: attnCase{m: 1, pos0: 299, heads: 24, kvHeads: 2, headDim: 64, capacity: 300}},             // 12 heads a kv head: 6 a workgroup
		{attnCase: attnCase{m: 1, pos0: 299, heads: 7, kvHeads: 7, headDim: 15, capacity: 300}},              // scalar loads
		{attnCase: attnCase{m: 1, pos0: 299, heads: 4, kvHeads: 2, headDim: 18, capacity: 300, f16: true, qPad: 2}},
		{attnCase: attnCase{m: 1, pos0: 0, heads: 4, kvHeads: 2, headDim: 32, capacity: 1024, sinks: true}},
		// one chunk of 1000 keys (8 blocks of a 128-key workgroup), 16-key chunks, other workgroup sizes
		{attnCase: attnCase{m: 1, pos0: 999, heads: 32, kvHeads: 8, headDim: 128, capacity: 1024, sinks: true}, target: 1},
		{attnCase: attnCase{m: 1, pos0: 999, heads: 4, kvHeads: 2, headDim: 64, capacity: 1024, window: 777}, minL: 16},
		{attnCase: attnCase{m: 1, pos0: 999, heads: 4, kvHeads: 2, headDim: 256, capacity: 1024, f16: true}, wg: 64, target: 16},
		{attnCase: attnCase{m: 1, pos0: 999, heads: 8, kvHeads: 2, headDim: 80, capacity: 1024}, wg: 256, target: 512, minL: 8},
		// m > 1 through the split kernel (the fallback where the prefill tile does not fit)
		{attnCase: attnCase{m: 7, pos0: 290, heads: 4, kvHeads: 2, headDim: 32, capacity: 512, sinks: true}, force: true},
		{attnCase: attnCase{m: 5, pos0: 10, heads: 4, kvHeads: 2, headDim: 32, capacity: 10, window: 6, f16: true}, force: true},
	}
	defer func(t attnTune) { d.attn.tune = t }(d.attn.tune)
	for _, c := range cases {
		name := c.String()
		if c.wg+c.target+c.minL > 0 {
			name += fmt.Sprintf("/wg%d_t%d_l%d", c.wg, c.target, c.minL)
		}
		t.Run(name, func(t *testing.T) {
			d.attn.tune = attnTune{wg: c.wg, target: c.target, minL: c.minL, forceSplit: c.force}
			h := newAttnHarness(t, d, r, c.attnCase, c.pos0+c.m)
			defer h.release()
			h.history(t, c.pos0)
			got, want := h.step(t, r, c.pos0, c.m)
			compareAttn(t, got, want, c.f16, "")
			// The grid sized for the whole capacity (no SetPositions) gives
			// the same result.
			h.noHint = true
			got, want = h.step(t, r, c.pos0, c.m)
			compareAttn(t, got, want, c.f16, "no position hint")
		})
	}
}

func TestAttentionErrors(t *testing.T) {
	d := testDevice(t)
	b, _ := d.NewBuffer("b", 1<<16)
	o, _ := d.NewBuffer("o", 1<<16)
	p := newPos(t, d, 0)
	defer b.Release()
	defer o.Release()
	defer p.Release()
	for _, c := range []struct {
		m, heads, kv, hd, capacity int
		o                          AttnOpts
	}{
		{1, 4, 3, 16, 16, AttnOpts{}},            // heads % kv
		{1, 1, 1, 512, 16, AttnOpts{}},           // head dim too large
		{1, 1, 1, 15, 16, AttnOpts{F16: true}},   // odd f16 head dim
		{8, 1, 1, 16, 8, AttnOpts{Window: 4}},    // ring too small for the batch
		{1, 4, 4, 16, 16, AttnOpts{QStride: 32}}, // q rows overlap
	} {
		if ops, err := d.Attention(Whole(b), Whole(b), Whole(b), Whole(o), Whole(p), c.m, c.heads, c.kv, c.hd, c.capacity, c.o); err == nil {
			releaseOps(ops)
			t.Errorf("%+v accepted", c)
		}
	}
}

// BenchmarkAttentionDecode: one decode token (heads 32, kv 8, headDim
// 128) over ctx cached positions (a cache of exactly ctx slots, pos ctx-1),
// f32 and f16. The ops of b.N tokens are recorded back to back in one pass
// (each waits for the previous: the latency inside a token); the caches
// rotate over copies of ≥ 256 MiB in all on a GPU, so K/V come from HBM,
// not L2 (every copy is touched once before timing); DOPPLER_ATTN_COPIES=1
// keeps one copy (L2-resident, the method of the first figures).
// DOPPLER_ATTN_KNOBS="wg/target/minl ..." adds split-kernel shapes.
func BenchmarkAttentionDecode(b *testing.B) {
	d := testDevice(b)
	b.Logf("adapter: %s (%s, %s)", d.Info().Name, d.Info().Backend, d.Info().Type)
	const heads, kv, hd = 32, 8, 128
	type knob struct{ wg, target, minL int }
	wg, target, minL := attnTune{}.shape()
	knobs := []knob{{wg, target, minL}}
	for _, f := range strings.Fields(os.Getenv("DOPPLER_ATTN_KNOBS")) {
		var k knob
		if _, err := fmt.Sscanf(f, "%d/%d/%d", &k.wg, &k.target, &k.minL); err != nil {
			b.Fatalf("DOPPLER_ATTN_KNOBS %q: %v", f, err)
		}
		knobs = append(knobs, k)
	}
	defer func(t attnTune) { d.attn.tune = t }(d.attn.tune)
	for _, ctx := range []int{128, 1024, 4096} {
		for _, f16 := range []bool{false, true} {
			for i, k := range knobs {
				name := fmt.Sprintf("ctx=%d/f16=%v", ctx, f16)
				if i > 0 {
					name += fmt.Sprintf("/wg%d_t%d_l%d", k.wg, k.target, k.minL)
				}
				d.attn.tune = attnTune{wg: k.wg, target: k.target, minL: k.minL}
				b.Run(name, func(b *testing.B) { benchAttnDecode(b, d, heads, kv, hd, ctx, f16, attnAlone) })
				if i == 0 {
					// A decode step's RoPE and cache writes: a RoPEKV
					// dispatch before, or inside the attention.
					b.Run(name+"/ropekv", func(b *testing.B) { benchAttnDecode(b, d, heads, kv, hd, ctx, f16, attnAfterRoPEKV) })
					b.Run(name+"/rope-in-attention", func(b *testing.B) { benchAttnDecode(b, d, heads, kv, hd, ctx, f16, attnWithRoPE) })
				}
			}
		}
	}
}

// What benchAttnDecode times besides the attention.
const (
	attnAlone       = iota
	attnAfterRoPEKV // a RoPEKV dispatch first
	attnWithRoPE    // AttnOpts.RoPE
)

func benchAttnDecode(b *testing.B, d *Device, heads, kv, hd, ctx int, f16 bool, mode int) {
	r := rand.New(rand.NewPCG(15, 16))
	size := KVCacheBytes(kv, ctx, hd, f16)
	copies := 1
	if !d.Info().Software {
		copies = int(max(1, (256<<20)/(2*size)))
	}
	if n, err := strconv.Atoi(os.Getenv("DOPPLER_ATTN_COPIES")); err == nil && n > 0 {
		copies = n // 1: the caches stay in L2
	}
	rows := stacked(1, heads, kv, hd)
	q, _ := d.NewBufferInit("q, k, v", asBytes(randF32(r, rows.QStride, 1)))
	rp := RoPEParams{Dim: hd, InvFreq: testInvFreq(hd, 500000)}
	out, _ := d.NewBuffer("out", uint64(heads*hd*4))
	pos := newPos(b, d, ctx-1)
	defer q.Release()
	defer out.Release()
	defer pos.Release()
	kvData := asBytes(randF32(r, int(size/4), 1))
	var plan [][]*Op
	for range copies {
		kc, _ := d.NewBufferInit("k", kvData)
		vc, _ := d.NewBufferInit("v", kvData)
		defer kc.Release()
		defer vc.Release()
		o := AttnOpts{Scale: 1 / float32(math.Sqrt(float64(hd))), F16: f16, QStride: rows.QStride}
		var ops []*Op
		switch mode {
		case attnAfterRoPEKV:
			rk, err := d.RoPEKV(Whole(q), Whole(kc), Whole(vc), Whole(pos), rows, ctx, f16, rp)
			if err != nil {
				b.Fatal(err)
			}
			ops = append(ops, rk)
		case attnWithRoPE:
			o.RoPE = &AttnRoPE{Rows: rows, Params: rp}
		}
		att, err := d.Attention(Whole(q), Whole(kc), Whole(vc), Whole(out), Whole(pos), 1, heads, kv, hd, ctx, o)
		if err != nil {
			b.Fatal(err)
		}
		ops = append(ops, att...)
		defer releaseOps(ops)
		plan = append(plan, ops)
	}
	// Land the uploads and touch every copy once before timing.
	warm := d.NewEncoder()
	for _, ops := range plan {
		warm.Run(ops...)
	}
	if _, err := warm.SubmitRead(out, 0, 4); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(2 * size))
	b.ResetTimer()
	e := d.NewEncoder()
	for i := range b.N {
		e.Run(plan[i%copies]...)
	}
	if _, err := e.SubmitRead(out, 0, 4); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAttentionPrefill: a 512-token prefill chunk (heads 32, kv 8,
// headDim 128) starting at position 0.
func BenchmarkAttentionPrefill(b *testing.B) {
	d := testDevice(b)
	b.Logf("adapter: %s (%s, %s)", d.Info().Name, d.Info().Backend, d.Info().Type)
	const heads, kv, hd = 32, 8, 128
	m := 512
	if d.Info().Software {
		m = 128 // lavapipe: a multi-second dispatch crashes it at Close
	}
	r := rand.New(rand.NewPCG(17, 18))
	size := KVCacheBytes(kv, m, hd, false)
	kc, _ := d.NewBufferInit("k", asBytes(randF32(r, int(size/4), 1)))
	vc, _ := d.NewBufferInit("v", asBytes(randF32(r, int(size/4), 1)))
	q, _ := d.NewBufferInit("q", asBytes(randF32(r, m*heads*hd, 1)))
	out, _ := d.NewBuffer("out", uint64(m*heads*hd*4))
	pos := newPos(b, d, 0)
	defer kc.Release()
	defer vc.Release()
	defer q.Release()
	defer out.Release()
	defer pos.Release()
	ops, err := d.Attention(Whole(q), Whole(kc), Whole(vc), Whole(out), Whole(pos), m, heads, kv, hd, m,
		AttnOpts{Scale: 1 / float32(math.Sqrt(hd))})
	if err != nil {
		b.Fatal(err)
	}
	defer releaseOps(ops)
	b.ResetTimer()
	e := d.NewEncoder()
	for range b.N {
		e.Run(ops...)
	}
	if _, err := e.SubmitRead(out, 0, 4); err != nil {
		b.Fatal(err)
	}
	// 4·m²/2·hd·heads flops (QK and PV, causal half).
	b.ReportMetric(float64(4*m*m/2*hd*heads)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
