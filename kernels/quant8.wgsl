// Activations rounded to 8 bits for the integer-dot matrix-vector kernels
// (matmul_vecfast.wgsl's "_Q8X" sections): each block of 32 values of a row
// becomes 32 int8 q ≈ x / d with d = max|x| / 127, stored per row as
//   [n/4 words: the q, 4 a word, little-endian]
//   [n/32 f32: d of each block]
//   [n/16 f32: d · (sum of q) of each half block of 16]
// (quant8.go's Q8RowBytes). One invocation per block.
//
// Exactly reproducible (QuantizeQ8Ref gives the same bytes): no division
// in floats, whose last bit Vulkan leaves open. The block is scaled by a
// power of two so that max|x| becomes an integer A in [2^23, 2^24) and
// each x an integer X (rounded to even: 2^-24 of max|x| at most, far
// below an 8-bit step), and q = round(127 X / A), ties to even, in
// integers; d = max|x| · f32(1/127), a correctly rounded product.

struct Params {
    blocks: u32, // of all rows
    n: u32,      // values per row, a multiple of 128
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> q8out: array<u32>;

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
    for (var i = 0u; i < 8u; i++) {
        v[i] = x[xi + i];
    }
    q8block(&v, row * (n / 4u + n / 32u + n / 16u), n, b);
}

// BEGIN Q8BLOCK
// q8block writes block b (32 values v) of a row of n values whose rounded
// form starts at word base of q8out.
fn q8block(v: ptr<function, array<vec4<f32>, 8>>, base: u32, n: u32, b: u32) {
    var m = 0.0;
    for (var i = 0u; i < 8u; i++) {
        m = max(m, amax4((*v)[i]));
    }
    // A block whose largest value is zero or subnormal rounds to zeros.
    let ex = i32((bitcast<u32>(m) >> 23u) & 0xffu);
    let live = ex != 0;
    let k = 150 - ex; // max|x| · 2^k in [2^23, 2^24)
    let a = select(1u, u32(ldexp(m, k)), live);
    let d = select(0.0, m * bitcast<f32>(INV127), live);
    var s0 = 0;
    var s1 = 0;
    for (var i = 0u; i < 8u; i++) {
        let q = select(vec4<i32>(0), q4((*v)[i], k, a), live);
        q8out[base + b * 8u + i] = pack4xI8(q);
        let s = (q.x + q.y) + (q.z + q.w);
        if (i < 4u) {
            s0 += s;
        } else {
            s1 += s;
        }
    }
    q8out[base + n / 4u + b] = bitcast<u32>(d);
    q8out[base + n / 4u + n / 32u + 2u * b] = bitcast<u32>(d * f32(s0));
    q8out[base + n / 4u + n / 32u + 2u * b + 1u] = bitcast<u32>(d * f32(s1));
}

// f32(1/127), spelled as bits so no constant folding can round it twice.
const INV127: u32 = 0x3c010204u;

fn amax4(v: vec4<f32>) -> f32 {
    let a = abs(v);
    return max(max(a.x, a.y), max(a.z, a.w));
}

// round(127 X / A) for the integers X = round(v · 2^k), ties to even.
fn q4(v: vec4<f32>, k: i32, a: u32) -> vec4<i32> {
    let xi = vec4<i32>(round(ldexp(v, vec4<i32>(k))));
    let num = 127u * vec4<u32>(abs(xi));
    var q = num / a;
    let r2 = 2u * (num - q * a);
    let up = (r2 > vec4<u32>(a)) | ((r2 == vec4<u32>(a)) & ((q & vec4<u32>(1u)) == vec4<u32>(1u)));
    q += select(vec4<u32>(0u), vec4<u32>(1u), up);
    return select(vec4<i32>(q), -vec4<i32>(q), xi < vec4<i32>(0));
}
// END Q8BLOCK
