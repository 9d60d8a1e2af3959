//go:build cgo || js

package kernels

import (
	"cmp"
	_ "embed"
	"fmt"
	"strings"

	"github.com/doppler-llm/doppler/rdrr/quant"
)

//go:embed matmul_tiled.wgsl
var matmulTiledWGSL string

// tiledShape is a register block of matmul_tiled.wgsl: rn weight rows × tn
// tokens per invocation, so a workgroup's tile is 16·rn rows × 16·tn
// tokens, and ks values of K a step (32 or 64).
type tiledShape struct{ rn, tn, ks int }

// matmulTiledMinM is the fewest tokens the register-blocked kernel takes;
// below it the 16-token tiles of matmul_tile.wgsl waste less.
const matmulTiledMinM = 33

// matmulTiledTarget is the workgroup count MatMul aims a tiled product at:
// it takes the largest tile that still yields this many workgroups (over
// all parts), so that a GPU's cores all have work (an H200 has 132 SMs,
// each running two of these workgroups at once).
const matmulTiledTarget = 264

// matmulTiledStorage is the workgroup memory of a shape in bytes: KS
// values of BR rows (ws) and BT tokens (xs).
func matmulTiledStorage(s tiledShape) int {
	return 4 * s.ks * 16 * (s.rn + s.tn)
}

// matmulTiledPick returns the register block MatMul uses for w at m
// tokens, or false where the older 16-token tiled kernel runs: m below
// matmulTiledMinM, or opts.tileOld.
func (d *Device) matmulTiledPick(w *Weight, m int, opts MatMulOpts) (tiledShape, bool, error) {
	if opts.tileOld || m < matmulTiledMinM {
		return tiledShape{}, false, nil
	}
	if opts.tileRN > 0 || opts.tileTN > 0 || opts.tileKS > 0 {
		s := tiledShape{opts.tileRN, opts.tileTN, cmp.Or(opts.tileKS, 32)}
		if (s.rn != 4 && s.rn != 8) || (s.tn != 4 && s.tn != 8) || (s.ks != 32 && s.ks != 64) {
			return s, false, fmt.Errorf("kernels: matmul %s: bad register block %d×%d, k step %d", w.Name, s.rn, s.tn, s.ks)
		}
		if matmulTiledStorage(s) > d.limits.MaxWorkgroupStorage {
			return s, false, fmt.Errorf("kernels: matmul %s: register block %d×%d needs %d bytes of workgroup memory, the device has %d",
				w.Name, s.rn, s.tn, matmulTiledStorage(s), d.limits.MaxWorkgroupStorage)
		}
		return s, true, nil
	}
	var pick tiledShape
	found := false
	// Largest tile (most reuse per loaded value) first.
	for _, s := range [...]tiledShape{{8, 8, 32}, {8, 4, 32}, {4, 4, 32}} {
		if matmulTiledStorage(s) > d.limits.MaxWorkgroupStorage {
			continue
		}
		pick, found = s, true
		groups := 0
		for _, p := range w.Parts {
			groups += (p.Rows + 16*s.rn - 1) / (16 * s.rn) * ((m + 16*s.tn - 1) / (16 * s.tn))
		}
		if groups >= matmulTiledTarget {
			break
		}
	}
	return pick, found, nil
}

// xquadVec and xquadScalar are the two forms of block XQ of
// matmul_tiled.wgsl: x read as vec4 (cols % 4 == 0, the rows stay 16-byte
// aligned) or a value at a time, masking the columns past cols.
const xquadScalar = `@group(0) @binding(2) var<storage, read> x: array<f32>;

// The x values of token t at columns c..c+3 (c < cols; zero past cols).
fn xquad(t: u32, c: u32) -> vec4<f32> {
    let b = t * params.cols + c;
    let l = b + min(params.cols - c, 4u) - 1u; // the last one in the row
    return vec4<f32>(x[b],
                     select(0.0, x[min(b + 1u, l)], b + 1u <= l),
                     select(0.0, x[min(b + 2u, l)], b + 2u <= l),
                     select(0.0, x[min(b + 3u, l)], b + 3u <= l));
}
`

// matmulTiledPipeline compiles matmul_tiled.wgsl for dtype dt (its
// decoder section sec) with register block s.
func (d *Device) matmulTiledPipeline(dt quant.DType, sec string, cols int, s tiledShape) (*Pipeline, error) {
	src, err := setConst(matmulTiledWGSL, "RN", uint32(s.rn))
	if err == nil {
		src, err = setConst(src, "TN", uint32(s.tn))
	}
	if err == nil {
		src, err = setConst(src, "KS", uint32(s.ks))
	}
	if err != nil {
		return nil, err
	}
	step, put := matmulTiledUnrolled(s)
	if src, err = setBlock(src, "STEP", step); err != nil {
		return nil, err
	}
	if src, err = setBlock(src, "OUT", put); err != nil {
		return nil, err
	}
	vec := cols%4 == 0
	if !vec {
		if src, err = setBlock(src, "XQ", xquadScalar); err != nil {
			return nil, err
		}
	}
	key := fmt.Sprintf("matmul/tiled/%s/r%d/t%d/k%d/x4=%v", dt, s.rn, s.tn, s.ks, vec)
	return d.Pipeline(key, helpersWGSL("W")+sec+src, "main", matmulLayout)
}

// matmulTiledUnrolled returns blocks STEP and OUT of matmul_tiled.wgsl
// unrolled, every index into acc a constant (acc[(4b + i)·RQ + a] holds
// token quad b's token i, row quad a): STEP is the RN/4 weight and TN/4 x
// vec4 loads of one k, then RN·TN/4 vec4 FMAs; OUT the RN·TN/4 puts.
func matmulTiledUnrolled(s tiledShape) (step, out string) {
	rq, tq := s.rn/4, s.tn/4
	var b, o strings.Builder
	for a := range rq {
		fmt.Fprintf(&b, "            let w%d = ws[k * BR4 + %du + tx];\n", a, 16*a)
	}
	for q := range tq {
		fmt.Fprintf(&b, "            let x%d = xs[k * BT4 + %du + ty];\n", q, 16*q)
	}
	for q := range tq {
		for i, c := range "xyzw" {
			for a := range rq {
				n := (4*q+i)*rq + a
				fmt.Fprintf(&b, "            acc[%d] = fma(w%d, vec4<f32>(x%d.%c), acc[%d]);\n", n, a, q, c, n)
				fmt.Fprintf(&o, "    put(tt + %du, rr + %du, acc[%d]);\n", 64*q+i, 64*a, n)
			}
		}
	}
	return b.String(), o.String()
}
