//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

var (
	//go:embed matmul_vec.wgsl
	matvecWGSL string
	//go:embed matmul_tile.wgsl
	matmulTileWGSL string
	//go:embed matmul_dtypes.wgsl
	matmulDTypesWGSL string
	//go:embed matmul_vecfast.wgsl
	matvecFastWGSL string
)

// matmulParams mirrors Params in matmul_vec.wgsl and matmul_tile.wgsl (32 bytes).
type matmulParams struct {
	Rows      uint32 // rows of the part
	Cols      uint32
	RowBytes  uint32
	Units     uint32 // decode units per row
	Row0      uint32 // first row of the part
	OutStride uint32 // rows of the whole weight
	M         uint32
	Flags     uint32 // matmulBias | matmulAccumulate
}

const (
	matmulBias       = 1
	matmulAccumulate = 2
)

// MatMulOpts are the optional parts of [Device.MatMul].
type MatMulOpts struct {
	Bias       BufferRange // optional f32 [Rows]; Buf nil = none
	Accumulate bool        // out += W·x instead of out = W·x (fuses the residual add)
	// Gated fuses a gated activation into the matrix-vector product: W
	// holds [gate; up] (Rows = 2F) and out gets F values per vector,
	// Act(gate)·up — what MatMul into a buffer and then GatedAct (n = F,
	// stride = 2F, upOffset = F) give, bit for bit, in one dispatch. Only
	// where W.CanGate(), for m == 1 and MatMulBatch, without Bias or
	// Accumulate.
	Gated bool
	Act   Act
	// Q8X: x holds QuantizeQ8's output (one row per vector), not f32,
	// and the product runs on packed 8-bit integer dot products
	// (dtypes of CanQ8X, m == 1 and MatMulBatch).
	Q8X bool
	// Norm, where its G is set, applies RMSNorm to x inside a
	// matrix-vector product: out = W·(x / rms(x) ⊙ g), what RMSNorm
	// into a buffer and then MatMul give (within rounding: the kernel
	// sums W·(x ⊙ g) and scales the sum), in one dispatch. Only where
	// W.CanNorm(), for m == 1 and MatMulBatch (each vector its own
	// norm, the bits of m == 1), without Q8X.
	Norm NormIn

	// Tuning of the m == 1 kernel (tests and benchmarks); 0 = default.
	vecWG   int  // invocations per workgroup, a power of two ≥ 32
	vecRows int  // rows per workgroup
	vecOld  bool // the generic kernel even where a fast one exists
	vecU    int  // fast kernel: units per row in flight per invocation (1, 2)
	// vecGroups: the batched fast kernel runs this many groups of WG
	// invocations a workgroup, each on its own R rows exactly as a
	// workgroup of one group would (rowGroups); 0 or 1: one group.
	vecGroups int

	// Tuning of the m > 1 kernel: tileOld runs matmul_tile.wgsl (the
	// kernel before the register-blocked one) at every m; tileRN × tileTN
	// (4 or 8 each) fixes the register block of matmul_tiled.wgsl, tileKS
	// its k step (32 or 64; 0 = 32).
	tileOld                bool
	tileRN, tileTN, tileKS int
}

// NormIn is the RMSNorm a matrix-vector product applies to its input
// (MatMulOpts.Norm): x / sqrt(mean(x²) + Eps) ⊙ G, or ⊙ (1 + G) with
// AddOne (Gemma), as RMSNorm.
type NormIn struct {
	G      BufferRange // f32 [Cols]; Buf nil = no norm
	Eps    float32
	AddOne bool
}

// matmulNormParams is matmulParams with the normed kernel's fields
// (Params in matvecNormed's source), padded to 16 bytes.
type matmulNormParams struct {
	matmulParams
	Eps    float32
	AddOne float32 // 1 or 0, added to g
	_      [2]uint32
}

// matmulUV is the decode unit (values) of each dtype, as the UV constants of
// matmul_dtypes.wgsl: 8 values of plain floats, else a 32-value block or
// slice of a K-quant super-block.
func matmulUV(dt quant.DType) (int, bool) {
	switch dt {
	case quant.F32, quant.F16, quant.BF16:
		return 8, true
	case quant.Q8_0, quant.Q4_0, quant.Q5_0, quant.Q4_K, quant.Q6_K, quant.MXFP4:
		return 32, true
	}
	return 0, false
}

