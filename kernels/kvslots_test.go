//go:build cgo || js

package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestKVSlots runs one decode step of several sequences whose caches
// share one K and one V buffer (KVSlots): RoPEKV writes each row at its
// own position into its own slot, then Attention reads each row's keys
// from there, in one pass. Each row must come out as if its sequence ran
// alone (the single-cache references), rows may name slots in any order,
// a row naming a slot past the caches is skipped, and slots no row names
// keep their contents.
func TestKVSlots(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(31, 32))
	cases := []kvSlotsCase{
		{name: "full/f16", heads: 8, kvHeads: 2, hd: 32, capacity: 64, pos: []int{0, 37, 5, 63}, slot: []int{2, 0, 3, 1}, slots: 5, f16: true, neox: true},
		{name: "full/f32/padded", heads: 4, kvHeads: 4, hd: 16, capacity: 48, pad: 3, pos: []int{12, 47, 1}, slot: []int{1, 2, 0}, slots: 3},
		{name: "ring window sinks", heads: 4, kvHeads: 2, hd: 32, capacity: 8, window: 8, pos: []int{3, 20, 100}, slot: []int{0, 1, 2}, slots: 3, f16: true, sinks: true},
		{name: "long/split chunks", heads: 8, kvHeads: 2, hd: 64, capacity: 512, pos: []int{300, 4, 511}, slot: []int{1, 0, 2}, slots: 3, f16: true, softcap: 0.5},
		{name: "skipped row", heads: 4, kvHeads: 2, hd: 16, capacity: 32, pos: []int{9, 30, 2}, slot: []int{0, 7, 1}, slots: 2},
	}
	for _, c := range cases {
		for _, fused := range []bool{false, true} {
			name := c.name
			if fused {
				name += "/rope in attention"
			}
			t.Run(name, func(t *testing.T) { testKVSlots(t, d, r, c, fused) })
		}
	}
}

// kvSlotsCase is a case of TestKVSlots.
type kvSlotsCase struct {
	name                  string
	heads, kvHeads, hd    int
	capacity, window, pad int   // pad: extra head rows between slots
	pos, slot             []int // per row
	slots                 int
	f16, neox, sinks      bool
	softcap               float32
}

// testKVSlots runs one case: RoPEKV then Attention, or (fused) Attention
// doing RoPEKV's work itself (AttnOpts.RoPE), against the references.
func testKVSlots(t *testing.T, d *Device, r *rand.Rand, c kvSlotsCase, fused bool) {
	n := len(c.pos)
	kvw := c.kvHeads * c.hd
	row := int(KVCacheBytes(1, 1, c.hd, c.f16))
	stride := KVCacheBytes(c.kvHeads, c.capacity, c.hd, c.f16) + uint64(c.pad*row)
	perSlot := int(stride) / row * c.hd // values per slot, decoded
	rp := RoPEParams{Dim: c.hd, Neox: c.neox, InvFreq: testInvFreq(c.hd, 10000)}

	// Each slot's history: the keys and values of the positions
	// before the row that uses it (random for slots no row uses).
	kHist, vHist := make([][]float32, c.slots), make([][]float32, c.slots)
	kHost, vHost := make([]float32, c.slots*perSlot), make([]float32, c.slots*perSlot)
	for s := range c.slots {
		hist := 5
		for i, sl := range c.slot {
			if sl == s {
				hist = c.pos[i]
			}
		}
		kHist[s], vHist[s] = randF32(r, hist*kvw, 1), randF32(r, hist*kvw, 1)
		KVStoreRef(kHost[s*perSlot:], kHist[s], 0, hist, c.kvHeads, c.hd, c.capacity, kvw, c.f16)
		KVStoreRef(vHost[s*perSlot:], vHist[s], 0, hist, c.kvHeads, c.hd, c.capacity, kvw, c.f16)
	}
	rows := stacked(n, c.heads, c.kvHeads, c.hd)
	rows.Slots = KVSlots{N: c.slots, Stride: stride}
	x := randF32(r, n*rows.QStride, 1)
	table := make([]uint32, 0, 2*n)
	for i := range n {
		table = append(table, uint32(c.pos[i]), uint32(c.slot[i]))
	}
	var sinks []float32
	xb := newBufferInit(t, d, "x", asBytes(x))
	kb := newBufferInit(t, d, "k caches", encodeKV(kHost, c.f16))
	vb := newBufferInit(t, d, "v caches", encodeKV(vHost, c.f16))
	pb := newBufferInit(t, d, "table", asBytes(table))
	sentinel := make([]float32, n*c.heads*c.hd)
	for i := range sentinel {
		sentinel[i] = 7
	}
	ob := newBufferInit(t, d, "out", asBytes(sentinel))
	o := AttnOpts{Scale: float32(1 / math.Sqrt(float64(c.hd))), Window: c.window, Softcap: c.softcap, F16: c.f16, QStride: rows.QStride, Slots: rows.Slots}
	if c.sinks {
		sinks = randF32(r, c.heads, 2)
		o.Sinks = Whole(newBufferInit(t, d, "sinks", asBytes(sinks)))
	}
	var ops []*Op
	if fused {
		o.RoPE = &AttnRoPE{Rows: rows, Params: rp}
	} else {
		rk, err := d.RoPEKV(Whole(xb), Whole(kb), Whole(vb), Whole(pb), rows, c.capacity, c.f16, rp)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, rk)
	}
	att, err := d.Attention(Whole(xb), Whole(kb), Whole(vb), Whole(ob), Whole(pb), n, c.heads, c.kvHeads, c.hd, c.capacity, o)
	if err != nil {
		t.Fatal(err)
	}
	ops = append(ops, att...)
	defer releaseOps(ops)
	e := d.NewEncoder()
	e.SetPositions(slices.Max(c.pos), 1)
	e.Run(ops...)
	if err := e.Submit(); err != nil {
		t.Fatal(err)
	}
	got := fromBytes[float32](readAll(t, d, ob))
	gk := DecodeKVCache(readAll(t, d, kb), c.f16)
	gv := DecodeKVCache(readAll(t, d, vb), c.f16)

	for i := range n {
		s, p := c.slot[i], c.pos[i]
		xr := x[i*rows.QStride : (i+1)*rows.QStride]
		out := got[i*c.heads*c.hd : (i+1)*c.heads*c.hd]
		if s >= c.slots {
			for j, v := range out {
				if v != 7 {
					t.Fatalf("row %d names slot %d of %d but out[%d] = %v was written", i, s, c.slots, j, v)
				}
			}
			continue
		}
		q := RoPERef(xr[rows.QOff:], p, 1, c.heads, c.hd, rows.QStride, rp)[:c.heads*c.hd]
		k := RoPERef(xr[rows.KOff:], p, 1, c.kvHeads, c.hd, rows.KStride, rp)[:kvw]
		v := xr[rows.VOff : rows.VOff+kvw]
		KVStoreRef(kHost[s*perSlot:], k, p, 1, c.kvHeads, c.hd, c.capacity, kvw, c.f16)
		KVStoreRef(vHost[s*perSlot:], v, p, 1, c.kvHeads, c.hd, c.capacity, kvw, c.f16)
		want := AttentionRef(q, append(kHist[s], k...), append(vHist[s], v...), sinks, 1, p, c.heads, c.kvHeads, c.hd, o.Scale, c.window, c.softcap)
		compareAttn(t, out, want, c.f16, fmt.Sprintf("row %d (slot %d, position %d)", i, s, p))
	}
	// Every slot's cache, written or not, as the references have it
	// (the padding between slots included).
	compareKV(t, gk, kHost, c.f16, perSlot, "K caches")
	compareKV(t, gv, vHost, c.f16, perSlot, "V caches")
}

