package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

func TestMoEParamsSize(t *testing.T) {
	for _, p := range []any{moeRouteParams{}, moeMatMulParams{}, moeCombineParams{}} {
		if n := binary.Size(p); n%16 != 0 {
			t.Errorf("%T is %d bytes, want a multiple of 16", p, n)
		}
	}
}

// moeRandWeight returns experts × rows × cols random values quantized as
// dt (row magnitudes vary so block scales differ).
func moeRandWeight(r *rand.Rand, dt quant.DType, n, cols int) []byte {
	v := make([]float32, n*cols)
	for i := range v {
		v[i] = (r.Float32()*2 - 1) * float32(1+i/cols%3)
	}
	data, err := quant.Quantize(dt, v)
	if err != nil {
		panic(err)
	}
	return data
}

// moeUploadParts uploads an expert stack split into parts of at most
// maxRows rows (any row, mid-expert included), packed in ONE buffer at
// aligned offsets.
func moeUploadParts(tb testing.TB, d *Device, dt quant.DType, experts, rows, cols int, data []byte, maxRows int) *ExpertWeight {
	tb.Helper()
	rb, _ := dt.RowBytes(cols)
	align := d.Limits().MinStorageOffsetAlignment
	total := experts * rows
	w := &Weight{Name: "experts", DType: dt, Rows: total, Cols: cols}
	var packed []byte
	for r0 := 0; r0 < total; r0 += maxRows {
		n := min(maxRows, total-r0)
		off := (len(packed) + align - 1) / align * align
		packed = append(packed, make([]byte, off-len(packed))...)
		packed = append(packed, data[r0*rb:(r0+n)*rb]...)
		w.Parts = append(w.Parts, WeightPart{Offset: uint64(off), Row0: r0, Rows: n})
	}
	buf, err := d.NewBufferInit("experts", append(packed, 0, 0, 0, 0))
	if err != nil {
		tb.Fatal(err)
	}
	for i := range w.Parts {
		w.Parts[i].Buf = buf
	}
	ew, err := NewExpertWeight(w, experts)
	if err != nil {
		tb.Fatal(err)
	}
	return ew
}

func moeBuf(tb testing.TB, d *Device, label string, v []float32, n int) *Buffer {
	tb.Helper()
	b, err := d.NewBuffer(label, uint64(max(n, len(v), 1))*4)
	if err != nil {
		tb.Fatal(err)
	}
	if len(v) > 0 {
		if err := d.WriteF32(b, 0, v); err != nil {
			tb.Fatal(err)
		}
	}
	return b
}

