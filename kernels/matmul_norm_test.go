//go:build cgo || js

package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

// TestMatVecNorm checks MatMulOpts.Norm: the normed product of every
// dtype with a fast kernel, plain, with bias or accumulation, gated, and
// with Gemma's 1 + g, against RMSNorm and MatMul on the GPU (the two
// dispatches it replaces) and against the CPU references.
func TestMatVecNorm(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(41, 42))
	cases := []struct {
		dt         quant.DType
		rows, cols int
		o          MatMulOpts
		addOne     bool
		xScale     float32
	}{
		{dt: quant.Q4_K, rows: 37, cols: 512, xScale: 1},
		{dt: quant.Q4_K, rows: 64, cols: 4608, xScale: 30}, // two units a step
		{dt: quant.Q4_K, rows: 40, cols: 4608, o: MatMulOpts{Gated: true, Act: SiLU}, xScale: 3},
		{dt: quant.Q6_K, rows: 19, cols: 512, o: MatMulOpts{Accumulate: true}, xScale: 0.01},
		{dt: quant.Q6_K, rows: 18, cols: 4608, addOne: true, xScale: 2},
		{dt: quant.Q8_0, rows: 33, cols: 160, xScale: 1},
		{dt: quant.Q8_0, rows: 6, cols: 4128, o: MatMulOpts{Gated: true, Act: SwiGLUOAI}, xScale: 1},
		{dt: quant.F16, rows: 21, cols: 1032, addOne: true, xScale: 5},
		{dt: quant.F16, rows: 3, cols: 2056, xScale: 1},
	}
	for _, c := range cases {
		bias := c.o.Accumulate || c.dt == quant.Q8_0 && !c.o.Gated
		name := fmt.Sprintf("%s/%dx%d/gated=%v/acc=%v/bias=%v/add1=%v", c.dt, c.rows, c.cols, c.o.Gated, c.o.Accumulate, bias, c.addOne)
		t.Run(name, func(t *testing.T) {
			data := randWeight(r, c.dt, c.rows, c.cols)
			w, err := d.UploadWeight("w", c.dt, c.rows, c.cols, data)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Release()
			if !w.CanNorm() {
				t.Fatalf("%s %dx%d: CanNorm false", c.dt, c.rows, c.cols)
			}
			x := randF32(r, c.cols, c.xScale)
			g := randF32(r, c.cols, 1)
			const eps = 1e-5
			outRows := c.rows
			if c.o.Gated {
				outRows = c.rows / 2
			}
			start := randF32(r, outRows, 1) // what out holds before (Accumulate)
			var bv []float32
			buf := func(name string, v []float32) BufferRange {
				b, err := d.NewBufferInit(name, asBytes(v))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(b.Release)
				return Whole(b)
			}
			xb, gb := buf("x", x), buf("g", g)
			fused, split, xn := buf("fused", start), buf("split", start), buf("xn", make([]float32, c.cols))
			o := c.o
			if bias {
				bv = randF32(r, c.rows, 1)
				o.Bias = buf("bias", bv)
			}
			on := o
			on.Norm = NormIn{G: gb, Eps: eps, AddOne: c.addOne}
			ops, err := d.MatMul(w, xb, fused, 1, on)
			if err != nil {
				t.Fatal(err)
			}
			defer releaseOps(ops)
			norm, err := d.RMSNorm(xb, gb, xn, 1, c.cols, eps, c.addOne)
			if err != nil {
				t.Fatal(err)
			}
			defer norm.Release()
			mm, err := d.MatMul(w, xn, split, 1, o)
			if err != nil {
				t.Fatal(err)
			}
			defer releaseOps(mm)
			e := d.NewEncoder()
			e.Run(ops...)
			e.Run(norm)
			e.Run(mm...)
			raw, err := e.SubmitRead(fused.Buf, 0, uint64(outRows*4))
			if err != nil {
				t.Fatal(err)
			}
			got := fromBytes[float32](raw)
			raw, err = d.Read(split.Buf, 0, uint64(outRows*4))
			if err != nil {
				t.Fatal(err)
			}
			want := fromBytes[float32](raw)

			xr := RMSNormRef(x, g, 1, c.cols, eps, c.addOne)
			var acc []float32
			if c.o.Accumulate {
				acc = start
			}
			ref := MatMulRef(c.dt, data, c.rows, c.cols, xr, 1, bv, acc)
			if c.o.Gated {
				ref = GatedActRef(ref, 1, outRows, c.rows, outRows, c.o.Act)
			}
			// The two sum in different orders (W·(g⊙x) scaled, against
			// W·(scaled x ⊙ g)): f32 rounding of sums of thousands of
			// terms apart, not more.
			for i := range outRows {
				if !closeTo(got[i], want[i], 3e-4, 1e-4) {
					t.Errorf("row %d: normed %v, RMSNorm + MatMul %v", i, got[i], want[i])
				}
				if !closeTo(got[i], ref[i], 1e-3, 1e-3) {
					t.Errorf("row %d: normed %v, reference %v", i, got[i], ref[i])
				}
			}
		})
	}
}

