//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

func TestMatMulParamsSize(t *testing.T) {
	if n := binary.Size(matmulParams{}); n%16 != 0 {
		t.Fatalf("matmulParams is %d bytes, want a multiple of 16", n)
	}
}

// uploadWeightParts uploads like UploadWeight but splits the rows into
// parts of at most maxRows, packed in ONE buffer at aligned offsets, so
// tests exercise split weights and part offsets without a huge matrix.
func uploadWeightParts(d *Device, name string, dt quant.DType, rows, cols int, data []byte, maxRows int) (*Weight, error) {
	rb, err := dt.RowBytes(cols)
	if err != nil {
		return nil, err
	}
	align := d.Limits().MinStorageOffsetAlignment
	var offs []int
	total := 0
	for r0 := 0; r0 < rows; r0 += maxRows {
		offs = append(offs, total)
		n := min(maxRows, rows-r0)
		total += (n*rb + align - 1) / align * align
	}
	packed := make([]byte, total)
	w := &Weight{Name: name, DType: dt, Rows: rows, Cols: cols}
	for i, r0 := 0, 0; r0 < rows; i, r0 = i+1, r0+maxRows {
		n := min(maxRows, rows-r0)
		copy(packed[offs[i]:], data[r0*rb:(r0+n)*rb])
		w.Parts = append(w.Parts, WeightPart{Offset: uint64(offs[i]), Row0: r0, Rows: n})
	}
	buf, err := d.NewBufferInit(name, packed)
	if err != nil {
		return nil, err
	}
	for i := range w.Parts {
		w.Parts[i].Buf = buf
	}
	return w, nil
}

// randWeight returns a random rows × cols matrix quantized as dt. Row
// magnitudes vary so that per-block scales differ.
func randWeight(r *rand.Rand, dt quant.DType, rows, cols int) []byte {
	v := make([]float32, rows*cols)
	for i := range v {
		v[i] = (r.Float32()*2 - 1) * float32(1+i/cols%3)
	}
	data, err := quant.Quantize(dt, v)
	if err != nil {
		panic(err)
	}
	return data
}

// TestMatMulSections checks that every dtype's decoder assembles into one
// UV, col and decode, with the shared sections' blocks all filled.
func TestMatMulSections(t *testing.T) {
	for _, dt := range []quant.DType{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q5_0, quant.Q4_K, quant.Q6_K, quant.MXFP4} {
		src, err := matmulSection(dt)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"\nconst UV: u32 ", "\nfn col(", "\nfn decode("} {
			if n := strings.Count(src, want); n != 1 {
				t.Errorf("%s: %d × %q, want 1", dt, n, want[1:])
			}
		}
		for rest := src; ; {
			_, after, ok := strings.Cut(rest, "\n// BEGIN ")
			if !ok {
				break
			}
			name, _, _ := strings.Cut(after, "\n")
			body, _, ok := takeBlock("// BEGIN "+after, name)
			if !ok || strings.TrimSpace(body) == "" {
				t.Errorf("%s: block %s unterminated or left empty", dt, name)
			}
			rest = after
		}
	}
}

type matmulCase struct {
	dt         quant.DType
	rows, cols int
	m          int
	bias, acc  bool
	maxRows    int // split into parts of this many rows; 0 = UploadWeight
	opts       MatMulOpts
}

func (c matmulCase) String() string {
	s := fmt.Sprintf("%s/%dx%d/m%d", c.dt, c.rows, c.cols, c.m)
	if c.bias {
		s += "/bias"
	}
	if c.acc {
		s += "/acc"
	}
	if c.maxRows > 0 {
		s += fmt.Sprintf("/parts%d", c.maxRows)
	}
	if c.opts.vecWG > 0 || c.opts.vecRows > 0 {
		s += fmt.Sprintf("/wg%d/r%d", c.opts.vecWG, c.opts.vecRows)
	}
	if c.opts.vecOld {
		s += "/old"
	}
	if c.opts.vecU > 0 {
		s += fmt.Sprintf("/u%d", c.opts.vecU)
	}
	if c.opts.tileOld {
		s += "/tileold"
	}
	if c.opts.tileRN+c.opts.tileTN+c.opts.tileKS > 0 {
		s += fmt.Sprintf("/r%dt%dk%d", c.opts.tileRN, c.opts.tileTN, c.opts.tileKS)
	}
	return s
}

