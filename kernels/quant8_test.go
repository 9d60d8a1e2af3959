//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// TestQuantizeQ8: the GPU's 8-bit activations are QuantizeQ8Ref's bytes,
// exactly, for rows with zeros, a zero block, ties and a wide range.
func TestQuantizeQ8(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct{ m, n int }{{1, 128}, {1, 4096}, {3, 640}} {
		x := randF32(r, c.m*c.n, 2)
		x[7] = 0
		for i := 32; i < 64; i++ { // a block of zeros
			x[i] = 0
		}
		// A block of exact halves: 127·X/A lands on .5 (ties to even).
		for i := 64; i < 96; i++ {
			x[i] = float32(i-80) * 0.5
		}
		x[64] = 127
		for i := 96; i < 128; i++ { // a wide range in one block
			x[i] *= float32(math.Pow(10, float64(i%9-4)))
		}
		xb, _ := d.NewBuffer("x", uint64(len(x)*4))
		qb, _ := d.NewBuffer("xq", uint64(c.m)*Q8RowBytes(c.n))
		defer xb.Release()
		defer qb.Release()
		d.WriteF32(xb, 0, x)
		op, err := d.QuantizeQ8(Whole(xb), Whole(qb), c.m, c.n)
		if err != nil {
			t.Fatal(err)
		}
		e := d.NewEncoder()
		e.Run(op)
		got, err := e.SubmitRead(qb, 0, qb.Size())
		op.Release()
		if err != nil {
			t.Fatal(err)
		}
		want := QuantizeQ8Ref(x, c.m, c.n)
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%dx%d: byte %d of %d: %#x, want %#x", c.m, c.n, i, len(got), got[i], want[i])
			}
		}
	}
	if _, err := d.QuantizeQ8(Whole(nil), Whole(nil), 1, 100); err == nil {
		t.Fatal("n = 100 (not a multiple of 128) accepted")
	}
}

// TestMatVecQ8X: the integer-dot kernel computes W·x̂ for the values x̂
// the 8-bit activations stand for (DequantizeQ8Ref), within f32 rounding,
// and stays within the 8-bit rounding of the f32 product.
func TestMatVecQ8X(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct {
		dt         quant.DType
		rows, cols int
		opts       MatMulOpts
	}{
		{quant.Q4_K, 7, 256, MatMulOpts{}},
		{quant.Q4_K, 33, 1024, MatMulOpts{}},
		{quant.Q4_K, 64, 4096, MatMulOpts{Accumulate: true}},
		{quant.Q4_K, 16, 768, MatMulOpts{vecRows: 2, vecU: 1}},
		{quant.Q6_K, 7, 256, MatMulOpts{}},
		{quant.Q6_K, 40, 2048, MatMulOpts{Accumulate: true}},
		{quant.Q6_K, 5, 768, MatMulOpts{vecRows: 4, vecU: 2}},
	} {
		name := fmt.Sprintf("%s/%dx%d", c.dt, c.rows, c.cols)
		wdata := randWeight(r, c.dt, c.rows, c.cols)
		w, err := d.UploadWeight("w", c.dt, c.rows, c.cols, wdata)
		if err != nil {
			t.Fatal(err)
		}
		x := randF32(r, c.cols, 1)
		acc := randF32(r, c.rows, 1)
		raw, xq := runQ8X(t, d, w, x, acc, 1, c.rows, c.opts)
		got := make([]float32, c.rows)
		for i := range got {
			got[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		var add []float32
		if c.opts.Accumulate {
			add = acc
		}
		want := MatMulRef(c.dt, wdata, c.rows, c.cols, DequantizeQ8Ref(xq, 1, c.cols), 1, nil, add)
		exact := MatMulRef(c.dt, wdata, c.rows, c.cols, x, 1, nil, add)
		var scale float64
		for _, v := range exact {
			scale = max(scale, math.Abs(float64(v)))
		}
		for i := range got {
			if !closeTo(got[i], want[i], 1e-5*scale, 1e-5) {
				t.Fatalf("%s: row %d: %g, want %g (from the 8-bit x)", name, i, got[i], want[i])
			}
			if !closeTo(got[i], exact[i], 0.02*scale, 0) {
				t.Fatalf("%s: row %d: %g, the f32 product %g", name, i, got[i], exact[i])
			}
		}
		w.Release()
	}
}

// BenchmarkQuantizeQ8: rounding one activation vector to 8 bits (a decode
// step does it once per matrix input).
func BenchmarkQuantizeQ8(b *testing.B) {
	d := testDevice(b)
	r := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{4096, 14336} {
		x, _ := d.NewBuffer("x", uint64(n*4))
		xq, _ := d.NewBuffer("xq", Q8RowBytes(n))
		d.WriteF32(x, 0, randF32(r, n, 1))
		op, err := d.QuantizeQ8(Whole(x), Whole(xq), 1, n)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) { timeOpChain(b, d, [][]*Op{{op}}, xq) })
		op.Release()
		x.Release()
		xq.Release()
	}
}

