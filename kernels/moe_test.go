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

// moeBlock is a whole MoE FFN on the GPU: router MatMul (+ bias) → route →
// gate/up experts (one stack, each expert's rows [gate; up]) → GatedAct on
// m·k rows → down experts (x per slot) → combine into the residual.
type moeBlock struct {
	experts, k, hidden, ffn int
	dt                      quant.DType
	g                       Gating
	act                     Act
	bias                    bool // expert biases (GPT-OSS)

	router                     *Weight
	gateUp, down               *ExpertWeight
	routerData, guData, dnData []byte
	rBias, guBias, dnBias      []float32
	rBiasBuf, guBiasBuf        *Buffer
	dnBiasBuf                  *Buffer
}

func newMoEBlock(tb testing.TB, d *Device, r *rand.Rand, b moeBlock, tied bool, winner int) *moeBlock {
	tb.Helper()
	nr := b.experts
	if tied {
		nr = 1
	}
	rep := func(data []byte) []byte {
		out := data
		for len(out) < len(data)*b.experts/nr {
			out = append(out, data...)
		}
		return out
	}
	b.routerData = rep(moeRandWeight(r, quant.F32, nr, b.hidden))
	b.guData = rep(moeRandWeight(r, b.dt, nr*2*b.ffn, b.hidden))
	b.dnData = rep(moeRandWeight(r, b.dt, nr*b.hidden, b.ffn))
	b.rBias = make([]float32, b.experts)
	if winner >= 0 {
		b.rBias[winner] = 1000
	}
	var err error
	if b.router, err = d.UploadWeight("router", quant.F32, b.experts, b.hidden, b.routerData); err != nil {
		tb.Fatal(err)
	}
	if b.gateUp, err = d.UploadExpertWeight("gate_up", b.dt, b.experts, 2*b.ffn, b.hidden, b.guData); err != nil {
		tb.Fatal(err)
	}
	if b.down, err = d.UploadExpertWeight("down", b.dt, b.experts, b.hidden, b.ffn, b.dnData); err != nil {
		tb.Fatal(err)
	}
	b.rBiasBuf = moeBuf(tb, d, "router bias", b.rBias, 0)
	if b.bias {
		b.guBias = randF32(r, b.experts*2*b.ffn, 1)
		b.dnBias = randF32(r, b.experts*b.hidden, 1)
		if tied {
			for e := 1; e < b.experts; e++ {
				copy(b.guBias[e*2*b.ffn:], b.guBias[:2*b.ffn])
				copy(b.dnBias[e*b.hidden:], b.dnBias[:b.hidden])
			}
		}
		b.guBiasBuf = moeBuf(tb, d, "gate_up bias", b.guBias, 0)
		b.dnBiasBuf = moeBuf(tb, d, "down bias", b.dnBias, 0)
	}
	return &b
}

func (b *moeBlock) release() {
	b.router.Release()
	b.gateUp.Release()
	b.down.Release()
	for _, x := range []*Buffer{b.rBiasBuf, b.guBiasBuf, b.dnBiasBuf} {
		if x != nil {
			x.Release()
		}
	}
}

// moeScratch are the block's activations.
type moeScratch struct {
	x, resid, logits, sel, wts, gu, h, y *Buffer
}

func (s *moeScratch) release() {
	for _, b := range []*Buffer{s.x, s.resid, s.logits, s.sel, s.wts, s.gu, s.h, s.y} {
		b.Release()
	}
}

func (b *moeBlock) scratch(tb testing.TB, d *Device, m int) *moeScratch {
	tb.Helper()
	nb := func(label string, n int) *Buffer {
		x, err := d.NewBuffer(label, uint64(n)*4)
		if err != nil {
			tb.Fatal(err)
		}
		return x
	}
	mk := m * b.k
	return &moeScratch{
		x: nb("x", m*b.hidden), resid: nb("resid", m*b.hidden), logits: nb("logits", m*b.experts),
		sel: nb("sel", mk), wts: nb("wts", mk), gu: nb("gu", mk*2*b.ffn), h: nb("h", mk*b.ffn), y: nb("y", mk*b.hidden),
	}
}

