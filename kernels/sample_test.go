//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestSampleParamsSize(t *testing.T) {
	if n := binary.Size(sampleParams{}); n%16 != 0 {
		t.Fatalf("sampleParams is %d bytes", n)
	}
}

// sampleRig holds the buffers of one Sample test: logits, a history ring,
// and nu states/outputs (one op each, all run in one submit).
type sampleRig struct {
	d                     *Device
	logits, hist, st, out *Buffer
	stride                uint64
	n, nu                 int
}

func newSampleRig(t *testing.T, d *Device, logits []float32, ring []uint32, nu int) *sampleRig {
	t.Helper()
	r := &sampleRig{d: d, n: len(logits), nu: nu, stride: uint64(max(d.Limits().MinStorageOffsetAlignment, 16))}
	var err error
	if r.logits, err = d.NewBufferInit("logits", asBytes(logits)); err != nil {
		t.Fatal(err)
	}
	if r.hist, err = d.NewBufferInit("history", asBytes(ring)); err != nil {
		t.Fatal(err)
	}
	if r.st, err = d.NewBuffer("state", r.stride*uint64(nu)); err != nil {
		t.Fatal(err)
	}
	if r.out, err = d.NewBuffer("out", r.stride*uint64(nu)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.logits.Release()
		r.hist.Release()
		r.st.Release()
		r.out.Release()
	})
	return r
}

// run samples once per u (len(us) ≤ nu) with the ring holding count ids.
func (r *sampleRig) run(t *testing.T, p SampleParams, us []float32, count int) []int {
	t.Helper()
	for i, u := range us {
		if err := r.d.Write(r.st, uint64(i)*r.stride, asBytes([]uint32{math.Float32bits(u), uint32(count), 0, 0})); err != nil {
			t.Fatal(err)
		}
	}
	e := r.d.NewEncoder()
	var ops []*Op
	defer func() {
		for _, op := range ops {
			op.Release()
		}
	}()
	for i := range us {
		o, err := r.d.Sample(Whole(r.logits),
			BufferRange{Buf: r.st, Offset: uint64(i) * r.stride, Size: SampleStateBytes},
			Whole(r.hist),
			BufferRange{Buf: r.out, Offset: uint64(i) * r.stride, Size: 4}, r.n, p)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, o...)
		e.Run(o...)
	}
	raw, err := e.SubmitRead(r.out, 0, r.stride*uint64(len(us)))
	if err != nil {
		t.Fatal(err)
	}
	words := fromBytes[uint32](raw)
	got := make([]int, len(us))
	for i := range us {
		got[i] = int(words[uint64(i)*r.stride/4])
	}
	return got
}

// randLogits draws n logits with some exact ties (values on a 1/8 grid
// for a third of them) and a few planted equal maxima.
func randLogits(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * 3)
		if r.IntN(3) == 0 {
			x[i] = float32(math.Round(float64(x[i])*8) / 8)
		}
	}
	if n > 10 {
		x[n/3], x[n/2], x[n-1] = 9, 9, 9 // exact ties at the top
		x[n/4] = -float32(math.Inf(1))
	}
	return x
}

