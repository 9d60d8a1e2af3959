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

func TestMatMulBatchParamsSize(t *testing.T) {
	if n := binary.Size(matmulBatchParams{}); n%16 != 0 {
		t.Fatalf("matmulBatchParams is %d bytes, want a multiple of 16", n)
	}
}

type batchCase struct {
	dt         quant.DType
	rows, cols int
	n          int
	xPad, oPad int // extra f32 between vectors
	bias, acc  bool
	maxRows    int
	norm       bool // MatMulOpts.Norm on x (addOne: Gemma's 1 + g)
	addOne     bool
	opts       MatMulOpts
}

func (c batchCase) String() string {
	s := fmt.Sprintf("%s/%dx%d/n%d", c.dt, c.rows, c.cols, c.n)
	if c.xPad > 0 || c.oPad > 0 {
		s += fmt.Sprintf("/pad%d,%d", c.xPad, c.oPad)
	}
	if c.bias {
		s += "/bias"
	}
	if c.acc {
		s += "/acc"
	}
	if c.maxRows > 0 {
		s += fmt.Sprintf("/parts%d", c.maxRows)
	}
	if c.opts.vecOld {
		s += "/old"
	}
	if c.opts.vecRows > 0 {
		s += fmt.Sprintf("/r%d", c.opts.vecRows)
	}
	if c.opts.vecGroups > 1 {
		s += fmt.Sprintf("/g%d", c.opts.vecGroups)
	}
	if c.norm {
		s += fmt.Sprintf("/norm/add1=%v", c.addOne)
	}
	return s
}