func compareF32(t *testing.T, what string, got, want []float32, abs, rel float64) {
	t.Helper()
	bad := 0
	for i := range want {
		if !closeTo(got[i], want[i], abs, rel) {
			if bad++; bad <= 5 {
				t.Errorf("%s[%d] = %v, want %v", what, i, got[i], want[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values off", what, bad, len(want))
	}
}

func runRoute(t *testing.T, d *Device, logits []float32, m, e, k int, g Gating) ([]uint32, []float32) {
	t.Helper()
	lb := moeBuf(t, d, "logits", logits, 0)
	defer lb.Release()
	sb, _ := d.NewBuffer("sel", uint64(m*k*4))
	defer sb.Release()
	wb, _ := d.NewBuffer("wts", uint64(m*k*4))
	defer wb.Release()
	op, err := d.MoERoute(Whole(lb), Whole(sb), Whole(wb), m, e, k, g)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Release()
	enc := d.NewEncoder()
	enc.Run(op)
	if err := enc.Submit(); err != nil {
		t.Fatal(err)
	}
	sel, err := d.ReadU32(sb, 0, m*k)
	if err != nil {
		t.Fatal(err)
	}
	wts, err := d.ReadF32(wb, 0, m*k)
	if err != nil {
		t.Fatal(err)
	}
	return sel, wts
}

func checkRoute(t *testing.T, d *Device, logits []float32, m, e, k int, g Gating) {
	t.Helper()
	sel, wts := runRoute(t, d, logits, m, e, k, g)
	wantSel, wantWts := MoERouteRef(logits, m, e, k, g)
	for i := range wantSel {
		if sel[i] != wantSel[i] {
			t.Fatalf("sel = %v, want %v (logits %v)", sel, wantSel, logits)
		}
	}
	compareF32(t, "wts", wts, wantWts, 1e-6, 1e-5)
	for tok := range m {
		var s float64
		for j := range k {
			s += float64(wts[tok*k+j])
		}
		if math.Abs(s-1) > 1e-5 {
			t.Errorf("token %d: weights sum to %v", tok, s)
		}
	}
}

func TestMoERoute(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(21, 22))
	for _, g := range []Gating{GatingSoftmax, GatingTopKSoftmax} {
		for _, e := range []int{4, 8, 32} {
			for _, k := range []int{1, 2, 4, e} {
				if k > e {
					continue
				}
				for _, m := range []int{1, 3, 7, 70} {
					t.Run(fmt.Sprintf("%v/E%d/k%d/m%d", g, e, k, m), func(t *testing.T) {
						checkRoute(t, d, randF32(r, m*e, 4), m, e, k, g)
					})
				}
			}
		}
	}
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	special := map[string][]float32{
		"all-equal":  {1, 1, 1, 1, 1, 1, 1, 1},
		"pair-ties":  {0, 2, 2, -1, 3, 3, 2, 0},
		"one-wins":   {-5, -5, 9, -5, -5, -5, -5, -5},
		"neg-inf":    {-inf, 1, -inf, 0, -inf, -inf, -inf, -inf},
		"all-neginf": {-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf},
		"nan":        {nan, 1, nan, 2, 0, 0, nan, 1},
		"large":      {80, 85, -80, 85, 0, 1e4, 1e4, -1e4},
	}
	for name, l := range special {
		for _, g := range []Gating{GatingSoftmax, GatingTopKSoftmax} {
			for _, k := range []int{1, 2, 3, 8} {
				t.Run(fmt.Sprintf("%s/%v/k%d", name, g, k), func(t *testing.T) { checkRoute(t, d, l, 1, 8, k, g) })
			}
		}
	}
	// Ties → lower id first, explicitly.
	sel, wts := runRoute(t, d, []float32{1, 3, 3, 1}, 1, 4, 4, GatingTopKSoftmax)
	if fmt.Sprint(sel) != "[1 2 0 3]" || wts[0] != wts[1] || wts[2] != wts[3] {
		t.Errorf("ties: sel %v wts %v, want [1 2 0 3] with pairwise equal weights", sel, wts)
	}
}

type moeMMCase struct {
	dt               quant.DType
	experts, rows    int
	cols, m, k       int
	perSlot, bias    bool
	maxRows          int // split the stack into parts of this many rows; 0 = UploadExpertWeight
	selMode          int // 0 random ids, 1 one expert for every slot, 2 all distinct per token
	poisonUnselected bool
}

func (c moeMMCase) String() string {
	s := fmt.Sprintf("%s/E%d/%dx%d/m%d/k%d", c.dt, c.experts, c.rows, c.cols, c.m, c.k)
	if c.perSlot {
		s += "/perslot"
	}
	if c.bias {
		s += "/bias"
	}
	if c.maxRows > 0 {
		s += fmt.Sprintf("/parts%d", c.maxRows)
	}
	if c.poisonUnselected {
		s += "/poison"
	}
	return s + fmt.Sprintf("/sel%d", c.selMode)
}

func checkMatMulExperts(t *testing.T, d *Device, r *rand.Rand, c moeMMCase) {
	t.Helper()
	slots := c.m * c.k
	sel := make([]uint32, slots)
	for tok := range c.m {
		perm := r.Perm(c.experts)
		for j := range c.k {
			switch c.selMode {
			case 0:
				sel[tok*c.k+j] = uint32(r.IntN(c.experts))
			case 1:
				sel[tok*c.k+j] = uint32(c.experts / 2)
			case 2:
				sel[tok*c.k+j] = uint32(perm[j])
			}
		}
	}
	data := moeRandWeight(r, c.dt, c.experts*c.rows, c.cols)
	if c.poisonUnselected {
		// Unselected experts are NaN: reading any of their bytes shows.
		used := map[uint32]bool{}
		for _, e := range sel {
			used[e] = true
		}
		rb, _ := c.dt.RowBytes(c.cols)
		for e := range c.experts {
			if !used[uint32(e)] {
				for i := e * c.rows * rb; i < (e+1)*c.rows*rb; i++ {
					data[i] = 0xff
				}
			}
		}
	}
	var w *ExpertWeight
	if c.maxRows > 0 {
		w = moeUploadParts(t, d, c.dt, c.experts, c.rows, c.cols, data, c.maxRows)
	} else {
		var err error
		if w, err = d.UploadExpertWeight("experts", c.dt, c.experts, c.rows, c.cols, data); err != nil {
			t.Fatal(err)
		}
	}
	defer w.Release()
	xRows := c.m
	if c.perSlot {
		xRows = slots
	}
	x := randF32(r, xRows*c.cols, 1)
	xb := moeBuf(t, d, "x", x, 0)
	defer xb.Release()
	selBuf, _ := d.NewBuffer("sel", uint64(slots*4))
	defer selBuf.Release()
	if err := d.WriteU32(selBuf, 0, sel); err != nil {
		t.Fatal(err)
	}
	var bias []float32
	var br BufferRange
	if c.bias {
		bias = randF32(r, c.experts*c.rows, 2)
		bb := moeBuf(t, d, "bias", bias, 0)
		defer bb.Release()
		br = Whole(bb)
	}
	out := moeBuf(t, d, "out", randF32(r, slots*c.rows, 100), 0) // garbage: every value must be written
	defer out.Release()
	ops, err := d.MatMulExperts(w, Whole(xb), Whole(selBuf), Whole(out), c.m, c.k, c.perSlot, br)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseOps(ops)
	if len(ops) != len(w.W.Parts) {
		t.Fatalf("%d ops for %d parts", len(ops), len(w.W.Parts))
	}
	enc := d.NewEncoder()
	enc.Run(ops...)
	raw, err := enc.SubmitRead(out, 0, uint64(slots*c.rows*4))
	if err != nil {
		t.Fatal(err)
	}
	want := MatMulExpertsRef(c.dt, data, c.experts, c.rows, c.cols, x, sel, c.m, c.k, c.perSlot, bias)
	compareF32(t, "out", fromBytes[float32](raw), want, 1e-4, 1e-4)
}

// moeCols are awkward column counts per dtype.
func moeCols(dt quant.DType) []int {
	switch dt.BlockSize() {
	case 1:
		return []int{7, 66}
	case 32:
		return []int{96}
	default:
		return []int{256, 512}
	}
}

func TestMatMulExperts(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(23, 24))
	dts := []quant.DType{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q5_0, quant.Q4_K, quant.Q6_K, quant.MXFP4}
	i := 0
	for _, dt := range dts {
		for _, cols := range moeCols(dt) {
			for _, e := range []int{4, 8} {
				for _, k := range []int{1, 2, e} {
					for _, m := range []int{1, 3, 7} {
						i++
						c := moeMMCase{dt: dt, experts: e, rows: 5 + 4*(i%3), cols: cols, m: m, k: k,
							perSlot: i%2 == 0, bias: i%3 == 0, selMode: i % 3}
						if c.k == c.experts && c.selMode == 2 {
							c.selMode = 0
						}
						// The heavier cases only for a few shapes.
						if m == 7 && k == e && e == 8 && dt.BlockSize() > 1 && i%2 == 1 {
							continue
						}
						t.Run(c.String(), func(t *testing.T) { checkMatMulExperts(t, d, r, c) })
					}
				}
			}
		}
	}
}

// TestMatMulExpertsParts splits the stack mid-expert and on expert
// boundaries, and poisons the unselected experts with NaNs.
func TestMatMulExpertsParts(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(25, 26))
	for _, dt := range []quant.DType{quant.F32, quant.Q8_0, quant.Q4_K, quant.MXFP4} {
		cols := moeCols(dt)[0]
		for _, maxRows := range []int{3, 9, 18, 0} {
			for _, m := range []int{1, 3} {
				c := moeMMCase{dt: dt, experts: 8, rows: 9, cols: cols, m: m, k: 2, bias: m == 3, perSlot: maxRows == 9,
					maxRows: maxRows, selMode: 2, poisonUnselected: true}
				t.Run(c.String(), func(t *testing.T) { checkMatMulExperts(t, d, r, c) })
			}
		}
	}
}

func TestMoECombine(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(27, 28))
	for _, m := range []int{1, 3, 7} {
		for _, k := range []int{1, 2, 4} {
			for _, n := range []int{1, 67, 300} {
				for _, acc := range []bool{false, true} {
					t.Run(fmt.Sprintf("m%d/k%d/n%d/acc=%v", m, k, n, acc), func(t *testing.T) {
						y := randF32(r, m*k*n, 3)
						wts := randF32(r, m*k, 1)
						var init []float32
						if acc {
							init = randF32(r, m*n, 2)
						}
						yb := moeBuf(t, d, "y", y, 0)
						defer yb.Release()
						wb := moeBuf(t, d, "wts", wts, 0)
						defer wb.Release()
						ob := moeBuf(t, d, "out", init, m*n)
						defer ob.Release()
						op, err := d.MoECombine(Whole(yb), Whole(wb), Whole(ob), m, k, n, acc)
						if err != nil {
							t.Fatal(err)
						}
						defer op.Release()
						enc := d.NewEncoder()
						enc.Run(op)
						raw, err := enc.SubmitRead(ob, 0, uint64(m*n*4))
						if err != nil {
							t.Fatal(err)
						}
						compareF32(t, "out", fromBytes[float32](raw), MoECombineRef(y, wts, m, k, n, init), 1e-5, 1e-5)
					})
				}
			}
		}
	}
}