func checkMatMul(t *testing.T, d *Device, r *rand.Rand, c matmulCase) {
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
	x := randF32(r, c.m*c.cols, 1)
	// x and bias share one read-only buffer; out is its own.
	align := uint64(d.Limits().MinStorageOffsetAlignment)
	xBytes := uint64(len(x) * 4)
	bOff := (xBytes + align - 1) / align * align
	in, err := d.NewBuffer("x+bias", bOff+uint64(c.rows*4))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Release()
	outBytes := uint64(c.m * c.rows * 4)
	out, err := d.NewBuffer("out", outBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	if err := d.WriteF32(in, 0, x); err != nil {
		t.Fatal(err)
	}
	opts := c.opts
	var bias, acc []float32
	if c.bias {
		bias = randF32(r, c.rows, 2)
		if err := d.WriteF32(in, bOff, bias); err != nil {
			t.Fatal(err)
		}
		opts.Bias = BufferRange{Buf: in, Offset: bOff, Size: uint64(c.rows * 4)}
	}
	if c.acc {
		acc = randF32(r, c.m*c.rows, 4)
		if err := d.WriteF32(out, 0, acc); err != nil {
			t.Fatal(err)
		}
		opts.Accumulate = true
	}
	ops, err := d.MatMul(w, BufferRange{Buf: in, Size: xBytes}, Whole(out), c.m, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseOps(ops)
	if len(ops) != len(w.Parts) {
		t.Fatalf("%d ops for %d parts", len(ops), len(w.Parts))
	}
	e := d.NewEncoder()
	e.Run(ops...)
	raw, err := e.SubmitRead(out, 0, outBytes)
	if err != nil {
		t.Fatal(err)
	}
	got := fromBytes[float32](raw)
	want := MatMulRef(c.dt, data, c.rows, c.cols, x, c.m, bias, acc)
	bad := 0
	for i := range want {
		if !closeTo(got[i], want[i], 1e-4, 1e-4) {
			if bad++; bad <= 5 {
				t.Errorf("out[%d][%d] = %v, want %v", i/c.rows, i%c.rows, got[i], want[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d values off", bad, len(want))
	}
}

// matmulCols are the column counts tested per dtype: 1–3 blocks and a few
// more (odd counts for the plain floats).
func matmulCols(dt quant.DType) []int {
	switch dt.BlockSize() {
	case 1:
		return []int{1, 2, 3, 7, 160, 257}
	case 32:
		return []int{32, 64, 96, 160}
	default:
		return []int{256, 512}
	}
}

func TestMatMulVec(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(7, 8))
	for _, dt := range quant.All() {
		for _, cols := range matmulCols(dt) {
			for _, rows := range []int{1, 7, 65, 300} {
				c := matmulCase{dt: dt, rows: rows, cols: cols, m: 1}
				t.Run(c.String(), func(t *testing.T) { checkMatMul(t, d, r, c) })
			}
		}
	}
}

func TestMatMulTiled(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(9, 10))
	for _, dt := range quant.All() {
		cols := matmulCols(dt)
		for i, m := range []int{3, 7, 17, 64} {
			// Rotate the shapes through the dtype's sizes to keep lavapipe fast.
			rows := []int{1, 7, 65, 300}[(i+int(dt))%4]
			c := matmulCase{dt: dt, rows: rows, cols: cols[(i+1)%len(cols)], m: m}
			t.Run(c.String(), func(t *testing.T) { checkMatMul(t, d, r, c) })
		}
		c := matmulCase{dt: dt, rows: 65, cols: cols[len(cols)-1], m: 33}
		t.Run(c.String(), func(t *testing.T) { checkMatMul(t, d, r, c) })
	}
}

func TestMatMulBiasAccumulateParts(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(11, 12))
	for _, c := range []matmulCase{
		{dt: quant.Q4_K, rows: 65, cols: 256, m: 1, bias: true},
		{dt: quant.Q8_0, rows: 7, cols: 96, m: 1, acc: true},
		{dt: quant.F16, rows: 300, cols: 160, m: 1, bias: true, acc: true},
		{dt: quant.Q6_K, rows: 65, cols: 512, m: 17, bias: true},
		{dt: quant.Q5_0, rows: 300, cols: 64, m: 7, acc: true},
		{dt: quant.MXFP4, rows: 65, cols: 96, m: 64, bias: true, acc: true},
		// Split weights: parts at offsets of one buffer, each writing its rows.
		{dt: quant.Q4_K, rows: 300, cols: 256, m: 1, maxRows: 70, bias: true},
		{dt: quant.Q8_0, rows: 65, cols: 160, m: 1, maxRows: 16, acc: true},
		{dt: quant.Q4_0, rows: 300, cols: 96, m: 17, maxRows: 100, bias: true, acc: true},
		{dt: quant.BF16, rows: 65, cols: 7, m: 3, maxRows: 7},
		// Other matvec shapes (the tuning knobs).
		{dt: quant.Q4_K, rows: 300, cols: 512, m: 1, opts: MatMulOpts{vecWG: 32, vecRows: 1}},
		{dt: quant.Q6_K, rows: 65, cols: 512, m: 1, opts: MatMulOpts{vecWG: 256, vecRows: 8}},
		{dt: quant.F32, rows: 65, cols: 257, m: 1, opts: MatMulOpts{vecWG: 64, vecRows: 16}},
		// The fast kernel's shapes, and the generic kernel for its dtypes.
		{dt: quant.Q4_K, rows: 65, cols: 768, m: 1, acc: true, opts: MatMulOpts{vecWG: 32, vecRows: 4, vecU: 2}},
		{dt: quant.Q6_K, rows: 300, cols: 768, m: 1, bias: true, opts: MatMulOpts{vecWG: 128, vecRows: 1}},
		{dt: quant.Q6_K, rows: 65, cols: 2816, m: 1, opts: MatMulOpts{vecWG: 32, vecRows: 2, vecU: 2}},
		{dt: quant.Q8_0, rows: 65, cols: 2080, m: 1, opts: MatMulOpts{vecWG: 32, vecRows: 8, vecU: 2}},
		{dt: quant.F16, rows: 7, cols: 1032, m: 1, opts: MatMulOpts{vecWG: 256, vecRows: 3}},
		{dt: quant.F16, rows: 65, cols: 1032, m: 1, opts: MatMulOpts{vecWG: 32, vecRows: 2, vecU: 2}},
		{dt: quant.Q6_K, rows: 65, cols: 512, m: 1, maxRows: 16, opts: MatMulOpts{vecWG: 32, vecRows: 3}},
		{dt: quant.Q4_K, rows: 65, cols: 512, m: 1, opts: MatMulOpts{vecOld: true}},
		{dt: quant.Q8_0, rows: 65, cols: 160, m: 1, opts: MatMulOpts{vecOld: true}},
	} {
		t.Run(c.String(), func(t *testing.T) { checkMatMul(t, d, r, c) })
	}
}

func TestMatMulErrors(t *testing.T) {
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
	if _, err := d.MatMul(w, Whole(x), Whole(out), 3, MatMulOpts{}); err == nil {
		t.Error("m=3 with buffers for 2 tokens accepted")
	}
	if _, err := d.MatMul(w, Whole(x), Whole(out), 1, MatMulOpts{Bias: BufferRange{Buf: x, Size: 8}}); err == nil {
		t.Error("short bias accepted")
	}
	if _, err := d.MatMul(w, Whole(x), Whole(x), 1, MatMulOpts{}); err == nil {
		t.Error("out bound to x's buffer accepted")
	}
	ops, err := d.MatMul(w, Whole(x), Whole(out), 2, MatMulOpts{})
	if err != nil {
		t.Fatal(err)
	}
	releaseOps(ops)
}

// BenchmarkMatVec times the decode matvec (m == 1) per dtype and shape
// (out × in) and kernel variant. Ops are recorded back to back in ONE pass
// and ONE submit, each writing the same output, so consecutive dispatches
// are dependent (a barrier each, as in a decode step): ns/op is the latency
// of one matvec in a chain, dispatch overhead included. The weights rotate
// over copies of ≥ 256 MiB in all so they stream from HBM, not the 50 MB L2.
// The bytes are the weight's (x and out are noise): GB/s is weight bandwidth.
// Sub-benchmark names: dtype/OUTxIN/variant, variant "old" (the generic
// kernel), "default" or, with DOPPLER_MATVEC_KNOBS=1, "wgN_rR_uU" (the
// fast kernel with that workgroup).
func BenchmarkMatVec(b *testing.B) {
	d := testDevice(b)
	b.Logf("adapter: %s (%s, %s)", d.Info().Name, d.Info().Backend, d.Info().Type)
	type shape struct{ rows, cols int }
	shapes := []shape{{4096, 4096}, {14336, 4096}, {4096, 14336}}
	variants := []MatMulOpts{{vecOld: true}, {}, {Q8X: true},
		{vecWG: 32, vecRows: 2, vecU: 1}, {vecWG: 32, vecRows: 2, vecU: 2}, {vecWG: 32, vecRows: 4, vecU: 1}, {vecWG: 32, vecRows: 4, vecU: 2},
		{vecWG: 64, vecRows: 1, vecU: 2}, {vecWG: 64, vecRows: 2, vecU: 1}, {vecWG: 64, vecRows: 2, vecU: 2},
		{vecWG: 64, vecRows: 4, vecU: 1}, {vecWG: 64, vecRows: 4, vecU: 2},
		{vecWG: 128, vecRows: 2, vecU: 1}, {vecWG: 128, vecRows: 2, vecU: 2}, {vecWG: 128, vecRows: 4, vecU: 1}, {vecWG: 256, vecRows: 2, vecU: 2}}
	if os.Getenv("DOPPLER_MATVEC_KNOBS") == "" {
		variants = variants[:3]
	}
	for _, dt := range []quant.DType{quant.Q4_K, quant.Q6_K, quant.Q8_0, quant.F16} {
		sh := shapes
		if dt == quant.Q6_K {
			sh = append(sh, shape{128256, 4096}) // a Llama-3 LM head
		}
		for _, s := range sh {
			benchMatVecShape(b, d, dt, s.rows, s.cols, variants)
		}
	}
}

// benchWeights uploads copies of a random rows × cols weight, ≥ 256 MiB
// in all, so that a benchmark rotating over them streams from HBM.
func benchWeights(b *testing.B, d *Device, r *rand.Rand, dt quant.DType, rows, cols int) []*Weight {
	// 64 random rows tiled to rows (quantizing the whole matrix is slow).
	tile := randWeight(r, dt, 64, cols)
	data := make([]byte, 0, len(tile)*rows/64)
	for len(data) < len(tile)*rows/64 {
		data = append(data, tile...)
	}
	var ws []*Weight
	b.Cleanup(func() {
		for _, w := range ws {
			w.Release()
		}
	})
	for total := 0; total < 256<<20; total += len(data) {
		w, err := d.UploadWeight("w", dt, rows, cols, data)
		if err != nil {
			b.Fatal(err)
		}
		ws = append(ws, w)
	}
	return ws
}

// timeOpChain records b.N op lists, rotating over ops, in one pass and
// times their one submit (the GPU, not the recording) up to a read of y;
// it reports us/op and returns the seconds.
func timeOpChain(b *testing.B, d *Device, ops [][]*Op, y *Buffer) float64 {
	record := func() *Encoder {
		e := d.NewEncoder()
		for i := range b.N {
			e.Run(ops[i%len(ops)]...)
		}
		return e
	}
	// The same chain once untimed first: a weight's first use pays for
	// making it resident, and a GPU that has idled (between
	// sub-benchmarks) runs at low clocks for the first milliseconds;
	// neither is the kernel's time.
	if _, err := record().SubmitRead(y, 0, 4); err != nil {
		b.Fatal(err)
	}
	e := record()
	b.ResetTimer()
	if _, err := e.SubmitRead(y, 0, 4); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	sec := b.Elapsed().Seconds()
	b.ReportMetric(sec*1e6/float64(b.N), "us/op")
	return sec
}

func benchMatVecShape(b *testing.B, d *Device, dt quant.DType, rows, cols int, variants []MatMulOpts) {
	r := rand.New(rand.NewPCG(13, 14))
	ws := benchWeights(b, d, r, dt, rows, cols)
	x, _ := d.NewBuffer("x", uint64(cols*4))
	y, _ := d.NewBuffer("y", uint64(rows*4))
	defer x.Release()
	defer y.Release()
	d.WriteF32(x, 0, randF32(r, cols, 1))
	xq := quantizeQ8For(b, d, x, cols)
	for _, o := range variants {
		name := "old"
		in := x
		switch {
		case o.Q8X:
			if !ws[0].CanQ8X() {
				continue
			}
			name, in = "q8x", xq
		case !o.vecOld:
			wg, rr, u := matvecFastShape(dt, o)
			if matvecFast(dt, cols) == "" {
				continue
			}
			name = fmt.Sprintf("wg%d_r%d_u%d", wg, rr, u)
			if o.vecWG == 0 && o.vecRows == 0 && o.vecU == 0 {
				name = "default"
			}
		}
		var ops [][]*Op
		for _, w := range ws {
			op, err := d.MatMul(w, Whole(in), Whole(y), 1, o)
			if err != nil {
				b.Fatal(err)
			}
			ops = append(ops, op)
		}
		b.Run(fmt.Sprintf("%s/%dx%d/%s", dt, rows, cols, name), func(b *testing.B) {
			b.SetBytes(int64(ws[0].Bytes()))
			sec := timeOpChain(b, d, ops, y)
			b.ReportMetric(float64(ws[0].Bytes())*float64(b.N)/sec/1e9, "GB/s")
		})
		for _, op := range ops {
			releaseOps(op)
		}
	}
}

// quantizeQ8For returns x (n values) rounded to 8 bits on the GPU, in a
// buffer released with the benchmark.
func quantizeQ8For(b *testing.B, d *Device, x *Buffer, n int) *Buffer {
	xq, err := d.NewBuffer("xq", Q8RowBytes(n))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(xq.Release)
	op, err := d.QuantizeQ8(Whole(x), Whole(xq), 1, n)
	if err != nil {
		b.Fatal(err)
	}
	defer op.Release()
	e := d.NewEncoder()
	e.Run(op)
	if _, err := e.SubmitRead(xq, 0, 4); err != nil {
		b.Fatal(err)
	}
	return xq
}