// matmulShared lists, per dtype, the shared sections of matmul_dtypes.wgsl
// that complete its own: LINEAR (col of units of consecutive columns),
// HALVES (decode of F16 and BF16, around the dtype's half2) and BLOCKS
// (decode of the 32-value blocks, around the dtype's HEAD and QUANTS).
// The K-quants' sections are whole.
var matmulShared = map[quant.DType][]string{
	quant.F32:   {"LINEAR"},
	quant.F16:   {"LINEAR", "HALVES"},
	quant.BF16:  {"LINEAR", "HALVES"},
	quant.Q8_0:  {"LINEAR", "BLOCKS"},
	quant.Q4_0:  {"LINEAR", "BLOCKS"},
	quant.Q5_0:  {"LINEAR", "BLOCKS"},
	quant.MXFP4: {"LINEAR", "BLOCKS"},
	quant.Q4_K:  nil,
	quant.Q6_K:  nil,
}

// matmulSection assembles the dtype's decoder (UV, col, decode) from
// matmul_dtypes.wgsl: the file's prelude (the text before the first
// section), the dtype's section less its `// BEGIN X` … `// END X` blocks,
// and the shared sections it uses with those blocks filled in.
func matmulSection(dt quant.DType) (string, error) {
	shared, ok := matmulShared[dt]
	own, ok2 := wgslSection(matmulDTypesWGSL, dt.String())
	if !ok || !ok2 {
		return "", fmt.Errorf("kernels: matmul: no WGSL decoder for %s", dt)
	}
	var tail strings.Builder
	for _, name := range shared {
		sec, ok := wgslSection(matmulDTypesWGSL, name)
		if !ok {
			return "", fmt.Errorf("kernels: matmul %s: no section %s in matmul_dtypes.wgsl", dt, name)
		}
		tail.WriteString(sec)
	}
	src := tail.String()
	for {
		_, after, ok := strings.Cut(own, "// BEGIN ")
		if !ok {
			break
		}
		name, _, _ := strings.Cut(after, "\n")
		body, rest, ok := takeBlock(own, name)
		if !ok {
			return "", fmt.Errorf("kernels: matmul %s: unterminated block %s", dt, name)
		}
		var err error
		if src, err = setBlock(src, name, body); err != nil {
			return "", fmt.Errorf("kernels: matmul %s: %w", dt, err)
		}
		own = rest
	}
	prelude, _, _ := strings.Cut(matmulDTypesWGSL, "\n// ==== ")
	return prelude + own + src, nil
}

// CanNorm reports whether MatMulOpts.Norm applies to w: a dtype with a
// fast matrix-vector kernel.
func (w *Weight) CanNorm() bool { return hasMatvecFast(w.DType, w.Cols) }

// matvecNormXL is the XLOAD block of the normed kernel: it loads x times
// the norm's weight and sums the squares of x (each value of x is loaded
// once per workgroup; xl's callers see g·x).
const matvecNormXL = `@group(0) @binding(5) var<storage, read> gw: array<vec4<f32>>;
var<private> ssq: vec4<f32>;

fn xl(i: u32) -> vec4<f32> {
    let v = x[i];
    ssq += v * v;
    return v * (gw[i] + vec4<f32>(params.add_one));
}
`

// matvecBatchNormXL is matvecNormXL for the NB vectors of a batched
// kernel: each vector's sum of squares apart (xv), in the order the m ==
// 1 kernel sums its one.
const matvecBatchNormXL = `@group(0) @binding(5) var<storage, read> gw: array<vec4<f32>>;
var<private> ssq: array<vec4<f32>, NB>;

fn xl(i: u32) -> vec4<f32> {
    let v = x[xo + i];
    ssq[xv] += v * v;
    return v * (gw[i] + vec4<f32>(params.add_one));
}
`

