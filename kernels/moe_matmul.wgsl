// Expert matrix-vector products for MoE, dequantizing in the load:
//   out[s][r] = sum_c W[sel[s]][r][c] * x[xs][c] (+ bias[sel[s]][r])
// for each slot s = t*k + j (token t, choice j), with xs = s when x holds
// one row per slot (down projection) else xs = t (gate/up: shared input).
// W is the E experts' Rows x Cols matrices back to back (global row
// e*rows + r); this op binds one part of it (global rows [row0,
// row0 + part_rows)) and skips the rows outside, so only the selected
// experts' bytes are read. moe.go prepends the helpers of common.wgsl for W
// and ONE dtype's decoder from matmul_dtypes.wgsl (UV, col, decode), and
// copies in matmul_vec.wgsl's x loaders (block X) and dot loop (block DOT).
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
// BEGIN X
// (x: the x4(b, c) loaders of matmul_vec.wgsl)
// END X
@group(0) @binding(3) var<storage, read> sel: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, RWG>;

// What wrow needs of a workgroup's rows: global rows g0.., of which
// [lo, hi) lie in the part.
struct Rows {
    g0: u32,
    lo: u32,
    hi: u32,
}

// The byte offset in the part of global row g0 + r. Rows outside [lo, hi)
// repeat an inside row; their sums are dropped.
fn wrow(g: Rows, r: u32) -> u32 {
    return (clamp(g.g0 + r, g.lo, g.hi - 1u) - params.row0) * params.row_bytes;
}

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
    let rows = Rows(g0, lo, hi);
    // The R partial sums of the invocation, reduced into red[r * WG].
// BEGIN DOT
// (matmul_vec.wgsl's loop over the units and reduction)
// END DOT
    let g = g0 + lid;
    if (lid < R && g >= lo && g < hi) {
        var v = red[lid * WG];
        if ((params.flags & 1u) != 0u) {
            v += bias[g];
        }
        out[s * params.rows + r0 + lid] = v;
    }
}