// ops builds the block: resid += MoE(x).
func (b *moeBlock) ops(tb testing.TB, d *Device, s *moeScratch, m int) []*Op {
	tb.Helper()
	var all []*Op
	add := func(ops []*Op, err error) {
		if err != nil {
			releaseOps(all)
			tb.Fatal(err)
		}
		all = append(all, ops...)
	}
	one := func(op *Op, err error) { add([]*Op{op}, err) }
	var guBias, dnBias BufferRange
	if b.bias {
		guBias, dnBias = Whole(b.guBiasBuf), Whole(b.dnBiasBuf)
	}
	mk := m * b.k
	add(d.MatMul(b.router, Whole(s.x), Whole(s.logits), m, MatMulOpts{Bias: Whole(b.rBiasBuf)}))
	one(d.MoERoute(Whole(s.logits), Whole(s.sel), Whole(s.wts), m, b.experts, b.k, b.g))
	add(d.MatMulExperts(b.gateUp, Whole(s.x), Whole(s.sel), Whole(s.gu), m, b.k, false, guBias))
	one(d.GatedAct(Whole(s.gu), Whole(s.h), mk, b.ffn, 2*b.ffn, b.ffn, b.act))
	add(d.MatMulExperts(b.down, Whole(s.h), Whole(s.sel), Whole(s.y), m, b.k, true, dnBias))
	one(d.MoECombine(Whole(s.y), Whole(s.wts), Whole(s.resid), m, b.k, b.hidden, true))
	return all
}

func TestMoEBlock(t *testing.T) {
	d := testDevice(t)
	r := rand.New(rand.NewPCG(29, 30))
	mixtral := moeBlock{experts: 4, k: 2, hidden: 64, ffn: 96, dt: quant.Q8_0, g: GatingSoftmax, act: SiLU}
	gptoss := moeBlock{experts: 4, k: 2, hidden: 64, ffn: 96, dt: quant.MXFP4, g: GatingTopKSoftmax, act: SwiGLUOAI, bias: true}
	type tc struct {
		name   string
		b      moeBlock
		tied   bool
		winner int
	}
	cases := []tc{
		{"mixtral", mixtral, false, -1},
		{"gptoss", gptoss, false, -1},
	}
	for _, base := range []tc{cases[0], cases[1]} {
		tied := base
		tied.name += "/tied-experts"
		tied.tied = true
		kE := base
		kE.name += "/k=E"
		kE.b.k = kE.b.experts
		win := base
		win.name += "/one-wins"
		win.winner = 2
		win1 := win
		win1.name += "/k1"
		win1.b.k = 1
		cases = append(cases, tied, kE, win, win1)
	}
	q4k := mixtral
	q4k.dt, q4k.hidden, q4k.ffn, q4k.experts = quant.Q4_K, 256, 512, 8
	cases = append(cases, tc{"q4k-E8", q4k, false, -1})
	for _, c := range cases {
		for _, m := range []int{1, 3, 7} {
			t.Run(fmt.Sprintf("%s/m%d", c.name, m), func(t *testing.T) {
				checkMoEBlock(t, d, r, newMoEBlock(t, d, r, c.b, c.tied, c.winner), m, c.tied, c.winner)
			})
		}
	}
}

