//go:build cgo || js

package kernels

import (
	"encoding/binary"
	"fmt"
	"regexp"
	"strings"
)

// MatMulBatchMax is the most vectors [Device.MatMulBatch] takes at once.
const MatMulBatchMax = 16

// matmulBatchParams mirrors Params of the batched matrix-vector kernels
// (48 bytes): matmulParams, then the strides between vectors.
type matmulBatchParams struct {
	matmulParams
	XStride, OStride uint32  // f32 values between vectors of x, of out
	Eps, AddOne      float32 // the normed kernel's (MatMulOpts.Norm); padding otherwise
}

// BatchOpts are the optional parts of [Device.MatMulBatch].
type BatchOpts struct {
	MatMulOpts // Bias, Accumulate (and the m == 1 kernel's tuning)
	// XStride and OutStride are the f32 values between consecutive vectors
	// of x and of out (w.Cols and w.Rows); XStride is a multiple of 4 when
	// w.Cols is: the vectors may be rows of a wider layout.
	XStride, OutStride int
}

// MatMulBatch builds the ops of out[b][r] = sum_c W[r][c]·x[b][c] (+
// bias[r]) (or out += …, with Accumulate) for n ≤ [MatMulBatchMax]
// vectors: the decode step of n sequences at once. Each workgroup reads its
// rows of the weight once for all n vectors. Every vector's sums are those
// of [Device.MatMul] with m == 1 on that vector alone, bit for bit (the
// same kernel, unit split and reduction order, with n accumulators per row
// instead of one), so a batched sequence's tokens are the ones it gets
// alone. n == 1 is MatMul's m == 1 kernel. It returns one Op per weight
// part.
func (d *Device) MatMulBatch(w *Weight, x, out BufferRange, n int, o BatchOpts) ([]*Op, error) {
	if w == nil || len(w.Parts) == 0 {
		return nil, fmt.Errorf("kernels: matmul batch: weight has no parts (released?)")
	}
	rows, err := o.outRows(w, 1)
	if err != nil {
		return nil, err
	}
	normed := o.Norm.G.Buf != nil
	if normed && (o.Q8X || o.vecOld || o.vecGroups > 1 || !w.CanNorm() || o.Norm.G.size() < uint64(w.Cols)*4) {
		return nil, fmt.Errorf("kernels: matmul batch %s: %s %dx%d: no normed kernel (or norm weight of %d bytes, want %d)",
			w.Name, w.DType, w.Rows, w.Cols, o.Norm.G.size(), w.Cols*4)
	}
	xs, os := o.XStride, o.OutStride
	if xs == 0 {
		xs = w.Cols
	}
	if o.Q8X {
		// x holds QuantizeQ8's rows, one per vector, back to back; the
		// stride counts its 32-bit words.
		if !w.CanQ8X() || o.vecOld {
			return nil, fmt.Errorf("kernels: matmul batch %s: %s %dx%d has no kernel for 8-bit activations", w.Name, w.DType, w.Rows, w.Cols)
		}
		xs = int(Q8RowBytes(w.Cols) / 4)
	}
	if os == 0 {
		os = rows
	}
	if n < 1 || n > MatMulBatchMax || (xs < w.Cols && !o.Q8X) || os < rows {
		return nil, fmt.Errorf("kernels: matmul batch %s: bad shape n=%d (1..%d), strides x %d out %d for %dx%d",
			w.Name, n, MatMulBatchMax, xs, os, w.Rows, w.Cols)
	}
	if n == 1 && xs == w.Cols && os == rows {
		return d.MatMul(w, x, out, 1, o.MatMulOpts)
	}
	uv, ok := matmulUV(w.DType)
	if !ok {
		return nil, fmt.Errorf("kernels: matmul batch %s: unsupported dtype %s", w.Name, w.DType)
	}
	rb := w.RowBytes()
	if rb == 0 || w.Rows <= 0 || w.Cols <= 0 {
		return nil, fmt.Errorf("kernels: matmul batch %s: %s cannot hold %dx%d", w.Name, w.DType, w.Rows, w.Cols)
	}
	needX := (uint64(n-1)*uint64(xs) + uint64(w.Cols)) * 4
	if o.Q8X {
		needX = uint64(n) * Q8RowBytes(w.Cols)
	}
	needOut := (uint64(n-1)*uint64(os) + uint64(rows)) * 4
	if x.size() < needX || out.size() < needOut {
		return nil, fmt.Errorf("kernels: matmul batch %s %dx%d, n=%d: x %d bytes (need %d), out %d bytes (need %d)",
			w.Name, w.Rows, w.Cols, n, x.size(), needX, out.size(), needOut)
	}
	if uint64(n)*uint64(max(xs, os)) >= 1<<32 {
		return nil, fmt.Errorf("kernels: matmul batch %s: n=%d is too large for 32-bit indexing", w.Name, n)
	}
	var flags uint32
	bias := x
	if o.Bias.Buf != nil {
		if o.Bias.size() < uint64(w.Rows)*4 {
			return nil, fmt.Errorf("kernels: matmul batch %s: bias %d bytes, need %d", w.Name, o.Bias.size(), w.Rows*4)
		}
		flags |= matmulBias
		bias = o.Bias
	}
	if o.Accumulate {
		flags |= matmulAccumulate
	}
	sec, err := matmulSection(w.DType)
	if err != nil {
		return nil, err
	}
	units := (w.Cols + uv - 1) / uv
	vec4 := w.Cols%4 == 0
	if vec4 && xs%4 != 0 {
		return nil, fmt.Errorf("kernels: matmul batch %s: x stride %d is not a multiple of 4", w.Name, xs)
	}

	// The m == 1 kernel's choices (MatMul), less its rows per workgroup,
	// which only needs to fit the workgroup memory of n vectors.
	fast := ""
	switch {
	case o.Q8X:
		fast = matvecQ8X(w.DType)
	case !o.vecOld && vec4:
		fast = matvecFast(w.DType, w.Cols)
	}
	wg, r := matvecShape(units, d.limits.MaxInvocations, o.MatMulOpts)
	unroll := 1
	if fast != "" {
		wg, r, unroll = matvecFastShape(w.DType, o.MatMulOpts)
		if unroll < 1 || unroll > 2 {
			return nil, fmt.Errorf("kernels: matmul batch %s: bad matvec unroll %d", w.Name, unroll)
		}
		// Four rows per workgroup (fewer where the workgroup memory of n
		// vectors or r·n ≤ 32 forbids): with each unit decoded once for
		// all vectors (udec), an H100 ran the Q4_K kernel at n = 8 in
		// 93-98 µs with 4 rows against 141-146 with 2 on the 14336 × 4096
		// and 4096 × 14336 shapes, at n = 2 and 4 faster on every shape,
		// and Q6_K 4096 × 14336 in 89 against 96. The exception, in two
		// sweeps: 4096 × 4096 at n = 8 took 106 µs with 4 rows against 51
		// with 2 (docs/BENCHMARKS.md, 2026-12-07), so matrices under 32M
		// values keep 2 rows from 8 vectors on. The rows are the one free
		// choice: the sums stay those of n == 1.
		if o.vecRows == 0 {
			r = max(r, 4)
			if n >= 8 && w.Rows*w.Cols < 32<<20 {
				r = 2
			}
		}
	}
	storage := func(r int) int {
		if fast != "" {
			if normed { // a row of sums of squares per vector
				r++
			}
			return r*n*(wg+8)*4 + r*n*32
		}
		return r * n * wg * 4
	}
	maxRN := 32 // accumulators a thread keeps (r·n); a sweep's vecRows may ask for 64
	if o.vecRows > 0 {
		maxRN = 64
	}
	for r > 1 && (r*n > maxRN || storage(r) > d.limits.MaxWorkgroupStorage) {
		r--
	}
	if o.Gated && r%2 != 0 {
		r-- // an even split into gate and up rows
	}
	groups := 1 // fewer where the invocations or the memory of n vectors forbid
	if fast != "" && o.vecGroups > 1 {
		groups = o.vecGroups
		for groups > 1 && (wg*groups > d.limits.MaxInvocations || storage(r)*groups > d.limits.MaxWorkgroupStorage) {
			groups--
		}
	}
	if wg < 32 || wg&(wg-1) != 0 || wg*groups > d.limits.MaxInvocations || r < 1 || storage(r)*groups > d.limits.MaxWorkgroupStorage || (o.Gated && r < 2) {
		return nil, fmt.Errorf("kernels: matmul batch %s: bad shape wg=%d rows=%d n=%d groups=%d", w.Name, wg, r, n, groups)
	}
	var src, key string
	if fast != "" {
		src, err = matvecFastBatch(fast, r, unroll, n, o.Gated, normed)
		key = fmt.Sprintf("matvecfast-batch/%s/wg%d/r%d/u%d/n%d/q8x=%v", w.DType, wg, r, unroll, n, o.Q8X)
		if err == nil && o.Gated {
			src, err = gateFast(src, o.Act, true)
			key += "/gated/" + o.Act.String()
		}
		if err == nil && normed {
			src, err = matvecNormed(src, true)
			key += "/normed"
		}
		if err == nil && groups > 1 {
			src, err = rowGroups(src, groups)
			key += fmt.Sprintf("/g%d", groups)
		}
	} else {
		src, err = matvecBatch(matvecX(matvecWGSL, vec4))
		key = fmt.Sprintf("matvec-batch/%s/wg%d/r%d/n%d/x4=%v", w.DType, wg, r, n, vec4)
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"WG", wg}, {"R", r}, {"NB", n}} {
		if err == nil {
			src, err = setConst(src, c.name, uint32(c.v))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kernels: matmul batch %s: %w", w.Name, err)
	}
	if fast == "" {
		src = helpersWGSL("W") + sec + src
	}
	layout := matmulLayout
	if normed {
		layout = matmulNormLayout
	}
	p, err := d.Pipeline(key, src, "main", layout)
	if err != nil {
		return nil, err
	}
	ops := make([]*Op, 0, len(w.Parts))
	for i, part := range w.Parts {
		if uint64(part.Rows)*uint64(rb) >= 1<<32 {
			releaseOps(ops)
			return nil, fmt.Errorf("kernels: matmul batch %s: part %d is %d bytes, over 32-bit offsets", w.Name, i, uint64(part.Rows)*uint64(rb))
		}
		prows, perGroup := part.Rows, r*groups
		if o.Gated {
			prows, perGroup = rows, r/2*groups // one part: F output rows, R/2 a group
		}
		bp := matmulBatchParams{
			matmulParams: matmulParams{
				Rows: uint32(prows), Cols: uint32(w.Cols), RowBytes: uint32(rb), Units: uint32(units),
				Row0: uint32(part.Row0), OutStride: uint32(rows), M: uint32(n), Flags: flags,
			},
			XStride: uint32(xs), OStride: uint32(os),
		}
		bufs := []BufferRange{w.Range(i), x, bias, out}
		if normed {
			bp.Eps = o.Norm.Eps
			if o.Norm.AddOne {
				bp.AddOne = 1
			}
			bufs = append(bufs, o.Norm.G)
		}
		params, _ := binary.Append(nil, binary.LittleEndian, bp)
		op, err := d.NewOp(p, params, d.grid((prows+perGroup-1)/perGroup), bufs...)
		if err != nil {
			releaseOps(ops)
			return nil, fmt.Errorf("kernels: matmul batch %s part %d: %w", w.Name, i, err)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// replaceOnce replaces the one occurrence of old in src, or fails: the
// batched kernels are rewritten from the m == 1 ones, and a change there
// must not slip past silently.
func replaceOnce(src, old, new string) (string, error) {
	if n := strings.Count(src, old); n != 1 {
		return "", fmt.Errorf("kernels: batch rewrite: %d × %q in the m == 1 kernel, want 1", n, old)
	}
	return strings.Replace(src, old, new, 1), nil
}

func replaceAll(src string, pairs ...string) (string, error) {
	var err error
	for i := 0; i+1 < len(pairs) && err == nil; i += 2 {
		src, err = replaceOnce(src, pairs[i], pairs[i+1])
	}
	return src, err
}

// batchParams are the Params fields that follow flags in the batched kernels.
const batchParams = "    flags: u32,\n    x_stride: u32,\n    o_stride: u32,\n    pad0: u32,\n    pad1: u32,\n}"

// matvecBatchDot is the DOT block of matmul_vec.wgsl for NB vectors: per
// unit, the R rows' values are decoded once and dotted with each vector's
// values in the order of the m == 1 loop (the same fma chain per vector),
// into acc[b * R + r], then reduced as there.
const matvecBatchDot = `    var acc: array<f32, RNB>;
    for (var u = lid; u < params.units; u += WG) {
        for (var r = 0u; r < R; r++) {
            var wv = decode(wrow(rows, r), u);
            for (var b = 0u; b < NB; b++) {
                let xb = b * params.x_stride;
                var sum = 0.0;
                for (var i = 0u; i < UV; i += 4u) {
                    let v = x4(xb, col(u, i));
                    sum = fma(wv[i], v.x, sum);
                    sum = fma(wv[i + 1u], v.y, sum);
                    sum = fma(wv[i + 2u], v.z, sum);
                    sum = fma(wv[i + 3u], v.w, sum);
                }
                acc[b * R + r] += sum;
            }
        }
    }
    for (var o = 0u; o < R * NB; o++) {
        red[o * WG + lid] = acc[o];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            for (var o = 0u; o < R * NB; o++) {
                red[o * WG + lid] += red[o * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }
`

// matvecBatch rewrites matmul_vec.wgsl (one x variant kept) for NB vectors.
func matvecBatch(src string) (string, error) {
	src, err := setBlock(src, "DOT", matvecBatchDot)
	if err != nil {
		return "", err
	}
	return replaceAll(src,
		"    flags: u32,     // 1: add bias, 2: accumulate into out\n}", batchParams,
		"const RWG: u32 = R * WG;", "const NB: u32 = 1u;\nconst RNB: u32 = R * NB;\nconst RWG: u32 = R * WG * NB;",
		"    if (lid < R && r0 + lid < params.rows) {\n        let row = params.row0 + r0 + lid;\n        var v = red[lid * WG];",
		"    for (var o = lid; o < R * NB; o += WG) {\n        if (r0 + o % R >= params.rows) {\n            continue;\n        }\n"+
			"        let row = params.row0 + r0 + o % R;\n        var v = red[o * WG];",
		"            v += out[row];\n        }\n        out[row] = v;",
		"            v += out[(o / R) * params.o_stride + row];\n        }\n        out[(o / R) * params.o_stride + row] = v;",
	)
}

// batchEpilogue is the batched kernel's STORE block of
// matmul_vecfast.wgsl: the R rows of each of the NB vectors, vector
// o / R's values o_stride apart.
const batchEpilogue = `    for (var o = lid; o < R * NB; o += WG) {
        if (r0 + o % R >= params.rows) {
            continue;
        }
        let row = params.row0 + r0 + o % R;
        var v = 0.0;
        for (var i = 0u; i < 8u; i++) {
            v += red2[o * 8u + i];
        }
        if ((params.flags & 1u) != 0u) {
            v += bias[row];
        }
        if ((params.flags & 2u) != 0u) {
            v += out[(o / R) * params.o_stride + row];
        }
        out[(o / R) * params.o_stride + row] = v;
    }
`

// xIndex matches the indexing of x in matmul_vecfast.wgsl.
var xIndex = regexp.MustCompile(`\bx\[`)

// matvecFastBatch rewrites a dtype's matmul_vecfast.wgsl source for NB
// vectors: x is read from xo, the first vec4 of the vector the unit
// loads are for, and the generated body keeps R × NB accumulators.
func matvecFastBatch(src string, r, u, nb int, gated, normed bool) (string, error) {
	src = xIndex.ReplaceAllLiteralString(src, "x[xo + ")
	decl := "var<private> xo: u32;"
	if normed {
		decl += "\nvar<private> xv: u32; // the vector xo points at (its sum of squares)"
	}
	src, err := replaceAll(src,
		"    flags: u32,\n}", batchParams+"\n\n"+decl,
		"const RED: u32 = R * RS;", "const NB: u32 = 1u;\nconst RED: u32 = R * NB * RS;",
		"const RED2: u32 = R * 8u;", "const RED2: u32 = R * NB * 8u;",
	)
	if err == nil {
		src, err = setBlock(src, "STORE", batchEpilogue)
	}
	if err != nil {
		return "", err
	}
	pre, rest, ok := strings.Cut(src, "    // ---- body\n")
	_, post, ok2 := strings.Cut(rest, "    // ---- end\n")
	if !ok || !ok2 {
		return "", fmt.Errorf("kernels: batch rewrite: no body markers in matmul_vecfast.wgsl")
	}
	// The body of matvecFastBody with NB accumulators per row: the same
	// weight loads; each unit decoded once (udec), then per vector its x
	// units and the same sums (udot). With two units a step, the first
	// unit's dots wait in t* so that acc += dot0 + dot1 as for n == 1, and
	// only one unit's decoded values are live at a time.
	var b strings.Builder
	b.WriteString("    let rl = params.rows - 1u;\n    let xs4 = params.x_stride >> 2u;\n")
	fastRows(&b, r, gated)
	for i := range r {
		for v := range nb {
			fmt.Fprintf(&b, "    var acc%d_%d = 0.0;\n", i, v)
		}
	}
	b.WriteString("    var u = lid;\n")
	step := func(n int) {
		us := []string{"u", "u + WG"}[:n]
		for j, ue := range us {
			for i := range r {
				fmt.Fprintf(&b, "        let w%d_%d = uload(ri%d, %s);\n", j, i, i, ue)
			}
		}
		for j, ue := range us {
			b.WriteString("        {\n")
			for i := range r {
				fmt.Fprintf(&b, "        let d%d = udec(w%d_%d, %s);\n", i, j, i, ue)
			}
			for v := range nb {
				fmt.Fprintf(&b, "        xo = %du * xs4;\n", v)
				if normed {
					fmt.Fprintf(&b, "        xv = %du;\n", v)
				}
				fmt.Fprintf(&b, "        let x%d = xunit(%s);\n", v, ue)
				for i := range r {
					switch {
					case n == 1:
						fmt.Fprintf(&b, "        acc%d_%d += udot(d%d, x%d);\n", i, v, i, v)
					case j == 0:
						fmt.Fprintf(&b, "        t%d_%d = udot(d%d, x%d);\n", i, v, i, v)
					default:
						fmt.Fprintf(&b, "        acc%d_%d += t%d_%d + udot(d%d, x%d);\n", i, v, i, v, i, v)
					}
				}
			}
			b.WriteString("        }\n")
		}
	}
	if u >= 2 {
		for i := range r {
			for v := range nb {
				fmt.Fprintf(&b, "    var t%d_%d = 0.0;\n", i, v)
			}
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
	for v := range nb {
		for i := range r {
			fmt.Fprintf(&b, "    red[%du * RS + lid] = acc%d_%d;\n", v*r+i, i, v)
		}
	}
	return pre + b.String() + post, nil
}

// groupR0 is the fast kernels' first row of a workgroup: R rows, or R/2
// output rows of the gated kernel.
var groupR0 = regexp.MustCompile(`let r0 = \(wid\.x \+ wid\.y \* nwg\.x\) \* (R|\(R / 2u\));`)

// rowGroups rewrites a batched fast kernel (after matvecFastBatch and
// gateFast) to run G groups of WG invocations a workgroup. Group g takes
// the rows a workgroup of one group would take at index wid·G + g, with
// its own share of the reduction memory, so every sum is that of the
// one-group kernel (and of n == 1) bit for bit; what the groups share is
// the cache: they load the same units of x at about the same time, so a
// workgroup of G groups should read x from L2 once for G·R rows instead
// of R (not yet measured on a GPU: docs/BENCHMARKS.md).
// A group past the last row runs on clamped rows and stores nothing (it
// must reach the barriers: no early return).
func rowGroups(src string, g int) (string, error) {
	m := groupR0.FindStringSubmatch(src)
	if m == nil {
		return "", fmt.Errorf("kernels: row groups rewrite: no first row in the kernel")
	}
	src, err := replaceAll(src,
		m[0], "let r0 = ((wid.x + wid.y * nwg.x) * G + grp) * "+m[1]+";",
		"    if (r0 >= params.rows) {\n        return;\n    }\n", "",
		"@compute @workgroup_size(WG)", "@compute @workgroup_size(WGG)",
		"        @builtin(local_invocation_index) lid: u32) {\n",
		"        @builtin(local_invocation_index) lidx: u32) {\n    let lid = lidx % WG;\n    let grp = lidx / WG;\n    rg = grp * RED;\n    rg2 = grp * RED2;\n",
		"var<workgroup> red: array<f32, RED>;", "const G: u32 = 1u;\nconst WGG: u32 = WG * G;\nconst REDG: u32 = RED * G;\nconst RED2G: u32 = RED2 * G;\n"+
			"var<private> rg: u32;\nvar<private> rg2: u32;\nvar<workgroup> red: array<f32, REDG>;",
		"var<workgroup> red2: array<f32, RED2>;", "var<workgroup> red2: array<f32, RED2G>;",
	)
	if err != nil {
		return "", err
	}
	src = strings.ReplaceAll(src, "red[", "red[rg + ")
	src = strings.ReplaceAll(src, "red2[", "red2[rg2 + ")
	return setConst(src, "G", uint32(g))
}