// checkMatMulBatch runs MatMulBatch on n random vectors and checks each
// against MatMulRef, and bit for bit against MatMul (m == 1) on that
// vector alone: what makes a batched sequence's tokens its own.
func checkMatMulBatch(t *testing.T, d *Device, r *rand.Rand, c batchCase) {
	t.Helper()
	data := randWeight(r, c.dt, c.rows, c.cols)
	var w *Weight
	var err error
	if c.maxRows > 0 {
		w, err = uploadWeightParts(d, "w", c.dt, c.rows, c.cols, data, c.maxRows)
	} else {
		w, err = d.UploadWeight("w", c.dt, c.rows, c.cols, data)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer w.Release()
	xs, os := c.cols+c.xPad, c.rows+c.oPad
	xAll := make([]float32, c.n*xs)
	for b := range c.n {
		copy(xAll[b*xs:], randF32(r, c.cols, 1))
	}
	var bias, acc []float32
	buf := func(name string, bytes int) *Buffer {
		b, err := d.NewBuffer(name, uint64(bytes))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Release)
		return b
	}
	in := buf("x", len(xAll)*4)
	biasBuf := buf("bias", c.rows*4)
	out := buf("out", c.n*os*4)
	if err := d.WriteF32(in, 0, xAll); err != nil {
		t.Fatal(err)
	}
	opts := BatchOpts{MatMulOpts: c.opts, XStride: xs, OutStride: os}
	one1 := c.opts
	var g []float32
	const eps = 1e-5
	if c.norm {
		g = randF32(r, c.cols, 1)
		gb := buf("g", c.cols*4)
		if err := d.WriteF32(gb, 0, g); err != nil {
			t.Fatal(err)
		}
		opts.Norm = NormIn{G: Whole(gb), Eps: eps, AddOne: c.addOne}
		one1.Norm = opts.Norm
	}
	if c.bias {
		bias = randF32(r, c.rows, 2)
		if err := d.WriteF32(biasBuf, 0, bias); err != nil {
			t.Fatal(err)
		}
		opts.Bias = Whole(biasBuf)
		one1.Bias = Whole(biasBuf)
	}
	accAll := make([]float32, c.n*os)
	if c.acc {
		accAll = randF32(r, c.n*os, 4)
		acc = make([]float32, 0, c.n*c.rows)
		for b := range c.n {
			acc = append(acc, accAll[b*os:b*os+c.rows]...)
		}
		if err := d.WriteF32(out, 0, accAll); err != nil {
			t.Fatal(err)
		}
		opts.Accumulate, one1.Accumulate = true, true
	}
	ops, err := d.MatMulBatch(w, Whole(in), Whole(out), c.n, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseOps(ops)
	e := d.NewEncoder()
	e.Run(ops...)
	var start func(b int) []float32
	if c.acc {
		start = func(b int) []float32 { return accAll[b*os : b*os+c.rows] }
	}
	readAlone := runAlone(t, d, e, w, c.n, c.cols, c.rows, one1, func(b int) []float32 { return xAll[b*xs : b*xs+c.cols] }, start)
	if err := e.Submit(); err != nil {
		t.Fatal(err)
	}
	got, err := d.ReadF32(out, 0, c.n*os)
	if err != nil {
		t.Fatal(err)
	}
	alone := readAlone()
	x := make([]float32, 0, c.n*c.cols)
	for b := range c.n {
		x = append(x, xAll[b*xs:b*xs+c.cols]...)
	}
	tol := 1e-4
	if c.norm {
		// The normed kernel scales W·(g⊙x) by 1/rms; the reference
		// multiplies the normed x: sums in other orders.
		x, tol = RMSNormRef(x, g, c.n, c.cols, eps, c.addOne), 3e-4
	}
	want := MatMulRef(c.dt, data, c.rows, c.cols, x, c.n, bias, acc)
	bad, diff := 0, 0
	for b := range c.n {
		for row := range c.rows {
			g, w1, a := got[b*os+row], want[b*c.rows+row], alone[b][row]
			if !closeTo(g, w1, tol, 1e-4) {
				if bad++; bad <= 5 {
					t.Errorf("out[%d][%d] = %v, want %v", b, row, g, w1)
				}
			}
			if math.Float32bits(g) != math.Float32bits(a) {
				if diff++; diff <= 5 {
					t.Errorf("out[%d][%d] = %v batched, %v alone", b, row, g, a)
				}
			}
		}
		if c.oPad > 0 && !c.acc {
			// The padding between vectors is left alone.
			for p := c.rows; p < os; p++ {
				if got[b*os+p] != 0 {
					t.Errorf("out[%d] pad %d written: %v", b, p-c.rows, got[b*os+p])
					break
				}
			}
		}
	}
	if bad+diff > 0 {
		t.Errorf("%d of %d values off the reference, %d differ from m == 1", bad, len(want), diff)
	}
}

// runAlone records on e MatMul (m == 1) of each of n vectors vec(b)
// alone, each at its own aligned offset, into rows values that hold
// start(b) first (where start is set), and returns what reads those
// outputs back once e is submitted: the m == 1 side of the batched
// kernels' bit-for-bit tests.
func runAlone(t *testing.T, d *Device, e *Encoder, w *Weight, n, cols, rows int, o MatMulOpts, vec, start func(b int) []float32) func() [][]float32 {
	t.Helper()
	align := uint64(d.Limits().MinStorageOffsetAlignment)
	slot := func(n int) uint64 { return (uint64(n)*4 + align - 1) / align * align }
	one, err := d.NewBuffer("x1", uint64(n)*slot(cols))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(one.Release)
	outOne, err := d.NewBuffer("out1", uint64(n)*slot(rows))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(outOne.Release)
	for b := range n {
		xb := BufferRange{Buf: one, Offset: uint64(b) * slot(cols), Size: uint64(cols * 4)}
		ob := BufferRange{Buf: outOne, Offset: uint64(b) * slot(rows), Size: uint64(rows * 4)}
		if err := d.WriteF32(one, xb.Offset, vec(b)); err != nil {
			t.Fatal(err)
		}
		if start != nil {
			if err := d.WriteF32(outOne, ob.Offset, start(b)); err != nil {
				t.Fatal(err)
			}
		}
		ops, err := d.MatMul(w, xb, ob, 1, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { releaseOps(ops) })
		e.Run(ops...)
	}
	return func() [][]float32 {
		all, err := d.ReadF32(outOne, 0, n*int(slot(rows))/4)
		if err != nil {
			t.Fatal(err)
		}
		out := make([][]float32, n)
		for b := range out {
			i := b * int(slot(rows)) / 4
			out[b] = all[i : i+rows]
		}
		return out
	}
}

func TestMatMulBatch(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(21, 22))
	ns := []int{2, 8, 16}
	for k, dt := range quant.All() {
		cols := matmulCols(dt)
		for i, n := range ns {
			// Rotate the shapes through the dtype's sizes to keep lavapipe fast.
			c := batchCase{dt: dt, n: n, rows: []int{1, 7, 65, 300}[(i+k)%4], cols: cols[(i+k)%len(cols)]}
			if i%2 == 1 {
				c.xPad, c.oPad = 64-c.cols%64, 3
			}
			t.Run(c.String(), func(t *testing.T) { checkMatMulBatch(t, d, r, c) })
		}
	}
}

