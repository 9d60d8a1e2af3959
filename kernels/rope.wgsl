// Rotary position embedding, in place on x. Token t of the batch is at
// position pos[0] + t (pos is written by the engine before each submit).
// Row t holds `heads` heads of head_dim values at x[t*stride + h*head_dim];
// the first `dim` values of each head are rotated in pairs, the rest pass.
//   neox != 0: pairs (i, i + dim/2)  (HF rotate-half)
//   neox == 0: pairs (2i, 2i + 1)    (GGUF llama, interleaved)
// Pair i uses angle = f32(pos) * inv_freq[i] (an f32 product, as HF and
// llama.cpp compute it), reduced mod 2π and then to [-π/4, π/4] plus a
// quadrant, where cos and sin are polynomials (Cephes' sinf/cosf, ~1 ulp):
// the built-ins may be off by 2^-11 even on [-π, π] (WebGPU's bound;
// SwiftShader in Chromium is), not by an ulp. cos and sin are multiplied
// by scale.
// One invocation per (token, head, pair).

struct Params {
    m: u32,
    heads: u32,
    head_dim: u32,
    stride: u32,
    dim: u32,
    neox: u32,
    scale: f32,
    _pad: u32,
    inv_freq: array<vec4<f32>, 64>, // dim/2 ≤ 256 frequencies, 4 per vec4
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;

// 2π split into parts of ≤ 8 significant bits (Cody–Waite), so k * C1..C3
// are exact for k < 2^16 (angles up to ~4e5) without relying on fma.
fn reduce_angle(a: f32) -> f32 {
    let k = round(a * 0.15915494309189535);
    var r = a - k * bitcast<f32>(0x40c90000u);
    r = r - k * bitcast<f32>(0x3afd0000u);
    r = r - k * bitcast<f32>(0x36aa0000u);
    r = r - k * bitcast<f32>(0x31885a30u);
    return r;
}

// cos and sin of a, to about an ulp: after reduce_angle, r = y + j·π/2
// with |j| ≤ 2 (π/2 split like 2π above, so j·P1..P4 are exact) and
// |y| ≤ π/4, where the minimax polynomials of Cephes' sinf/cosf hold.
fn cos_sin(a: f32) -> vec2<f32> {
    let r = reduce_angle(a);
    let j = round(r * 0.6366197723675814);
    var y = r - j * bitcast<f32>(0x3fc90000u);
    y = y - j * bitcast<f32>(0x39fd0000u);
    y = y - j * bitcast<f32>(0x35aa0000u);
    y = y - j * bitcast<f32>(0x30885a30u);
    let z = y * y;
    let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * y + y;
    let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
    switch (u32(i32(j)) & 3u) {
        case 1u: { return vec2<f32>(-s, c); }
        case 2u: { return vec2<f32>(-c, -s); }
        case 3u: { return vec2<f32>(s, -c); }
        default: { return vec2<f32>(c, s); }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let half = params.dim / 2u;
    let idx = (wid.x + wid.y * nwg.x) * WG + lid;
    if (idx >= params.m * params.heads * half) {
        return;
    }
    let i = idx % half;
    let th = idx / half;
    let h = th % params.heads;
    let t = th / params.heads;
    let p = pos[0] + t;
    let cs = cos_sin(f32(p) * params.inv_freq[i / 4u][i % 4u]) * params.scale;
    let c = cs.x;
    let s = cs.y;
    let base = t * params.stride + h * params.head_dim;
    var i0 = base + 2u * i;
    var i1 = i0 + 1u;
    if (params.neox != 0u) {
        i0 = base + i;
        i1 = i0 + half;
    }
    let x0 = x[i0];
    let x1 = x[i1];
    x[i0] = x0 * c - x1 * s;
    x[i1] = x1 * c + x0 * s;
}
