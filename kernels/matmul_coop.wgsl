// Matrix-matrix product on cooperative matrices (tensor cores) for
// prefill and batches, decoding the weight in the load:
//   out[t][row0 + r] (+)= sum_c W[r][c] * x[t][c] (+ bias[row0 + r])
// matmul_coop.go moves the `enable` lines first, then prepends the helpers
// of common.wgsl for W and ONE dtype section of matmul_dtypes.wgsl (UV,
// col, decode), and unrolls blocks ACC, STEP and OUT.
//
// A workgroup of 256 invocations is 8 subgroups of 32 (matmul_coop.go
// checks the adapter computes this kernel right before it uses it) and
// computes a tile of BR weight rows × BT tokens; subgroup s holds FT × FR
// fragments of 16 tokens × 16 rows: token fragments (s / SR)·FT + j, row
// fragments (s % SR)·FR + i. The K dimension advances KS values a step:
//   - invocations 0..127 decode the tile's BR × UK weight units into ws
//     as f16, a row's KS values contiguous (B = Wᵀ column-major);
//   - invocations 128..255 stage the matching x values of the BT tokens
//     into xs as f16, a token's KS values contiguous (A row-major), in
//     the decoder's col() order, so ws and xs agree on what k means;
//   - after a barrier each subgroup multiplies its fragments KS/16 times
//     (f16 products, f32 sums).
// At the end each fragment goes through the subgroup's 16×16 f32 slice
// of cs to put(), which adds the bias and the old value as asked.

enable f16;
enable wgpu_cooperative_matrix;

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

const SR: u32 = 4u;          // subgroups along the rows (8 / SR along the tokens)
const FR: u32 = 2u;          // row fragments per subgroup
const FT: u32 = 4u;          // token fragments per subgroup
const BR: u32 = 16u * FR * SR;
const BT: u32 = 16u * FT * (8u / SR);
const KS: u32 = 32u;         // a multiple of UV and of 16
const UK: u32 = KS / UV;
const WSK: u32 = KS + 8u;    // stride of ws and xs rows (halves): 16-byte aligned, off the banks' period

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> ws: array<f16, BR * WSK>;
var<workgroup> xs: array<f16, BT * WSK>;
var<workgroup> cs: array<f32, 2048>; // 8 subgroups × 16 × 16

// x as f16, clamped to its finite range.
fn h16(v: f32) -> f16 {
    return f16(clamp(v, -65504.0, 65504.0));
}

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
    let sg = lid / 32u;
    let lane = lid % 32u;
    let rf = (sg % SR) * FR * 16u; // first row of the subgroup's fragments, in the tile
    let tf = (sg / SR) * FT * 16u; // first token
    let units = params.units;
    let m = params.m;

// BEGIN ACC
    var c00 = coop_mat16x16<f32, C>();
// END ACC
    let steps = (units + UK - 1u) / UK;
    for (var s = 0u; s < steps; s++) {
        let ub = s * UK;
        if (lid < 128u) {
            for (var j = lid; j < BR * UK; j += 128u) {
                let lr = j % BR;
                let uu = j / BR;
                let u = ub + uu;
                let row = min(rbase + lr, params.rows - 1u);
                var wv = decode(row * params.row_bytes, min(u, units - 1u));
                let valid = u < units;
                let e = lr * WSK + uu * UV;
                for (var i = 0u; i < UV; i++) {
                    ws[e + i] = f16(select(0.0, wv[i], valid));
                }
            }
        } else {
            // Job j: token j % BT, column quad j / BT (four consecutive k of
            // a unit are four consecutive columns for every dtype).
            for (var j = lid - 128u; j < BT * (KS / 4u); j += 128u) {
                let t = j % BT;
                let k = (j / BT) * 4u;
                let u = ub + k / UV;
                let c = col(min(u, units - 1u), k % UV);
                let tok = tbase + t;
                var v = vec4<f32>(0.0);
                if (u < units && c < params.cols && tok < m) {
                    v = x[(tok * params.cols + c) >> 2u];
                }
                let e = t * WSK + k;
                xs[e] = h16(v.x);
                xs[e + 1u] = h16(v.y);
                xs[e + 2u] = h16(v.z);
                xs[e + 3u] = h16(v.w);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KS; kk += 16u) {
// BEGIN STEP
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&xs[tf * WSK + kk], WSK);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&ws[rf * WSK + kk], WSK);
            c00 = coopMultiplyAdd(a0, b0, c00);
// END STEP
        }
        workgroupBarrier();
    }
    let cb = sg * 256u;
// BEGIN OUT
    coopStoreT(c00, &cs[cb], 16u);
    workgroupBarrier();
    out16(cb, lane, tbase + tf, rbase + rf);
    workgroupBarrier();
// END OUT
}

// Writes the fragment at cs[cb:] (16 tokens × 16 rows, row-major) to
// tokens t0.. and rows r0..: each lane two quads of four rows.
fn out16(cb: u32, lane: u32, t0: u32, r0: u32) {
    for (var q = lane; q < 64u; q += 32u) {
        let t = q / 4u;
        let r = (q % 4u) * 4u;
        let e = cb + t * 16u + r;
        put(t0 + t, r0 + r, vec4<f32>(cs[e], cs[e + 1u], cs[e + 2u], cs[e + 3u]));
    }
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
