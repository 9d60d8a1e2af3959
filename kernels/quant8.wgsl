// Activations rounded to 8 bits for the integer-dot matrix-vector kernels
// (matmul_vecfast.wgsl's "_Q8X" sections): each block of 32 values of a row
// becomes 32 int8 q = round(x / d), d = max|x| / 127, stored per row as
//   [n/4 words: the q, 4 a word, little-endian]
//   [n/32 f32: d of each block]
//   [n/16 f32: d · (sum of q) of each half block of 16]
// (quant8.go's Q8Row). One invocation per block.

struct Params {
    blocks: u32, // of all rows
    n: u32,      // values per row, a multiple of 128
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

fn amax4(v: vec4<f32>) -> f32 {
    let a = abs(v);
    return max(max(a.x, a.y), max(a.z, a.w));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = gid.x + gid.y * nwg.x * 64u;
    if (g >= params.blocks) {
        return;
    }
    let n = params.n;
    let per = n / 32u;
    let row = g / per;
    let b = g % per;
    let xi = (row * n + b * 32u) / 4u;
    var v: array<vec4<f32>, 8>;
    var m = 0.0;
    for (var i = 0u; i < 8u; i++) {
        v[i] = x[xi + i];
        m = max(m, amax4(v[i]));
    }
    let d = m / 127.0;
    let id = select(0.0, 1.0 / d, d > 0.0);
    let base = row * (n / 4u + n / 32u + n / 16u);
    var s0 = 0;
    var s1 = 0;
    for (var i = 0u; i < 8u; i++) {
        let q = clamp(vec4<i32>(round(v[i] * id)), vec4<i32>(-127), vec4<i32>(127));
        out[base + b * 8u + i] = pack4xI8(q);
        let s = (q.x + q.y) + (q.z + q.w);
        if (i < 4u) {
            s0 += s;
        } else {
            s1 += s;
        }
    }
    out[base + n / 4u + b] = bitcast<u32>(d);
    out[base + n / 4u + n / 32u + 2u * b] = bitcast<u32>(d * f32(s0));
    out[base + n / 4u + n / 32u + 2u * b + 1u] = bitcast<u32>(d * f32(s1));
}