func TestMoEErrors(t *testing.T) {
	d := testDevice(t)
	b, _ := d.NewBuffer("b", 4096)
	defer b.Release()
	o, _ := d.NewBuffer("o", 4096)
	defer o.Release()
	if _, err := d.MoERoute(Whole(b), Whole(o), Whole(o), 1, 4, 5, GatingSoftmax); err == nil {
		t.Error("route with k > experts: no error")
	}
	if _, err := d.MoERoute(Whole(b), Whole(o), Whole(o), 1000, 4, 2, GatingSoftmax); err == nil {
		t.Error("route with too small buffers: no error")
	}
	w, err := d.UploadExpertWeight("w", quant.F32, 4, 3, 8, make([]byte, 4*3*8*4))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Release()
	if _, err := d.MatMulExperts(w, Whole(b), Whole(o), Whole(o), 1, 5, false, BufferRange{}); err == nil {
		t.Error("matmul experts with k > experts: no error")
	}
	if _, err := d.MatMulExperts(w, BufferRange{Buf: b, Size: 16}, Whole(b), Whole(o), 1, 2, false, BufferRange{}); err == nil {
		t.Error("matmul experts with a short x: no error")
	}
	if _, err := NewExpertWeight(w.W, 5); err == nil {
		t.Error("NewExpertWeight with 5 experts of 12 rows: no error")
	}
	if _, err := d.MoECombine(Whole(b), Whole(b), Whole(o), 1, 2, 4096, false); err == nil {
		t.Error("combine with too small buffers: no error")
	}
}