// matvecNormed rewrites a fast kernel's source for MatMulOpts.Norm: one
// more row in the reductions carries the sum of squares, and the rows'
// sums are scaled by 1/rms(x) before they are stored. batched: a kernel
// of matvecFastBatch (and gateFast), where NB more rows carry the
// vectors' sums and each vector's R rows are scaled by its own 1/rms —
// every step the m == 1 normed kernel's, so each vector gets its bits.
func matvecNormed(src string, batched bool) (string, error) {
	params, red, red2 := "    flags: u32,\n}", "const RED: u32 = R * RS;", "const RED2: u32 = R * 8u;"
	xl, nsum, nscale := matvecNormXL, "    red[R * RS + lid] = hsum(ssq);\n", `    var ss = 0.0;
    for (var i = 0u; i < 8u; i++) {
        ss += red2[R * 8u + i];
    }
    let nscale = inverseSqrt(ss / f32(params.cols) + params.eps);
    for (var q = lid; q < R * 8u; q += WG) {
        red2[q] *= nscale;
    }
    workgroupBarrier();
`
	if batched {
		params, red, red2 = "    pad0: u32,\n    pad1: u32,\n}", "const RED: u32 = R * NB * RS;", "const RED2: u32 = R * NB * 8u;"
		xl, nsum, nscale = matvecBatchNormXL, `    for (var v = 0u; v < NB; v++) {
        red[(R * NB + v) * RS + lid] = hsum(ssq[v]);
    }
`, `    for (var v = 0u; v < NB; v++) {
        var ss = 0.0;
        for (var i = 0u; i < 8u; i++) {
            ss += red2[(R * NB + v) * 8u + i];
        }
        let nscale = inverseSqrt(ss / f32(params.cols) + params.eps);
        for (var q = lid; q < R * 8u; q += WG) {
            red2[v * R * 8u + q] *= nscale;
        }
    }
    workgroupBarrier();
`
	}
	rowsUp := func(c string) string { return strings.Replace(c, "= R ", "= (R + 1u) ", 1) }
	eps := "    eps: f32,\n    add_one: f32,\n"
	if !batched {
		eps = "    flags: u32,\n" + eps + "    pad0: u32,\n    pad1: u32,\n"
	}
	src, err := replaceAll(src, params, eps+"}", red, rowsUp(red), red2, rowsUp(red2))
	if err == nil {
		src, err = setBlock(src, "XLOAD", xl)
	}
	if err == nil {
		src, err = setBlock(src, "NSUM", nsum)
	}
	if err == nil {
		src, err = setBlock(src, "NSCALE", nscale)
	}
	if err != nil {
		return "", fmt.Errorf("kernels: normed matvec: %w", err)
	}
	return src, nil
}

// CanGate reports whether MatMulOpts.Gated applies to w: an even number
// of rows in one part, of a dtype with a fast matrix-vector kernel.
func (w *Weight) CanGate() bool {
	return len(w.Parts) == 1 && w.Rows%2 == 0 && hasMatvecFast(w.DType, w.Cols)
}

// outRows checks opts.Gated against w, m and the other options, and
// returns how many values per vector the product writes.
func (opts MatMulOpts) outRows(w *Weight, m int) (int, error) {
	if !opts.Gated {
		return w.Rows, nil
	}
	switch {
	case m != 1:
		return 0, fmt.Errorf("kernels: matmul %s: a gated product takes one vector per MatMul, not %d", w.Name, m)
	case !w.CanGate() || opts.vecOld:
		return 0, fmt.Errorf("kernels: matmul %s: %s %dx%d in %d parts cannot take a gated activation", w.Name, w.DType, w.Rows, w.Cols, len(w.Parts))
	case opts.Bias.Buf != nil || opts.Accumulate:
		return 0, fmt.Errorf("kernels: matmul %s: a gated product takes no bias and no accumulation", w.Name)
	case opts.Act > SwiGLUOAI:
		return 0, fmt.Errorf("kernels: matmul %s: unknown activation %v", w.Name, opts.Act)
	}
	return w.Rows / 2, nil
}

// gateFast rewrites a fast matrix-vector kernel (matvecFastBody with
// gated rows) to store act(gate)·up: a workgroup's R rows are R/2 gate
// rows and the R/2 up rows params.rows (F) further on, each summed as
// alone, then paired through act_fn.wgsl's gated_act.
func gateFast(src string, act Act, batched bool) (string, error) {
	fn, err := gatedActWGSL(act)
	if err != nil {
		return "", err
	}
	epi := `    if (lid < R / 2u && r0 + lid < params.rows) {
        var g = 0.0;
        var u = 0.0;
        for (var i = 0u; i < 8u; i++) {
            g += red2[lid * 8u + i];
        }
        for (var i = 0u; i < 8u; i++) {
            u += red2[(lid + R / 2u) * 8u + i];
        }
        out[params.row0 + r0 + lid] = gated_act(g, u);
    }
`
	if batched { // the loop over NB vectors of matvecFastBatch
		epi = `    for (var o = lid; o < (R / 2u) * NB; o += WG) {
        let i = o % (R / 2u);
        let b = o / (R / 2u);
        if (r0 + i >= params.rows) {
            continue;
        }
        var g = 0.0;
        var u = 0.0;
        for (var k = 0u; k < 8u; k++) {
            g += red2[(b * R + i) * 8u + k];
        }
        for (var k = 0u; k < 8u; k++) {
            u += red2[(b * R + i + R / 2u) * 8u + k];
        }
        out[b * params.o_stride + params.row0 + r0 + i] = gated_act(g, u);
    }
`
	}
	if src, err = setBlock(src, "STORE", epi); err == nil {
		src, err = replaceOnce(src, "let r0 = (wid.x + wid.y * nwg.x) * R;", "let r0 = (wid.x + wid.y * nwg.x) * (R / 2u);")
	}
	if err != nil {
		return "", err
	}
	return fn + src, nil
}