func checkMoEBlock(t *testing.T, d *Device, r *rand.Rand, b *moeBlock, m int, tied bool, winner int) {
	defer b.release()
	s := b.scratch(t, d, m)
	defer s.release()
	x := randF32(r, m*b.hidden, 1)
	resid := randF32(r, m*b.hidden, 1)
	if err := d.WriteF32(s.x, 0, x); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteF32(s.resid, 0, resid); err != nil {
		t.Fatal(err)
	}
	ops := b.ops(t, d, s, m)
	defer releaseOps(ops)

	before := d.Stats()
	enc := d.NewEncoder()
	enc.Run(ops...)
	if err := enc.Submit(); err != nil {
		t.Fatal(err)
	}
	d.Wait()
	after := d.Stats()
	if after.Submits != before.Submits+1 || after.Readbacks != before.Readbacks || after.Passes != before.Passes+1 {
		t.Fatalf("block: %d submits, %d passes, %d readbacks; want 1, 1, 0", after.Submits-before.Submits, after.Passes-before.Passes, after.Readbacks-before.Readbacks)
	}

	// Reference, routed from the GPU's logits (so rounding cannot flip a
	// near tie), every other step from scratch.
	logits, err := d.ReadF32(s.logits, 0, m*b.experts)
	if err != nil {
		t.Fatal(err)
	}
	compareF32(t, "logits", logits, MatMulRef(quant.F32, b.routerData, b.experts, b.hidden, x, m, b.rBias, nil), 1e-4, 1e-4)
	sel, wts := MoERouteRef(logits, m, b.experts, b.k, b.g)
	gotSel, err := d.ReadU32(s.sel, 0, m*b.k)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(gotSel) != fmt.Sprint(sel) {
		t.Fatalf("sel = %v, want %v", gotSel, sel)
	}
	for tok := range m {
		switch {
		case tied:
			for j := range b.k {
				if sel[tok*b.k+j] != uint32(j) || math.Abs(float64(wts[tok*b.k+j])-1/float64(b.k)) > 1e-6 {
					t.Fatalf("tied experts: token %d: sel %v wts %v, want 0.. with equal weights", tok, sel, wts)
				}
			}
		case winner >= 0:
			if sel[tok*b.k] != uint32(winner) || math.Abs(float64(wts[tok*b.k])-1) > 1e-6 {
				t.Fatalf("token %d: sel %v wts %v, want expert %d with weight 1 first", tok, sel, wts, winner)
			}
		}
	}
	gu := MatMulExpertsRef(b.dt, b.guData, b.experts, 2*b.ffn, b.hidden, x, sel, m, b.k, false, b.guBias)
	h := GatedActRef(gu, m*b.k, b.ffn, 2*b.ffn, b.ffn, b.act)
	y := MatMulExpertsRef(b.dt, b.dnData, b.experts, b.hidden, b.ffn, h, sel, m, b.k, true, b.dnBias)
	want := MoECombineRef(y, wts, m, b.k, b.hidden, resid)
	got, err := d.ReadF32(s.resid, 0, m*b.hidden)
	if err != nil {
		t.Fatal(err)
	}
	compareF32(t, "out", got, want, 1e-3, 1e-3)
	if tied {
		// Identical experts: the block equals one expert at weight 1.
		one := make([]uint32, m)
		ones := make([]float32, m)
		for i := range ones {
			ones[i] = 1
		}
		gu1 := MatMulExpertsRef(b.dt, b.guData, b.experts, 2*b.ffn, b.hidden, x, one, m, 1, false, b.guBias)
		y1 := MatMulExpertsRef(b.dt, b.dnData, b.experts, b.hidden, b.ffn, GatedActRef(gu1, m, b.ffn, 2*b.ffn, b.ffn, b.act), one, m, 1, true, b.dnBias)
		compareF32(t, "tied vs one expert", got, MoECombineRef(y1, ones, m, 1, b.hidden, resid), 1e-3, 1e-3)
	}
}

// moeFastQ4K returns n rows of cols Q4_K values without quantizing (random
// nibbles and scales, small finite d and dmin): for benchmarks.
func moeFastQ4K(r *rand.Rand, n, cols int) []byte {
	rb, _ := quant.Q4_K.RowBytes(cols)
	data := make([]byte, n*rb)
	for i := 0; i < len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], r.Uint64())
	}
	for o := 0; o < len(data); o += 144 {
		binary.LittleEndian.PutUint16(data[o:], quant.F32ToF16(0.01))
		binary.LittleEndian.PutUint16(data[o+2:], quant.F32ToF16(0.005))
	}
	return data
}

