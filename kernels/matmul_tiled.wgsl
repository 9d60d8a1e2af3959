// Register-blocked matrix-matrix product for prefill (m tokens), decoding
// the weight in the load:
//   out[t][row0 + r] (+)= sum_c W[r][c] * x[t][c] (+ bias[row0 + r])
// matmul.go prepends the helpers of common.wgsl for W and ONE dtype section
// of matmul_dtypes.wgsl (UV, col, decode), and fills block XQ (xquad).
//
// A workgroup of 256 invocations computes a tile of BR = 16·RN weight rows
// × BT = 16·TN tokens; each invocation holds an RN × TN register block (RN
// in 4, 8; TN in 4, 8: templated by matmul_tiled.go). The K dimension
// advances KS = 32 (or 64) values (UK = KS/UV decode units per row) a step:
//   - invocations 0..127 decode the tile's BR × UK weight units ONCE into
//     ws, k-major ([KS][BR]), so a row quad is one vec4 load;
//   - invocations 128..255 meanwhile stage the matching x values of the BT
//     tokens into xs, k-major too ([KS][BT]), reading x a column quad at a
//     time (four consecutive k of a unit are four consecutive columns for
//     every dtype's col());
//   - after a barrier every invocation runs KS steps of RN/4 + TN/4 vec4
//     loads from workgroup memory and RN·TN fused multiply-adds (block
//     STEP; matmul_tiled.go swaps in the same step unrolled, with
//     constant indices, so the accumulators stay in registers without
//     relying on the driver's loop unrolling).
// Each decoded weight value serves BT tokens, each staged x value BR rows.
// A warp (32 consecutive invocations) spans 8 row quads × 4 token quads,
// so its loads of a step touch few distinct addresses (broadcasts).
// Workgroups walk the token tiles of one row tile first, so a weight tile
// read from memory serves its other token tiles from the cache.

struct Params {
    rows: u32,
    cols: u32,
    row_bytes: u32,
    units: u32,
    row0: u32,
    out_stride: u32,
    m: u32,
    flags: u32,     // 1: add bias, 2: accumulate into out
}

const RN: u32 = 8u;          // rows per invocation (multiple of 4)
const TN: u32 = 8u;          // tokens per invocation (multiple of 4)
const RQ: u32 = RN / 4u;
const TQ: u32 = TN / 4u;
const BR: u32 = 16u * RN;    // rows per tile
const BT: u32 = 16u * TN;    // tokens per tile
const KS: u32 = 32u;         // 32 or 64
const UK: u32 = KS / UV;
const BR4: u32 = BR / 4u;
const BT4: u32 = BT / 4u;
const WS_LEN: u32 = KS * BR4;
const XS_LEN: u32 = KS * BT4;
const NACC: u32 = RQ * TN;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
// BEGIN XQ
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;

// The four x values of token t at columns c..c+3 (c % 4 == 0, c < cols).
fn xquad(t: u32, c: u32) -> vec4<f32> {
    return x[(t * params.cols + c) >> 2u];
}
// END XQ
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> ws: array<vec4<f32>, WS_LEN>;
var<workgroup> xs: array<vec4<f32>, XS_LEN>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let tokTiles = (params.m + BT - 1u) / BT;
    let rowTiles = (params.rows + BR - 1u) / BR;
    let g = wid.x + wid.y * nwg.x;
    // Uniform per workgroup: the whole workgroup returns or none of it.
    if (g >= rowTiles * tokTiles) {
        return;
    }
    let rbase = (g / tokTiles) * BR;
    let tbase = (g % tokTiles) * BT;
    // Row quad tx (0..15) and token quad ty (0..15) of this invocation: a
    // warp holds 8 consecutive row quads × 4 consecutive token quads.
    let tx = (lid & 7u) | ((lid >> 2u) & 8u);
    let ty = ((lid >> 3u) & 3u) | ((lid >> 4u) & 12u);
    let units = params.units;
    let m = params.m;

    var acc: array<vec4<f32>, NACC>;
    let steps = (units + UK - 1u) / UK;
    for (var s = 0u; s < steps; s++) {
        let ub = s * UK;
        if (lid < 128u) {
            // Decode BR rows × UK units: job j is row j % BR (consecutive
            // invocations write consecutive rows of a k: no bank conflicts).
            for (var j = lid; j < BR * UK; j += 128u) {
                let lr = j % BR;
                let uu = j / BR;
                let u = ub + uu;
                let row = min(rbase + lr, params.rows - 1u);
                var wv = decode(row * params.row_bytes, min(u, units - 1u));
                let valid = u < units;
                for (var i = 0u; i < UV; i++) {
                    let e = (uu * UV + i) * BR + lr;
                    ws[e >> 2u][e & 3u] = select(0.0, wv[i], valid);
                }
            }
        } else {
            // Stage KS/4 column quads × BT tokens: job j is token j % BT
            // of quad j / BT.
            for (var j = lid - 128u; j < BT * (KS / 4u); j += 128u) {
                let t = j % BT;
                let k = (j / BT) * 4u;
                let u = ub + k / UV;
                let c = col(min(u, units - 1u), k % UV);
                let tok = tbase + t;
                var v = vec4<f32>(0.0);
                if (u < units && c < params.cols && tok < m) {
                    v = xquad(tok, c);
                }
                for (var i = 0u; i < 4u; i++) {
                    let e = (k + i) * BT + t;
                    xs[e >> 2u][e & 3u] = v[i];
                }
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < KS; k++) {
// BEGIN STEP
            var wr: array<vec4<f32>, RQ>;
            for (var a = 0u; a < RQ; a++) {
                wr[a] = ws[k * BR4 + a * 16u + tx];
            }
            for (var b = 0u; b < TQ; b++) {
                let xv = xs[k * BT4 + b * 16u + ty];
                for (var i = 0u; i < 4u; i++) {
                    let xb = vec4<f32>(xv[i]);
                    for (var a = 0u; a < RQ; a++) {
                        let n = (b * 4u + i) * RQ + a;
                        acc[n] = fma(wr[a], xb, acc[n]);
                    }
                }
            }
// END STEP
        }
        workgroupBarrier();
    }
    // Token 64·b + 4·ty + i, rows 64·a + 4·tx + (0..3): block OUT, unrolled
    // by matmul_tiled.go like STEP.
    let tt = tbase + ty * 4u;
    let rr = rbase + tx * 4u;
// BEGIN OUT
    for (var b = 0u; b < TQ; b++) {
        for (var i = 0u; i < 4u; i++) {
            for (var a = 0u; a < RQ; a++) {
                put(tt + b * 64u + i, rr + a * 64u, acc[(b * 4u + i) * RQ + a]);
            }
        }
    }
// END OUT
}

// Writes v to rows r..r+3 (those < rows) of token tok (if < m), adding the
// bias and the old value as params.flags ask.
fn put(tok: u32, r: u32, v: vec4<f32>) {
    if (tok >= params.m) {
        return;
    }
    for (var c = 0u; c < 4u; c++) {
        if (r + c < params.rows) {
            let row = params.row0 + r + c;
            let o = tok * params.out_stride + row;
            var x = v[c];
            if ((params.flags & 1u) != 0u) {
                x += bias[row];
            }
            if ((params.flags & 2u) != 0u) {
                x += out[o];
            }
            out[o] = x;
        }
    }
}
