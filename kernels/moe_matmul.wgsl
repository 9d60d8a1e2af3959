// Expert matrix-vector products for MoE, dequantizing in the load:
//   out[s][r] = sum_c W[sel[s]][r][c] * x[xs][c] (+ bias[sel[s]][r])
// for each slot s = t*k + j (token t, choice j), with xs = s when x holds
// one row per slot (down projection) else xs = t (gate/up: shared input).
// W is the E experts' Rows x Cols matrices back to back (global row
// e*rows + r); this op binds one part of it (global rows [row0,
// row0 + part_rows)) and skips the rows outside, so only the selected
// experts' bytes are read. moe.go prepends the helpers of common.wgsl for W
// and ONE dtype section of matmul_dtypes.wgsl (UV, col, decode).
//
// Same scheme as matmul_vec.wgsl: a workgroup of WG invocations owns R
// consecutive rows of one slot's expert (wid.x = row group, wid.y/z = slot);
// invocation lid takes units lid, lid+WG, ... loading each unit's x values
// once and dotting them with the R rows; the R sums are reduced through
// workgroup memory. WG and R are templated by moe.go.

struct Params {
    rows: u32,      // rows per expert
    cols: u32,
    row_bytes: u32,
    units: u32,     // units per row
    row0: u32,      // first global row of this part
    part_rows: u32, // rows of this part
    experts: u32,
    slots: u32,     // m * k
    k: u32,
    flags: u32,     // 1: add bias, 2: x has one row per slot
    _p0: u32,
    _p1: u32,
}

const WG: u32 = 64u;
const R: u32 = 4u;
const RWG: u32 = R * WG;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
// moe.go keeps ONE of the two x variants (between the "// ---- x" lines):
// vec4 loads when cols % 4 == 0, else scalar. x4(b, c) returns x[b+c..+4),
// b and c multiples of 4, zero from cols on.
// ---- x: vec4
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;

fn x4(b: u32, c: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), x[(b + min(c, params.cols - 4u)) >> 2u], c < params.cols);
}
// ---- x: scalar
@group(0) @binding(2) var<storage, read> x: array<f32>;

fn x1(b: u32, c: u32) -> f32 {
    return select(0.0, x[b + min(c, params.cols - 1u)], c < params.cols);
}

fn x4(b: u32, c: u32) -> vec4<f32> {
    return vec4<f32>(x1(b, c), x1(b, c + 1u), x1(b, c + 2u), x1(b, c + 3u));
}
// ---- x: end
@group(0) @binding(3) var<storage, read> sel: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, RWG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let s = wid.y + wid.z * nwg.y;
    let r0 = wid.x * R;
    if (s >= params.slots || r0 >= params.rows) {
        return;
    }
    let e = min(sel[s], params.experts - 1u);
    let eg = e * params.rows;         // global row of the expert's row 0
    let g0 = eg + r0;                 // global row of this group's row 0
    // Rows of this group that lie in the part: [lo, hi).
    let lo = max(g0, params.row0);
    let hi = min(min(g0 + R, eg + params.rows), params.row0 + params.part_rows);
    if (lo >= hi) {
        return; // another part's rows (or a slot of an unselected expert)
    }
    let xb = select(s / params.k, s, (params.flags & 2u) != 0u) * params.cols;
    var acc: array<f32, R>;
    for (var u = lid; u < params.units; u += WG) {
        var xv: array<f32, UV>;
        for (var i = 0u; i < UV; i += 4u) {
            let v = x4(xb, col(u, i));
            xv[i] = v.x;
            xv[i + 1u] = v.y;
            xv[i + 2u] = v.z;
            xv[i + 3u] = v.w;
        }
        for (var r = 0u; r < R; r++) {
            // Rows outside [lo, hi) repeat an inside row; their sums are dropped.
            let g = clamp(g0 + r, lo, hi - 1u);
            var wv = decode((g - params.row0) * params.row_bytes, u);
            var sum = 0.0;
            for (var i = 0u; i < UV; i++) {
                sum = fma(wv[i], xv[i], sum);
            }
            acc[r] += sum;
        }
    }
    for (var r = 0u; r < R; r++) {
        red[r * WG + lid] = acc[r];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            for (var r = 0u; r < R; r++) {
                red[r * WG + lid] += red[r * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }
    let g = g0 + lid;
    if (lid < R && g >= lo && g < hi) {
        var v = red[lid * WG];
        if ((params.flags & 1u) != 0u) {
            v += bias[g];
        }
        out[s * params.rows + r0 + lid] = v;
    }
}
