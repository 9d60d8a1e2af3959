// Matrix-vector product for decode (one token), dequantizing in the load:
//   out[row0 + r] (+)= sum_c W[r][c] * x[c] (+ bias[row0 + r])
// matmul.go prepends the helpers of common.wgsl for W and ONE dtype's
// decoder from matmul_dtypes.wgsl (UV, col, decode). moe_matmul.wgsl gets
// its x loaders (block X) and dot loop (block DOT) from here (moe.go).
//
// A workgroup of WG invocations owns R consecutive rows. The row is cut into
// units (a block, or a slice of a super-block, UV values); invocation lid
// takes units lid, lid+WG, ...: it loads the unit's UV x values ONCE into
// registers and dots them with that unit of each of its R rows, so x is
// read from memory once per workgroup, not once per row, while consecutive
// invocations read consecutive weight bytes. The R partial sums are then
// reduced across the workgroup through workgroup memory (no subgroups).
// WG (a power of two) and R are templated by matmul.go.

struct Params {
    rows: u32,      // rows of this weight part
    cols: u32,
    row_bytes: u32,
    units: u32,     // units per row
    row0: u32,      // first row of the part in the whole weight
    out_stride: u32,// rows of the whole weight (out row stride)
    m: u32,         // tokens (1 here)
    flags: u32,     // 1: add bias, 2: accumulate into out
}

const WG: u32 = 64u;
const R: u32 = 4u;
const RWG: u32 = R * WG;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
// BEGIN X
// matvecX (matmul.go) keeps ONE of the two x variants below (between the
// "// ---- x" lines): vec4 loads when cols % 4 == 0 (every real model), else
// scalar.
// x4(b, c) returns x[b+c..b+c+4), b and c multiples of 4, zero from cols on.
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
// END X
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, RWG>;

// The byte offset of row r0 + r of the part. Rows past the end repeat the
// last row; their sums are dropped.
fn wrow(r0: u32, r: u32) -> u32 {
    return min(r0 + r, params.rows - 1u) * params.row_bytes;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r0 = (wid.x + wid.y * nwg.x) * R;
    if (r0 >= params.rows) {
        return;
    }
    let xb = 0u;    // x's first value (one row here)
    let rows = r0;  // what wrow needs of the workgroup's rows
    // The R partial sums of the invocation, reduced into red[r * WG].
// BEGIN DOT
    var acc: array<f32, R>;
    for (var u = lid; u < params.units; u += WG) {
        // col() maps runs of 4 aligned columns to 4 consecutive slots.
        var xv: array<f32, UV>;
        for (var i = 0u; i < UV; i += 4u) {
            let v = x4(xb, col(u, i));
            xv[i] = v.x;
            xv[i + 1u] = v.y;
            xv[i + 2u] = v.z;
            xv[i + 3u] = v.w;
        }
        for (var r = 0u; r < R; r++) {
            var wv = decode(wrow(rows, r), u);
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
// END DOT
    if (lid < R && r0 + lid < params.rows) {
        let row = params.row0 + r0 + lid;
        var v = red[lid * WG];
        if ((params.flags & 1u) != 0u) {
            v += bias[row];
        }
        if ((params.flags & 2u) != 0u) {
            v += out[row];
        }
        out[row] = v;
    }
}