func TestMatMulBatchOptions(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(23, 24))
	for _, c := range []batchCase{
		{dt: quant.Q4_K, rows: 65, cols: 768, n: 4, bias: true, acc: true},
		{dt: quant.Q6_K, rows: 300, cols: 512, n: 5, acc: true, maxRows: 70},
		{dt: quant.Q8_0, rows: 65, cols: 2080, n: 8, bias: true, xPad: 32, oPad: 63},
		{dt: quant.F16, rows: 7, cols: 1032, n: 16, acc: true},
		{dt: quant.MXFP4, rows: 65, cols: 96, n: 6, bias: true, acc: true, maxRows: 16},
		{dt: quant.F32, rows: 65, cols: 257, n: 4, bias: true, xPad: 3},
		{dt: quant.Q4_K, rows: 65, cols: 512, n: 3, opts: MatMulOpts{vecOld: true}},
		{dt: quant.Q8_0, rows: 65, cols: 160, n: 1, xPad: 64, oPad: 64},
		{dt: quant.Q4_K, rows: 65, cols: 256, n: 1},
		// Each rows-per-workgroup: the same sums.
		{dt: quant.Q4_K, rows: 65, cols: 768, n: 8, bias: true, opts: MatMulOpts{vecRows: 2}},
		{dt: quant.Q6_K, rows: 7, cols: 512, n: 3, acc: true, opts: MatMulOpts{vecRows: 4}},
		{dt: quant.Q4_K, rows: 67, cols: 512, n: 8, acc: true, opts: MatMulOpts{vecRows: 8}}, // 64 accumulators a thread
		{dt: quant.Q8_0, rows: 65, cols: 160, n: 5, xPad: 64, opts: MatMulOpts{vecRows: 1}},
		{dt: quant.Q4_K, rows: 13, cols: 512, n: 4, acc: true, xPad: 8, oPad: 3},
		// Rows long enough for two units a step (u = 2) and a tail.
		{dt: quant.Q4_K, rows: 9, cols: 4608, n: 8, bias: true},
		{dt: quant.Q6_K, rows: 9, cols: 4608, n: 5, acc: true},
		{dt: quant.Q8_0, rows: 5, cols: 4128, n: 3},
		{dt: quant.F16, rows: 5, cols: 2056, n: 6, acc: true},
		// Row groups: each group sums as a workgroup of one, so still the
		// m == 1 sums; rows that end inside a group, and groups past the end.
		{dt: quant.Q4_K, rows: 65, cols: 768, n: 4, bias: true, acc: true, opts: MatMulOpts{vecGroups: 4}},
		{dt: quant.Q4_K, rows: 9, cols: 4608, n: 8, bias: true, opts: MatMulOpts{vecGroups: 4}},
		{dt: quant.Q6_K, rows: 300, cols: 512, n: 5, acc: true, maxRows: 70, opts: MatMulOpts{vecGroups: 2}},
		{dt: quant.Q8_0, rows: 65, cols: 2080, n: 8, bias: true, xPad: 32, oPad: 63, opts: MatMulOpts{vecGroups: 3}},
		{dt: quant.F16, rows: 5, cols: 2056, n: 6, acc: true, opts: MatMulOpts{vecGroups: 2}},
		{dt: quant.Q4_K, rows: 67, cols: 512, n: 2, acc: true, opts: MatMulOpts{vecRows: 2, vecGroups: 8}},
		// The norm folded in (MatMulOpts.Norm): each vector's own 1/rms,
		// still the m == 1 normed kernel's bits.
		{dt: quant.Q4_K, rows: 65, cols: 768, n: 4, bias: true, acc: true, norm: true},
		{dt: quant.Q4_K, rows: 9, cols: 4608, n: 8, xPad: 8, norm: true},
		{dt: quant.Q6_K, rows: 7, cols: 512, n: 3, acc: true, norm: true, addOne: true},
		{dt: quant.Q8_0, rows: 65, cols: 160, n: 5, xPad: 64, oPad: 3, norm: true},
		{dt: quant.F16, rows: 5, cols: 2056, n: 6, norm: true},
		{dt: quant.Q4_K, rows: 67, cols: 512, n: 16, norm: true, opts: MatMulOpts{vecRows: 2}},
	} {
		t.Run(c.String(), func(t *testing.T) { checkMatMulBatch(t, d, r, c) })
	}
}

