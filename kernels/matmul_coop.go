//go:build cgo || js

package kernels

import (
	_ "embed"
	"fmt"
	"math"
	"strings"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

//go:embed matmul_coop.wgsl
var matmulCoopWGSL string

// coopShape is a tile of matmul_coop.wgsl: 8 subgroups, sr of them along
// the rows, each holding fr row × ft token fragments of 16 × 16, so a
// workgroup's tile is 16·fr·sr rows × 16·ft·(8/sr) tokens.
type coopShape struct{ sr, fr, ft int }

func (s coopShape) rows() int   { return 16 * s.fr * s.sr }
func (s coopShape) tokens() int { return 16 * s.ft * (8 / s.sr) }

// coopKS and coopWSK are KS and WSK of matmul_coop.wgsl.
const (
	coopKS  = 32
	coopWSK = coopKS + 8
)

// coopStorage is the workgroup memory of a tile in bytes: ws and xs in
// f16, cs in f32.
func coopStorage(s coopShape) int {
	return 2*coopWSK*(s.rows()+s.tokens()) + 4*2048
}

// matmulCoopMinM is the fewest tokens the cooperative kernel takes.
const matmulCoopMinM = matmulTiledMinM

// matmulCoopPick returns the tile MatMul runs w at m tokens with on
// cooperative matrices, or false where the register-blocked kernel runs:
// no cooperative matrices (or they failed coopCheck), columns not a
// multiple of 4 (x is read as vec4), m below matmulCoopMinM, or a tuning
// option of the other kernels.
func (d *Device) matmulCoopPick(w *Weight, m int, opts MatMulOpts) (coopShape, bool, error) {
	if opts.coopOff || opts.tileOld || opts.tileRN > 0 || opts.tileTN > 0 || opts.tileKS > 0 ||
		w.Cols%4 != 0 || (m < matmulCoopMinM && opts.coop == (coopShape{})) || !d.coopUsable() {
		return coopShape{}, false, nil
	}
	return coopTile(w, m, opts.coop, d.limits.MaxWorkgroupStorage)
}

// coopTile is the tile of w at m tokens: fixed (when set, checked against
// the workgroup memory there is), else the largest that still gives the
// GPU matmulTiledTarget workgroups.
func coopTile(w *Weight, m int, fixed coopShape, storage int) (coopShape, bool, error) {
	if s := fixed; s != (coopShape{}) {
		if s.sr != 2 && s.sr != 4 && s.sr != 8 || s.fr < 1 || s.ft < 1 || s.fr*s.ft > 8 || coopStorage(s) > storage {
			return s, false, fmt.Errorf("kernels: matmul %s: bad cooperative tile %+v", w.Name, s)
		}
		return s, true, nil
	}
	var pick coopShape
	found := false
	// Largest tile (most reuse per loaded value) first.
	for _, s := range [...]coopShape{{4, 2, 4}, {4, 2, 2}, {4, 1, 2}} {
		if coopStorage(s) > storage {
			continue
		}
		pick, found = s, true
		groups := 0
		for _, p := range w.Parts {
			groups += (p.Rows + s.rows() - 1) / s.rows() * ((m + s.tokens() - 1) / s.tokens())
		}
		if groups >= matmulTiledTarget {
			break
		}
	}
	return pick, found, nil
}

// matmulCoopPipeline compiles matmul_coop.wgsl for dtype dt (its decoder
// section sec) with tile s.
func (d *Device) matmulCoopPipeline(dt quant.DType, sec string, s coopShape) (*Pipeline, error) {
	src, err := setConst(matmulCoopWGSL, "SR", uint32(s.sr))
	if err == nil {
		src, err = setConst(src, "FR", uint32(s.fr))
	}
	if err == nil {
		src, err = setConst(src, "FT", uint32(s.ft))
	}
	if err != nil {
		return nil, err
	}
	acc, step, put := matmulCoopUnrolled(s)
	for _, b := range [][2]string{{"ACC", acc}, {"STEP", step}, {"OUT", put}} {
		if src, err = setBlock(src, b[0], b[1]); err != nil {
			return nil, err
		}
	}
	enables, body := splitEnables(src)
	key := fmt.Sprintf("matmul/coop/%s/sr%d/fr%d/ft%d", dt, s.sr, s.fr, s.ft)
	return d.Pipeline(key, enables+helpersWGSL("W")+sec+body, "main", matmulLayout)
}

// splitEnables moves src's `enable …;` lines, which WGSL wants before
// anything else, out of it.
func splitEnables(src string) (enables, rest string) {
	var e, r strings.Builder
	for line := range strings.Lines(src) {
		if strings.HasPrefix(line, "enable ") {
			e.WriteString(line)
		} else {
			r.WriteString(line)
		}
	}
	return e.String(), r.String()
}

// matmulCoopUnrolled returns blocks ACC, STEP and OUT of matmul_coop.wgsl
// for tile s: the fr·ft accumulators c<j><i> (token fragment j, row
// fragment i); a k step's ft A and fr B loads and fr·ft products; the
// accumulators' way out through cs.
func matmulCoopUnrolled(s coopShape) (acc, step, out string) {
	var a, st, o strings.Builder
	for j := range s.ft {
		fmt.Fprintf(&st, "            let a%d = coopLoadT<coop_mat16x16<f16, A>>(&xs[(tf + %du) * WSK + kk], WSK);\n", j, 16*j)
	}
	for i := range s.fr {
		fmt.Fprintf(&st, "            let b%d = coopLoad<coop_mat16x16<f16, B>>(&ws[(rf + %du) * WSK + kk], WSK);\n", i, 16*i)
	}
	for j := range s.ft {
		for i := range s.fr {
			fmt.Fprintf(&a, "    var c%d%d = coop_mat16x16<f32, C>();\n", j, i)
			fmt.Fprintf(&st, "            c%d%d = coopMultiplyAdd(a%d, b%d, c%d%d);\n", j, i, j, i, j, i)
			fmt.Fprintf(&o, "    coopStoreT(c%d%d, &cs[cb], 16u);\n    workgroupBarrier();\n", j, i)
			fmt.Fprintf(&o, "    out16(cb, lane, tbase + tf + %du, rbase + rf + %du);\n    workgroupBarrier();\n", 16*j, 16*i)
		}
	}
	return a.String(), st.String(), o.String()
}

// coopUsable reports whether MatMul may use cooperative matrices: the
// device has them and, the first time it is asked, coopCheck passed.
func (d *Device) coopUsable() bool {
	if !d.features.CoopMatrix {
		return false
	}
	d.coopOnce.Do(func() {
		if err := d.coopCheck(); err != nil {
			d.log.Warn("webgpu: cooperative matrices offered but not used", "err", err)
			return
		}
		d.coopOK = true
	})
	return d.coopOK
}

// coopCheck runs matmul_coop.wgsl once on a product whose every partial
// sum is exact in f16 × f16 → f32 (small dyadic values) and compares it
// with the CPU: it catches a subgroup size other than 32 and an adapter
// whose fragment layout differs from what the kernel assumes.
func (d *Device) coopCheck() error {
	const rows, cols, m = 80, 96, 72
	wv := make([]float32, rows*cols)
	for i := range wv {
		wv[i] = float32(i*7%13-6) / 8
	}
	xv := make([]float32, m*cols)
	for i := range xv {
		xv[i] = float32(i*5%11-5) / 4
	}
	w, err := d.UploadWeight("coop check", quant.F32, rows, cols, asBytes(wv))
	if err != nil {
		return err
	}
	defer w.Release()
	x, err := d.NewBufferInit("coop check x", asBytes(xv))
	if err != nil {
		return err
	}
	defer x.Release()
	out, err := d.NewBuffer("coop check out", rows*m*4)
	if err != nil {
		return err
	}
	defer out.Release()
	sec, err := matmulSection(quant.F32)
	if err != nil {
		return err
	}
	s := coopShape{4, 1, 1} // 64 rows × 32 tokens: edges on both sides
	p, err := d.matmulCoopPipeline(quant.F32, sec, s)
	if err != nil {
		return err
	}
	ops, err := d.matmulOps(w, Whole(x), Whole(x), Whole(out), m, rows, 0, p, s.rows(), (m+s.tokens()-1)/s.tokens(), MatMulOpts{})
	if err != nil {
		return err
	}
	defer releaseOps(ops)
	e := d.NewEncoder()
	e.Run(ops...)
	raw, err := e.SubmitRead(out, 0, rows*m*4)
	if err != nil {
		return err
	}
	got := fromBytes[float32](raw)
	for t := range m {
		for r := range rows {
			var want float32
			for c := range cols {
				want += wv[r*cols+c] * xv[t*cols+c]
			}
			if g := got[t*rows+r]; g != want && !(math.IsNaN(float64(g)) && math.IsNaN(float64(want))) {
				return fmt.Errorf("token %d row %d: got %v, want %v", t, r, g, want)
			}
		}
	}
	return nil
}