// fastRows writes the row indices ri0.. of the fast kernels' body: R
// consecutive rows from r0, or (gated) R/2 gate rows from r0 and the up
// rows params.rows further on.
func fastRows(b *strings.Builder, r int, gated bool) {
	for i := range r {
		if gated && i >= r/2 {
			fmt.Fprintf(b, "    let ri%d = params.rows + min(r0 + %du, rl);\n", i, i-r/2)
		} else {
			fmt.Fprintf(b, "    let ri%d = min(r0 + %du, rl);\n", i, i)
		}
	}
}

// CanQ8X reports whether MatMulOpts.Q8X applies to w (Q8XShape).
func (w *Weight) CanQ8X() bool { return Q8XShape(w.DType, w.Cols) }

// Q8XShape reports whether weights of dt with cols columns have a kernel
// for 8-bit activations (MatMulOpts.Q8X): a "_Q8X" section in
// matmul_vecfast.wgsl, and cols a multiple of 128 (QuantizeQ8's layout).
// (Asked per weight while plans are built; it only looks the section up.)
func Q8XShape(dt quant.DType, cols int) bool {
	return cols%128 == 0 && strings.Contains(matvecFastWGSL, "\n// ==== "+dt.String()+"_Q8X\n")
}

// matvecQ8X returns the fast kernel's source for the dtype against
// 8-bit activations (its "_Q8X" section, with x bound as packed words),
// or "" where there is none.
func matvecQ8X(dt quant.DType) string {
	sec, ok := wgslSection(matvecFastWGSL, dt.String()+"_Q8X")
	base, ok2 := wgslSection(matvecFastWGSL, dt.String())
	if !ok || !ok2 {
		return ""
	}
	// The weight loads are the dtype's own (its WLOAD block).
	wload, _, ok := takeBlock(base, "WLOAD")
	if !ok {
		return ""
	}
	sec, err := setBlock(sec, "WLOAD", wload)
	if err != nil {
		return ""
	}
	prelude, _, _ := strings.Cut(matvecFastWGSL, "\n// ==== ")
	prelude, err = setBlock(prelude, "XBIND", "@group(0) @binding(2) var<storage, read> x: array<vec4<u32>>;\n")
	if err == nil {
		prelude, err = setBlock(prelude, "XF32", "")
	}
	if err != nil {
		return ""
	}
	return prelude + sec
}

// hasMatvecFast reports whether weights of dt with cols columns have a
// fast matrix-vector kernel (matvecFast): Q4_K, Q6_K, Q8_0, and F16 rows
// that are 16-byte aligned.
func hasMatvecFast(dt quant.DType, cols int) bool {
	switch dt {
	case quant.Q4_K, quant.Q6_K, quant.Q8_0:
		return true
	case quant.F16:
		return cols%8 == 0
	}
	return false
}

// matvecFast returns the dtype's section of matmul_vecfast.wgsl (with the
// file's prelude), or "" where the generic kernel must run
// (hasMatvecFast).
func matvecFast(dt quant.DType, cols int) string {
	if !hasMatvecFast(dt, cols) {
		return ""
	}
	prelude, _, _ := strings.Cut(matvecFastWGSL, "\n// ==== ")
	sec, ok := wgslSection(matvecFastWGSL, dt.String())
	if !ok {
		return ""
	}
	return prelude + sec
}