func TestMatMulBatchErrors(t *testing.T) {
	d := testDevice(t)
	w, err := d.UploadWeight("w", quant.Q8_0, 4, 32, make([]byte, 4*34))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Release()
	x, _ := d.NewBuffer("x", 2*32*4)
	out, _ := d.NewBuffer("out", 2*4*4)
	defer x.Release()
	defer out.Release()
	for _, c := range []struct {
		name string
		n    int
		o    BatchOpts
	}{
		{"n=3 with buffers for 2", 3, BatchOpts{}},
		{"n=0", 0, BatchOpts{}},
		{"n over the maximum", MatMulBatchMax + 1, BatchOpts{}},
		{"x stride below cols", 2, BatchOpts{XStride: 31}},
		{"out stride past the buffer", 2, BatchOpts{OutStride: 8}},
		{"norm weight too short", 2, BatchOpts{MatMulOpts: MatMulOpts{Norm: NormIn{G: BufferRange{Buf: x, Size: 16}}}}},
		{"norm with row groups", 2, BatchOpts{MatMulOpts: MatMulOpts{Norm: NormIn{G: Whole(x)}, vecGroups: 2}}},
		{"norm on the generic kernel", 2, BatchOpts{MatMulOpts: MatMulOpts{Norm: NormIn{G: Whole(x)}, vecOld: true}}},
	} {
		if ops, err := d.MatMulBatch(w, Whole(x), Whole(out), c.n, c.o); err == nil {
			releaseOps(ops)
			t.Errorf("%s: accepted", c.name)
		}
	}
}

// BenchmarkMatVecBatch times the batched decode matvec (MatMulBatch) of n
// vectors per dtype and Llama-3-8B shape, set up as BenchmarkMatVec (one
// pass of dependent dispatches over weights rotating through ≥ 256 MiB).
// GB/s is the weight's bandwidth, read once for all n vectors; "tok/s"
// is n vectors per matvec time, whose ratio to n=1 is what batching buys.
// Sub-benchmark names: dtype/OUTxIN/nN[/old], "old" the generic kernel.
func BenchmarkMatVecBatch(b *testing.B) {
	d := testDevice(b)
	b.Logf("adapter: %s (%s, %s)", d.Info().Name, d.Info().Backend, d.Info().Type)
	type shape struct {
		dt         quant.DType
		rows, cols int
	}
	shapes := []shape{
		{quant.Q4_K, 4096, 4096}, {quant.Q4_K, 14336, 4096}, {quant.Q4_K, 4096, 14336},
		{quant.Q6_K, 4096, 14336}, {quant.Q6_K, 128256, 4096},
	}
	for _, s := range shapes {
		r := rand.New(rand.NewPCG(13, 14))
		ws := benchWeights(b, d, r, s.dt, s.rows, s.cols)
		x, _ := d.NewBuffer("x", uint64(MatMulBatchMax*s.cols*4))
		y, _ := d.NewBuffer("y", uint64(MatMulBatchMax*s.rows*4))
		d.WriteF32(x, 0, randF32(r, MatMulBatchMax*s.cols, 1))
		// The default kernel, the generic one ("old"), and the fast one at
		// each rows-per-workgroup (the one free choice: the rest fixes the
		// order of the sums, which must stay that of n == 1).
		// u1: one unit in flight, which sums in another order (not for
		// use, to tell the unroll's cost from the rows').
		// gG: G groups of the default rows a workgroup (rowGroups).
		variants := []MatMulOpts{{}, {vecOld: true}, {vecRows: 1}, {vecRows: 2}, {vecRows: 4}, {vecRows: 6}, {vecRows: 8}, {vecRows: 2, vecU: 1},
			{vecGroups: 2}, {vecGroups: 4}, {vecRows: 2, vecGroups: 4}}
		for _, o := range variants {
			for _, n := range []int{1, 2, 4, 8, 16} {
				name := fmt.Sprintf("%s/%dx%d/n%d", s.dt, s.rows, s.cols, n)
				switch {
				case o.vecOld:
					name += "/old"
				case o.vecRows > 0 || o.vecGroups > 0:
					if n == 1 {
						continue
					}
					if o.vecRows > 0 {
						name += fmt.Sprintf("/r%d", o.vecRows)
					} else {
						name += "/"
					}
					if o.vecU > 0 {
						name += fmt.Sprintf("u%d", o.vecU)
					}
					if o.vecGroups > 0 {
						name += fmt.Sprintf("g%d", o.vecGroups)
					}
				}
				var ops [][]*Op
				for _, w := range ws {
					op, err := d.MatMulBatch(w, Whole(x), Whole(y), n, BatchOpts{MatMulOpts: o})
					if err != nil {
						b.Fatal(err)
					}
					ops = append(ops, op)
				}
				b.Run(name, func(b *testing.B) {
					sec := timeOpChain(b, d, ops, y)
					b.ReportMetric(float64(ws[0].Bytes())*float64(b.N)/sec/1e9, "GB/s")
					b.ReportMetric(float64(n*b.N)/sec, "vec/s")
				})
				for _, op := range ops {
					releaseOps(op)
				}
			}
		}
		x.Release()
		y.Release()
	}
}