// TestMatMulBatchQ8X: the batched kernel on 8-bit activations gives each
// vector the bits MatMul (m == 1) gives it alone, with and without the
// gated activation.
func TestMatMulBatchQ8X(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(11, 12))
	for _, c := range []struct {
		dt         quant.DType
		rows, cols int
		n          int
		opts       MatMulOpts
	}{
		{quant.Q4_K, 24, 512, 3, MatMulOpts{}},
		{quant.Q4_K, 64, 256, 8, MatMulOpts{Gated: true, Act: SiLU}},
		{quant.Q6_K, 20, 768, 4, MatMulOpts{Accumulate: true}},
	} {
		name := fmt.Sprintf("%s/%dx%d/n%d", c.dt, c.rows, c.cols, c.n)
		w, err := d.UploadWeight("w", c.dt, c.rows, c.cols, randWeight(r, c.dt, c.rows, c.cols))
		if err != nil {
			t.Fatal(err)
		}
		outRows := c.rows
		if c.opts.Gated {
			outRows /= 2
		}
		x := randF32(r, c.n*c.cols, 1)
		start := randF32(r, c.n*outRows, 1)
		got, _ := runQ8X(t, d, w, x, start, c.n, outRows, c.opts)
		// Each vector alone: its own row of x, rounded and multiplied.
		for v := range c.n {
			want, _ := runQ8X(t, d, w, x[v*c.cols:(v+1)*c.cols], start[v*outRows:(v+1)*outRows], 1, outRows, c.opts)
			for i := range outRows {
				g := binary.LittleEndian.Uint32(got[4*(v*outRows+i):])
				w := binary.LittleEndian.Uint32(want[4*i:])
				if g != w {
					t.Fatalf("%s: vector %d row %d: batched %g, alone %g", name, v, i, math.Float32frombits(g), math.Float32frombits(w))
				}
			}
		}
		w.Release()
	}
}

// TestRMSNormQ8: the fused norm writes RMSNorm's values and, bit for bit,
// QuantizeQ8's bytes of them.
func TestRMSNormQ8(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(13, 14))
	for _, c := range []struct {
		rows, n int
		addOne  bool
	}{{1, 128, false}, {1, 4096, true}, {3, 640, false}} {
		x := randF32(r, c.rows*c.n, 3)
		w := randF32(r, c.n, 1)
		xb, _ := d.NewBuffer("x", uint64(len(x)*4))
		wb, _ := d.NewBuffer("w", uint64(len(w)*4))
		o1, _ := d.NewBuffer("o1", uint64(len(x)*4))
		o2, _ := d.NewBuffer("o2", uint64(len(x)*4))
		q1, _ := d.NewBuffer("q1", uint64(c.rows)*Q8RowBytes(c.n))
		q2, _ := d.NewBuffer("q2", uint64(c.rows)*Q8RowBytes(c.n))
		d.WriteF32(xb, 0, x)
		d.WriteF32(wb, 0, w)
		fused, err := d.RMSNormQ8(Whole(xb), Whole(wb), Whole(o1), Whole(q1), c.rows, c.n, 1e-5, c.addOne)
		if err != nil {
			t.Fatal(err)
		}
		norm, err := d.RMSNorm(Whole(xb), Whole(wb), Whole(o2), c.rows, c.n, 1e-5, c.addOne)
		if err != nil {
			t.Fatal(err)
		}
		quant, err := d.QuantizeQ8(Whole(o2), Whole(q2), c.rows, c.n)
		if err != nil {
			t.Fatal(err)
		}
		e := d.NewEncoder()
		e.Run(fused, norm)
		e.Run(quant)
		if err := e.Submit(); err != nil {
			t.Fatal(err)
		}
		for _, p := range [][2]*Buffer{{o1, o2}, {q1, q2}} {
			a, err := d.Read(p[0], 0, p[0].Size())
			if err != nil {
				t.Fatal(err)
			}
			b, err := d.Read(p[1], 0, p[1].Size())
			if err != nil {
				t.Fatal(err)
			}
			for i := range a {
				if a[i] != b[i] {
					t.Fatalf("%dx%d: %s byte %d: fused %#x, apart %#x", c.rows, c.n, p[0].label, i, a[i], b[i])
				}
			}
		}
		for _, op := range []*Op{fused, norm, quant} {
			op.Release()
		}
		for _, b := range []*Buffer{xb, wb, o1, o2, q1, q2} {
			b.Release()
		}
	}
	if _, err := d.RMSNormQ8(Whole(nil), Whole(nil), Whole(nil), Whole(nil), 1, 100, 1e-5, false); err == nil {
		t.Fatal("n = 100 (not a multiple of 128) accepted")
	}
}

// runQ8X rounds n vectors x to 8 bits and multiplies them by w with Q8X
// (MatMul for one, MatMulBatch for more) into out, which starts as start
// (outRows values a vector); it returns out's bytes and the 8-bit x.
func runQ8X(t *testing.T, d *Device, w *Weight, x, start []float32, n, outRows int, o MatMulOpts) (out, xq []byte) {
	t.Helper()
	xb, _ := d.NewBuffer("x", uint64(len(x)*4))
	qb, _ := d.NewBuffer("xq", uint64(n)*Q8RowBytes(w.Cols))
	yb, _ := d.NewBuffer("y", uint64(n*outRows*4))
	defer xb.Release()
	defer qb.Release()
	defer yb.Release()
	d.WriteF32(xb, 0, x)
	d.WriteF32(yb, 0, start)
	qop, err := d.QuantizeQ8(Whole(xb), Whole(qb), n, w.Cols)
	if err != nil {
		t.Fatal(err)
	}
	defer qop.Release()
	o.Q8X = true
	var ops []*Op
	if n == 1 {
		ops, err = d.MatMul(w, Whole(qb), Whole(yb), 1, o)
	} else {
		ops, err = d.MatMulBatch(w, Whole(qb), Whole(yb), n, BatchOpts{MatMulOpts: o})
	}
	if err != nil {
		t.Fatalf("%s %dx%d, %d vectors: %v", w.DType, w.Rows, w.Cols, n, err)
	}
	defer releaseOps(ops)
	e := d.NewEncoder()
	e.Run(qop)
	e.Run(ops...)
	if out, err = e.SubmitRead(yb, 0, yb.Size()); err != nil {
		t.Fatal(err)
	}
	if xq, err = d.Read(qb, 0, qb.Size()); err != nil {
		t.Fatal(err)
	}
	return out, xq
}