// matvecFastShape is the default workgroup of the fast m == 1 kernel
// (invocations, rows, units in flight), measured on an H200
// (docs/bench-matvec.md).
func matvecFastShape(dt quant.DType, o MatMulOpts) (wg, r, u int) {
	switch dt {
	case quant.Q4_K, quant.Q8_0:
		wg, r, u = 64, 4, 2
	case quant.F16:
		wg, r, u = 128, 2, 2
	default:
		wg, r, u = 64, 2, 1
	}
	if o.vecWG > 0 {
		wg = o.vecWG
	}
	if o.vecRows > 0 {
		r = o.vecRows
	}
	if o.vecU > 0 {
		u = o.vecU
	}
	return wg, r, u
}

// matvecFastBody generates the main loop of matmul_vecfast.wgsl, unrolled
// over the r rows (separate accumulators, no local arrays) and, with u = 2,
// over two units per step; every weight load of a step is issued before
// its arithmetic. gated: see fastRows.
func matvecFastBody(src string, r, u int, gated bool) string {
	pre, rest, _ := strings.Cut(src, "    // ---- body\n")
	_, post, _ := strings.Cut(rest, "    // ---- end\n")
	var b strings.Builder
	b.WriteString("    let rl = params.rows - 1u;\n")
	fastRows(&b, r, gated)
	for i := range r {
		fmt.Fprintf(&b, "    var acc%d = 0.0;\n", i)
	}
	b.WriteString("    var u = lid;\n")
	step := func(n int) {
		us := []string{"u", "u + WG"}[:n]
		for j, ue := range us {
			fmt.Fprintf(&b, "        let x%d = xunit(%s);\n", j, ue)
		}
		for j, ue := range us {
			for i := range r {
				fmt.Fprintf(&b, "        let w%d_%d = uload(ri%d, %s);\n", j, i, i, ue)
			}
		}
		for i := range r {
			fmt.Fprintf(&b, "        acc%d +=", i)
			for j, ue := range us {
				if j > 0 {
					b.WriteString(" +")
				}
				fmt.Fprintf(&b, " ucalc(w%d_%d, %s, x%d)", j, i, ue, j)
			}
			b.WriteString(";\n")
		}
	}
	if u >= 2 {
		b.WriteString("    for (; u + WG < params.units; u += 2u * WG) {\n")
		step(2)
		b.WriteString("    }\n")
	}
	b.WriteString("    for (; u < params.units; u += WG) {\n")
	step(1)
	b.WriteString("    }\n")
	for i := range r {
		fmt.Fprintf(&b, "    red[%du * RS + lid] = acc%d;\n", i, i)
	}
	return pre + b.String() + post
}

// matvecShape picks the m == 1 workgroup of the generic kernel: WG
// invocations covering a row's units (one unit per invocation when it fits,
// 32..256), R rows each.
func matvecShape(units, maxInv int, o MatMulOpts) (wg, r int) {
	wg = 1 << bits.Len(uint(max(units, 32)-1))
	wg = min(wg, 256, maxInv)
	if o.vecWG > 0 {
		wg = o.vecWG
	}
	r = 4
	if o.vecRows > 0 {
		r = o.vecRows
	}
	return wg, r
}