func TestSample(t *testing.T) {
	d := testDevice(t)
	start := time.Now()
	r := rand.New(rand.NewPCG(15, 16))
	const nu = 24
	const capRing = 48
	var all []SampleParams
	for _, temp := range []float32{0, 0.7, 1, 1.5} {
		for _, k := range []int{0, 1, 40} {
			for _, tp := range []float32{0.9, 1} {
				for _, mp := range []float32{0, 0.05} {
					for _, pen := range []float32{1, 1.3} {
						all = append(all, SampleParams{Temp: temp, TopK: k, TopP: tp, MinP: mp, RepPenalty: pen, RepLastN: 32})
					}
				}
			}
		}
	}
	var compared, skipped, boundary int
	for _, n := range []int{1, 7, 513, 32000} {
		logits := randLogits(r, n)
		// a ring that has wrapped: 100 ids appended, the last 48 kept;
		// ids repeat, and favour the top tokens so the penalty matters.
		count := 100
		ids := make([]int, count)
		for j := range ids {
			ids[j] = r.IntN(n)
			if j%3 == 0 {
				ids[j] = ArgmaxRef(logits)
			}
		}
		ring := make([]uint32, capRing)
		for j, id := range ids {
			ring[j%capRing] = uint32(id)
		}
		rig := newSampleRig(t, d, logits, ring, nu)
		cfgs := all
		if n == 32000 { // lavapipe is slow: a random third of the grid
			cfgs = nil
			for _, p := range all {
				if r.IntN(3) == 0 {
					cfgs = append(cfgs, p)
				}
			}
		}
		for _, p := range cfgs {
			us := make([]float32, nu)
			if n == 32000 {
				us = us[:8]
			}
			for i := range us {
				us[i] = float32(r.Float64())
			}
			us[0], us[1] = 0, math.Float32frombits(0x3f7fffff) // the ends of [0, 1)
			got := rig.run(t, p, us, count)
			for i, u := range us {
				tr := sampleRef(logits, p, ids, u)
				compared++
				if got[i] == tr.token {
					continue
				}
				// A float tie: top-p's mass test, or u on a boundary of
				// the cumulative weights, within f32 summation error.
				const eps = 2e-5
				if tr.topPSlack < eps {
					skipped++
					continue
				}
				if k := indexOf(tr.kept, got[i]); k >= 0 {
					lo := 0.0
					if k > 0 {
						lo = tr.cum[k-1]
					}
					total := tr.cum[len(tr.cum)-1]
					if tr.target >= lo-eps*total && tr.target <= tr.cum[k]+eps*total {
						boundary++
						continue
					}
				}
				t.Errorf("n=%d %+v u=%v: GPU drew %d, reference %d (kept %d ids)", n, p, u, got[i], tr.token, len(tr.kept))
			}
		}
	}
	t.Logf("%d draws compared, %d top-p float ties skipped, %d cumulative-boundary ties; %v", compared, skipped, boundary, time.Since(start))
	if skipped+boundary > compared/50 {
		t.Errorf("too many float ties: %d skipped + %d boundary of %d", skipped, boundary, compared)
	}
}

func indexOf(s []int, v int) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestSampleFilters checks the kept sets on hand-built cases.
func TestSampleFilters(t *testing.T) {
	d := testDevice(t)
	logits := []float32{1, 3, 3, 0, 3, 2, -1, 2}
	rig := newSampleRig(t, d, logits, []uint32{0, 0, 0, 0}, 16)
	us := make([]float32, 16)
	for i := range us {
		us[i] = (float32(i) + 0.5) / 16
	}
	seen := func(p SampleParams, count int) map[int]bool {
		got := rig.run(t, p, us, count)
		m := map[int]bool{}
		for i, g := range got {
			m[g] = true
			if want := SampleRef(logits, p, []int{0, 0, 0, 0}[:count], us[i]); g != want {
				t.Errorf("%+v u=%v: GPU %d, reference %d", p, us[i], g, want)
			}
		}
		return m
	}
	check := func(name string, got map[int]bool, want ...int) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: drew %v, want exactly %v", name, got, want)
			return
		}
		for _, w := range want {
			if !got[w] {
				t.Errorf("%s: drew %v, want exactly %v", name, got, want)
			}
		}
	}
	base := SampleParams{Temp: 1, TopP: 1, RepPenalty: 1}
	check("greedy: lowest of tied maxima", seen(SampleParams{RepPenalty: 1}, 0), 1)
	check("top-k 1", seen(SampleParams{Temp: 1, TopK: 1, TopP: 1, RepPenalty: 1}, 0), 1)
	check("top-k 2: ties by id", seen(SampleParams{Temp: 1, TopK: 2, TopP: 1, RepPenalty: 1}, 0), 1, 2)
	check("top-k 4: 3s then lowest 2", seen(SampleParams{Temp: 1, TopK: 4, TopP: 1, RepPenalty: 1}, 0), 1, 2, 4, 5)
	p := base
	p.TopP = 0.01
	check("top-p tiny keeps all tied maxima", seen(p, 0), 1, 2, 4)
	p = base
	p.MinP = float32(math.Exp(-1.5)) // keeps v ≥ 1.5
	check("min-p", seen(p, 0), 1, 2, 4, 5, 7)
	p = SampleParams{Temp: 1, TopK: 1, TopP: 1, RepPenalty: 3, RepLastN: 4}
	// history {0,0,0,0} penalizes id 0 only: 1/3 — top-1 is still id 1.
	check("penalty on another id", seen(p, 4), 1)
}