// BenchmarkMoEDecode times one decode token's MoE block (route, gate/up,
// act, down, combine; the router matmul excluded) at Mixtral 8x7B's shape:
// E 8, k 2, hidden 4096, ffn 14336, Q4_K experts. The bytes are the two
// selected experts' (k/E of the stacks), so MB/s is the weight bandwidth.
func BenchmarkMoEDecode(b *testing.B) {
	d := testDevice(b)
	b.Logf("adapter: %s (%s, %s)", d.Info().Name, d.Info().Backend, d.Info().Type)
	const experts, k = 8, 2
	hidden, ffn := 4096, 14336
	if d.Info().Software {
		// lavapipe crashes on the second submit that binds ~800 MB of
		// weights (plain MatMul too): a quarter of the shape there.
		hidden, ffn = 1024, 3584
		b.Logf("CPU adapter: shape cut to hidden %d, ffn %d", hidden, ffn)
	}
	r := rand.New(rand.NewPCG(31, 32))
	gu, err := d.UploadExpertWeight("gate_up", quant.Q4_K, experts, 2*ffn, hidden, moeFastQ4K(r, experts*2*ffn, hidden))
	if err != nil {
		b.Fatal(err)
	}
	defer gu.Release()
	dn, err := d.UploadExpertWeight("down", quant.Q4_K, experts, hidden, ffn, moeFastQ4K(r, experts*hidden, ffn))
	if err != nil {
		b.Fatal(err)
	}
	defer dn.Release()
	blk := &moeBlock{experts: experts, k: k, hidden: hidden, ffn: ffn, g: GatingSoftmax, act: SiLU, gateUp: gu, down: dn}
	s := blk.scratch(b, d, 1)
	defer s.release()
	d.WriteF32(s.x, 0, randF32(r, hidden, 1))
	d.WriteF32(s.logits, 0, randF32(r, experts, 2))
	stages := map[string][]*Op{}
	var order []string
	add := func(name string) func([]*Op, error) {
		return func(o []*Op, err error) {
			if err != nil {
				b.Fatal(err)
			}
			stages[name] = o
			order = append(order, name)
		}
	}
	one := func(name string) func(*Op, error) {
		return func(op *Op, err error) { add(name)([]*Op{op}, err) }
	}
	one("route")(d.MoERoute(Whole(s.logits), Whole(s.sel), Whole(s.wts), 1, experts, k, GatingSoftmax))
	add("gate_up")(d.MatMulExperts(gu, Whole(s.x), Whole(s.sel), Whole(s.gu), 1, k, false, BufferRange{}))
	one("act")(d.GatedAct(Whole(s.gu), Whole(s.h), k, ffn, 2*ffn, ffn, SiLU))
	add("down")(d.MatMulExperts(dn, Whole(s.h), Whole(s.sel), Whole(s.y), 1, k, true, BufferRange{}))
	one("combine")(d.MoECombine(Whole(s.y), Whole(s.wts), Whole(s.resid), 1, k, hidden, true))
	var block []*Op
	for _, name := range order {
		block = append(block, stages[name]...)
		defer releaseOps(stages[name])
	}
	bytes := map[string]uint64{
		"block":   (gu.W.Bytes() + dn.W.Bytes()) * k / experts,
		"gate_up": gu.W.Bytes() * k / experts,
		"down":    dn.W.Bytes() * k / experts,
	}
	// Warm up (pipelines, first-touch, sel) outside the timers.
	e := d.NewEncoder()
	e.Run(block...)
	if _, err := e.SubmitRead(s.resid, 0, 4); err != nil {
		b.Fatal(err)
	}
	stages["block"] = block
	for _, name := range append([]string{"block"}, order...) {
		b.Run(name, func(b *testing.B) {
			ops := stages[name]
			b.SetBytes(int64(bytes[name]))
			e := d.NewEncoder()
			for range b.N {
				e.Run(ops...)
			}
			if _, err := e.SubmitRead(s.resid, 0, 4); err != nil {
				b.Fatal(err)
			}
		})
	}
}