// MatMul builds the ops of out[t][r] = sum_c W[r][c]·x[t][c] (+ bias[r])
// (or out += …, with opts.Accumulate) for t < m and r < w.Rows. x holds f32
// [m][w.Cols], out f32 [m][w.Rows]; out must be its own buffer (not x's, the
// weight's or the bias's). The weight stays quantized: each kernel decodes
// its blocks as it loads them. m == 1 runs a matrix-vector kernel, m > 1 a
// tiled one (register-blocked, matmul_tiled.wgsl, from matmulTiledMinM
// tokens). It returns one Op per weight part, each writing its own rows;
// run them all (in any order, one pass).
func (d *Device) MatMul(w *Weight, x, out BufferRange, m int, opts MatMulOpts) ([]*Op, error) {
	if w == nil || len(w.Parts) == 0 {
		return nil, fmt.Errorf("kernels: matmul: weight has no parts (released?)")
	}
	uv, ok := matmulUV(w.DType)
	if !ok {
		return nil, fmt.Errorf("kernels: matmul %s: unsupported dtype %s", w.Name, w.DType)
	}
	if m <= 0 || w.Rows <= 0 || w.Cols <= 0 {
		return nil, fmt.Errorf("kernels: matmul %s: bad shape m=%d rows=%d cols=%d", w.Name, m, w.Rows, w.Cols)
	}
	rb := w.RowBytes()
	if rb == 0 {
		return nil, fmt.Errorf("kernels: matmul %s: %s cannot hold %d columns", w.Name, w.DType, w.Cols)
	}
	rows, err := opts.outRows(w, m)
	if err != nil {
		return nil, err
	}
	needX := uint64(m) * uint64(w.Cols) * 4
	normed := opts.Norm.G.Buf != nil
	if normed && (m != 1 || opts.Q8X || opts.vecOld || !w.CanNorm() || opts.Norm.G.size() < uint64(w.Cols)*4) {
		return nil, fmt.Errorf("kernels: matmul %s: %s %dx%d, m=%d: no normed kernel (or norm weight of %d bytes, want %d)",
			w.Name, w.DType, w.Rows, w.Cols, m, opts.Norm.G.size(), w.Cols*4)
	}
	if opts.Q8X {
		if !w.CanQ8X() || opts.vecOld || m != 1 {
			return nil, fmt.Errorf("kernels: matmul %s: %s %dx%d, m=%d has no kernel for 8-bit activations", w.Name, w.DType, w.Rows, w.Cols, m)
		}
		needX = uint64(m) * Q8RowBytes(w.Cols)
	}
	if needOut := uint64(m) * uint64(rows) * 4; x.size() < needX || out.size() < needOut {
		return nil, fmt.Errorf("kernels: matmul %s %dx%d, m=%d: x %d bytes (need %d), out %d bytes (need %d)",
			w.Name, w.Rows, w.Cols, m, x.size(), needX, out.size(), needOut)
	}
	if uint64(m)*uint64(max(w.Rows, w.Cols)) >= 1<<32 {
		return nil, fmt.Errorf("kernels: matmul %s: m=%d is too large for 32-bit indexing", w.Name, m)
	}
	var flags uint32
	bias := x
	if opts.Bias.Buf != nil {
		if opts.Bias.size() < uint64(w.Rows)*4 {
			return nil, fmt.Errorf("kernels: matmul %s: bias %d bytes, need %d", w.Name, opts.Bias.size(), w.Rows*4)
		}
		flags |= matmulBias
		bias = opts.Bias
	}
	if opts.Accumulate {
		flags |= matmulAccumulate
	}
	sec, err := matmulSection(w.DType)
	if err != nil {
		return nil, err
	}
	units := (w.Cols + uv - 1) / uv

	var p *Pipeline
	var perGroup int // rows (m == 1) or row tiles per workgroup
	var tokTiles int
	if m == 1 {
		fast := ""
		switch {
		case opts.Q8X:
			fast = matvecQ8X(w.DType)
		case !opts.vecOld:
			fast = matvecFast(w.DType, w.Cols)
		}
		wg, r := matvecShape(units, d.limits.MaxInvocations, opts)
		unroll := 1
		if fast != "" {
			wg, r, unroll = matvecFastShape(w.DType, opts)
			if unroll < 1 || unroll > 2 {
				return nil, fmt.Errorf("kernels: matmul %s: bad matvec unroll %d", w.Name, unroll)
			}
			fast = matvecFastBody(fast, r, unroll, opts.Gated)
		}
		nr := r // rows reduced through workgroup memory
		if normed {
			nr++
		}
		if wg < 32 || wg&(wg-1) != 0 || wg > d.limits.MaxInvocations || r < 1 || r > 32 || nr*(wg+8)*4+nr*32 > d.limits.MaxWorkgroupStorage || (opts.Gated && r%2 != 0) {
			return nil, fmt.Errorf("kernels: matmul %s: bad matvec shape wg=%d rows=%d", w.Name, wg, r)
		}
		var src, key string
		if fast != "" {
			src, key = fast, fmt.Sprintf("matvecfast/%s/wg%d/r%d/u%d/q8x=%v", w.DType, wg, r, unroll, opts.Q8X)
			if opts.Gated {
				if src, err = gateFast(src, opts.Act, false); err != nil {
					return nil, err
				}
				key += "/gated/" + opts.Act.String()
			}
			if normed {
				if src, err = matvecNormed(src, false); err != nil {
					return nil, err
				}
				key += "/normed"
			}
		} else {
			vec4 := w.Cols%4 == 0
			src = matvecX(matvecWGSL, vec4)
			key = fmt.Sprintf("matvec/%s/wg%d/r%d/x4=%v", w.DType, wg, r, vec4)
		}
		src, err = setConst(src, "WG", uint32(wg))
		if err == nil {
			src, err = setConst(src, "R", uint32(r))
		}
		if err != nil {
			return nil, err
		}
		if fast == "" {
			src = helpersWGSL("W") + sec + src
		}
		layout := matmulLayout
		if normed {
			layout = matmulNormLayout
		}
		if p, err = d.Pipeline(key, src, "main", layout); err != nil {
			return nil, err
		}
		perGroup = r
		if opts.Gated {
			perGroup = r / 2
		}
	} else if ts, ok, err := d.matmulTiledPick(w, m, opts); err != nil {
		return nil, err
	} else if ok {
		if p, err = d.matmulTiledPipeline(w.DType, sec, w.Cols, ts); err != nil {
			return nil, err
		}
		perGroup = 16 * ts.rn
		tokTiles = (m + 16*ts.tn - 1) / (16 * ts.tn)
	} else {
		mt := 4
		switch {
		case m <= 16:
			mt = 1
		case m <= 32:
			mt = 2
		}
		src, err := setConst(matmulTileWGSL, "MT", uint32(mt))
		if err != nil {
			return nil, err
		}
		key := "matmul/" + w.DType.String() + "/mt" + strconv.Itoa(mt)
		if p, err = d.Pipeline(key, helpersWGSL("W")+sec+src, "main", matmulLayout); err != nil {
			return nil, err
		}
		perGroup = 64
		tokTiles = (m + 16*mt - 1) / (16 * mt)
	}

	ops := make([]*Op, 0, len(w.Parts))
	for i, part := range w.Parts {
		wr := w.Range(i)
		if uint64(part.Rows)*uint64(rb) >= 1<<32 {
			releaseOps(ops)
			return nil, fmt.Errorf("kernels: matmul %s: part %d is %d bytes, over 32-bit offsets", w.Name, i, uint64(part.Rows)*uint64(rb))
		}
		prows := part.Rows
		if opts.Gated {
			prows = rows // one part: F output rows
		}
		mp := matmulParams{
			Rows: uint32(prows), Cols: uint32(w.Cols), RowBytes: uint32(rb), Units: uint32(units),
			Row0: uint32(part.Row0), OutStride: uint32(rows), M: uint32(m), Flags: flags,
		}
		params, _ := binary.Append(nil, binary.LittleEndian, mp)
		bufs := []BufferRange{wr, x, bias, out}
		if normed {
			np := matmulNormParams{matmulParams: mp, Eps: opts.Norm.Eps}
			if opts.Norm.AddOne {
				np.AddOne = 1
			}
			params, _ = binary.Append(nil, binary.LittleEndian, np)
			bufs = append(bufs, opts.Norm.G)
		}
		groups := (prows + perGroup - 1) / perGroup
		if m > 1 {
			groups *= tokTiles
		}
		op, err := d.NewOp(p, params, d.grid(groups), bufs...)
		if err != nil {
			releaseOps(ops)
			return nil, fmt.Errorf("kernels: matmul %s part %d: %w", w.Name, i, err)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// matvecX keeps the vec4 or the scalar x loader of matmul_vec.wgsl.
func matvecX(src string, vec4 bool) string {
	pre, rest, _ := strings.Cut(src, "// ---- x: vec4\n")
	v4, rest, _ := strings.Cut(rest, "// ---- x: scalar\n")
	sc, post, _ := strings.Cut(rest, "// ---- x: end\n")
	if vec4 {
		return pre + v4 + post
	}
	return pre + sc + post
}

// matvecShared copies the x loaders (block X) and the dot loop (block DOT)
// of matmul_vec.wgsl into the same blocks of src (moe_matmul.wgsl), so the
// generic matrix-vector kernels share one copy of them.
func matvecShared(src string) (string, error) {
	for _, name := range []string{"X", "DOT"} {
		body, _, ok := takeBlock(matvecWGSL, name)
		if !ok {
			return "", fmt.Errorf("kernels: no block %s in matmul_vec.wgsl", name)
		}
		var err error
		if src, err = setBlock(src, name, body); err != nil {
			return "", err
		}
	}
	return src, nil
}

var (
	matmulLayout     = []Binding{Uniform, ReadOnly, ReadOnly, ReadOnly, Storage}
	matmulNormLayout = []Binding{Uniform, ReadOnly, ReadOnly, ReadOnly, Storage, ReadOnly}
)

func releaseOps(ops []*Op) {
	for _, op := range ops {
		op.Release()
	}
}