func TestSampleErrors(t *testing.T) {
	d := testDevice(t)
	b, _ := d.NewBuffer("b", 256)
	defer b.Release()
	o, _ := d.NewBuffer("o", 256)
	defer o.Release()
	st := BufferRange{Buf: b, Size: 16}
	h := BufferRange{Buf: b, Offset: 0, Size: 64}
	if _, err := d.Sample(Whole(b), st, BufferRange{}, Whole(o), 8, SampleParams{Temp: 1, RepPenalty: 1.1, RepLastN: 8}); err == nil {
		t.Error("penalty without history accepted")
	}
	if _, err := d.Sample(Whole(b), st, h, Whole(o), 8, SampleParams{Temp: 1, RepPenalty: 1.1, RepLastN: 64}); err == nil {
		t.Error("RepLastN above the ring accepted")
	}
	if _, err := d.Sample(Whole(b), st, h, Whole(o), 1000, SampleParams{Temp: 1, RepPenalty: 1}); err == nil {
		t.Error("short logits accepted")
	}
	if _, err := d.Sample(Whole(b), st, h, Whole(o), 8, SampleParams{Temp: 1, RepPenalty: 0}); err == nil {
		t.Error("zero penalty accepted")
	}
	ops, err := d.Sample(Whole(b), st, BufferRange{}, Whole(o), 8, SampleParams{Temp: 1, TopP: 1, RepPenalty: 1})
	if err != nil {
		t.Errorf("no history, no penalty: %v", err)
	}
	for _, op := range ops {
		op.Release()
	}
}

func BenchmarkSample(b *testing.B) {
	d := testDevice(b)
	b.Logf("adapter: %s (%s, %s)", d.Info().Name, d.Info().Backend, d.Info().Type)
	const n = 128256
	r := rand.New(rand.NewPCG(3, 3))
	logits, _ := d.NewBufferInit("logits", asBytes(randLogits(r, n)))
	st, _ := d.NewBufferInit("state", asBytes([]uint32{math.Float32bits(0.37), 64, 0, 0}))
	ring := make([]uint32, 64)
	for i := range ring {
		ring[i] = uint32(r.IntN(n))
	}
	hist, _ := d.NewBufferInit("history", asBytes(ring))
	out, _ := d.NewBuffer("out", 4)
	defer logits.Release()
	defer st.Release()
	defer hist.Release()
	defer out.Release()
	for _, c := range []struct {
		name string
		p    SampleParams
	}{
		{"greedy", SampleParams{RepPenalty: 1}},
		{"llama-defaults", SampleParams{Temp: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepPenalty: 1}},
		{"topk40-pen", SampleParams{Temp: 0.8, TopK: 40, TopP: 1, RepPenalty: 1.1, RepLastN: 64}},
		{"topp0.9-only", SampleParams{Temp: 1, TopP: 0.9, RepPenalty: 1}},
		{"plain", SampleParams{Temp: 1, TopP: 1, RepPenalty: 1}},
	} {
		b.Run(c.name, func(b *testing.B) {
			ops, err := d.Sample(Whole(logits), Whole(st), Whole(hist), Whole(out), n, c.p)
			if err != nil {
				b.Fatal(err)
			}
			defer ops[0].Release()
			b.SetBytes(n * 4)
			b.ResetTimer()
			e := d.NewEncoder()
			for range b.N {
				e.Run(ops...)
			}
			if _, err := e.SubmitRead(out, 0, 4); err != nil {
				b.Fatal(err)
			}
		})
	}
}