// TestMatVecNormErrors: Norm where no normed kernel runs is an error, not
// a silently unnormed product.
func TestMatVecNormErrors(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(43, 44))
	q4, err := d.UploadWeight("q4", quant.Q4_K, 8, 256, randWeight(r, quant.Q4_K, 8, 256))
	if err != nil {
		t.Fatal(err)
	}
	defer q4.Release()
	f32, err := d.UploadWeight("f32", quant.F32, 8, 64, randWeight(r, quant.F32, 8, 64))
	if err != nil {
		t.Fatal(err)
	}
	defer f32.Release()
	x, _ := d.NewBuffer("x", 4*256*4)
	defer x.Release()
	out, _ := d.NewBuffer("out", 4*8*4)
	defer out.Release()
	g, _ := d.NewBuffer("g", 256*4)
	defer g.Release()
	short := BufferRange{Buf: g, Size: 64 * 4}
	for _, c := range []struct {
		name string
		w    *Weight
		m    int
		o    MatMulOpts
	}{
		{"two rows", q4, 2, MatMulOpts{Norm: NormIn{G: Whole(g)}}},
		{"no fast kernel", f32, 1, MatMulOpts{Norm: NormIn{G: Whole(g)}}},
		{"short norm weight", q4, 1, MatMulOpts{Norm: NormIn{G: short}}},
		{"generic kernel", q4, 1, MatMulOpts{Norm: NormIn{G: Whole(g)}, vecOld: true}},
	} {
		if ops, err := d.MatMul(c.w, Whole(x), Whole(out), c.m, c.o); err == nil {
			releaseOps(ops)
			t.Errorf("%s: no error", c.name)
		}
	}
	// MatMulBatch takes Norm where its fast kernel runs
	// (TestMatMulBatchOptions), as MatMul with m == 1.
	if ops, err := d.MatMulBatch(f32, Whole(x), Whole(out), 2, BatchOpts{MatMulOpts: MatMulOpts{Norm: NormIn{G: Whole(g)}}}); err == nil {
		releaseOps(ops)
		t.Error("MatMulBatch with Norm, no fast kernel: no error")
	}
}

// TestMatMulBatchGatedNorm: the batched product with both the norm and
// the gated activation folded in gives each vector the bits of the m ==
// 1 normed gated product on that vector alone (what a batched decode
// step's gate+up must give for its tokens to be the ones alone).
func TestMatMulBatchGatedNorm(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(45, 46))
	for _, c := range []struct {
		dt        quant.DType
		ffn, cols int
		n         int
		act       Act
		addOne    bool
	}{
		{quant.Q4_K, 40, 4608, 8, SiLU, false},
		{quant.Q6_K, 19, 512, 3, GELUTanh, true},
		{quant.Q8_0, 6, 4128, 2, SwiGLUOAI, false},
		{quant.F16, 3, 2056, 5, SiLU, false},
	} {
		t.Run(fmt.Sprintf("%s/ffn%d/cols%d/n%d/%v/add1=%v", c.dt, c.ffn, c.cols, c.n, c.act, c.addOne), func(t *testing.T) {
			data := randWeight(r, c.dt, 2*c.ffn, c.cols)
			w, err := d.UploadWeight("w", c.dt, 2*c.ffn, c.cols, data)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Release()
			buf := func(name string, v []float32) *Buffer {
				b, err := d.NewBufferInit(name, asBytes(v))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(b.Release)
				return b
			}
			x := randF32(r, c.n*c.cols, 2)
			xb, gb := buf("x", x), buf("g", randF32(r, c.cols, 1))
			batched := buf("batched", make([]float32, c.n*c.ffn))
			o := MatMulOpts{Gated: true, Act: c.act, Norm: NormIn{G: Whole(gb), Eps: 1e-6, AddOne: c.addOne}}
			ops, err := d.MatMulBatch(w, Whole(xb), Whole(batched), c.n, BatchOpts{MatMulOpts: o})
			if err != nil {
				t.Fatal(err)
			}
			defer releaseOps(ops)
			e := d.NewEncoder()
			e.Run(ops...)
			readAlone := runAlone(t, d, e, w, c.n, c.cols, c.ffn, o, func(b int) []float32 { return x[b*c.cols : (b+1)*c.cols] }, nil)
			if err := e.Submit(); err != nil {
				t.Fatal(err)
			}
			got, err := d.ReadF32(batched, 0, c.n*c.ffn)
			if err != nil {
				t.Fatal(err)
			}
			alone := readAlone()
			diff := 0
			for b := range c.n {
				for i := range c.ffn {
					g, a := got[b*c.ffn+i], alone[b][i]
					if math.Float32bits(g) != math.Float32bits(a) {
						if diff++; diff <= 5 {
							t.Errorf("vector %d row %d: %v batched, %v alone", b, i, g, a)
						}
					}
				}
			}
		})
	}
}