// compareKV fails tb at the first decoded cache value of got not close to
// want's: within 1e-5, or (f16) an f16 ulp, since values an f32 ulp apart
// may round to neighbouring halves. perSlot > 0 names each value's slot.
func compareKV(tb testing.TB, got, want []float32, f16 bool, perSlot int, what string) {
	tb.Helper()
	tol := 1e-6
	if f16 {
		tol = 1.0 / 1024
	}
	for j := range want {
		if !closeTo(got[j], want[j], 1e-5, tol) {
			if perSlot > 0 {
				tb.Fatalf("%s[%d] (slot %d) = %v, want %v", what, j, j/perSlot, got[j], want[j])
			}
			tb.Fatalf("%s[%d] = %v, want %v", what, j, got[j], want[j])
		}
	}
}

func TestKVSlotsErrors(t *testing.T) {
	d := testDevice(t)
	cache := KVCacheBytes(2, 16, 32, true)
	big := newBufferInit(t, d, "caches", make([]byte, 3*cache))
	x := newBufferInit(t, d, "x", make([]byte, 4096*4))
	pos := newBufferInit(t, d, "table", make([]byte, 8))
	p := RoPEParams{Dim: 32, InvFreq: testInvFreq(32, 10000)}
	for _, c := range []struct {
		name  string
		slots KVSlots
		m     int
	}{
		{"stride below a cache", KVSlots{N: 2, Stride: cache - 64}, 1},
		{"stride not whole rows", KVSlots{N: 2, Stride: cache + 2}, 1},
		{"caches too small", KVSlots{N: 4, Stride: cache}, 1},
		{"table too small", KVSlots{N: 3, Stride: cache}, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			rows := stacked(c.m, 4, 2, 32)
			rows.Slots = c.slots
			if op, err := d.RoPEKV(Whole(x), Whole(big), Whole(big), Whole(pos), rows, 16, true, p); err == nil {
				op.Release()
				t.Error("RoPEKV accepted")
			}
			o := AttnOpts{Scale: 1, F16: true, QStride: rows.QStride, Slots: c.slots}
			if ops, err := d.Attention(Whole(x), Whole(big), Whole(big), Whole(x), Whole(pos), c.m, 4, 2, 32, 16, o); err == nil {
				releaseOps(ops)
				t.Error("Attention accepted")
			}
		})
	}
}

func newBufferInit(tb testing.TB, d *Device, label string, b []byte) *Buffer {
	tb.Helper()
	buf, err := d.NewBufferInit(label, b)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(buf.Release)
	return buf
}

func readAll(tb testing.TB, d *Device, b *Buffer) []byte {
	tb.Helper()
	raw, err := d.Read(b, 0, b.Size())
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}
