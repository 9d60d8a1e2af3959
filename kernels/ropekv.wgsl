// RoPE and the KV-cache write in one dispatch: for m tokens at positions
// pos[0] + t (pos is written by the engine before each submit) whose q, k
// and v rows lie in x (row t of q at x[q_off + t*q_stride], k and v
// likewise, heads of head_dim values one after another), it
//   - rotates q in place, one invocation per (token, head, pair);
//   - writes k, rotated, to the K cache and v to the V cache, laid out
//     [kv_heads][capacity][head_dim], position p at slot p % capacity,
//     one invocation per cache word (an f16 pair packed in a u32 when
//     F16 != 0, else the f32 bits). With m > capacity only the last
//     capacity tokens are written (they would overwrite the earlier ones).
// With slots > 0 the rows are one token each of up to `slots` sequences
// whose caches lie one after another in kc and vc, slot_rows head rows
// apart: pos holds a (position, slot) pair of u32 per row, and row t goes
// to its slot's cache at its own position (rows of a slot ≥ slots are
// dropped).
// k in x is read, not rotated in place, so no invocation reads what
// another writes: the Go side checks that q's values are apart from k's
// and v's.
//
// The first `dim` values of each head are rotated in pairs, the rest pass:
//   neox != 0: pairs (i, i + dim/2)  (HF rotate-half)
//   neox == 0: pairs (2i, 2i + 1)    (GGUF llama, interleaved)
// Pair i uses angle = f32(pos) * inv_freq[i] (an f32 product, as HF and
// llama.cpp compute it), reduced mod 2π and then to [-π/4, π/4] plus a
// quadrant, where cos and sin are polynomials (Cephes' sinf/cosf, ~1 ulp):
// the built-ins may be off by 2^-11 even on [-π, π] (WebGPU's bound;
// SwiftShader in Chromium is), not by an ulp. cos and sin are multiplied
// by scale.

struct Params {
    m: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    q_off: u32,
    q_stride: u32,
    k_off: u32,
    k_stride: u32,
    v_off: u32,
    v_stride: u32,
    capacity: u32,
    dim: u32,
    neox: u32,
    scale: f32,
    slots: u32,     // 0: one cache, row t at position pos[0] + t
    slot_rows: u32, // head rows from one slot's cache to the next
    inv_freq: array<vec4<f32>, 64>, // dim/2 ≤ 256 frequencies, 4 per vec4
}

const WG: u32 = 64u;
const F16: u32 = 0u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> kc: array<u32>;
@group(0) @binding(3) var<storage, read_write> vc: array<u32>;
@group(0) @binding(4) var<storage, read> pos: array<u32>;

// Row t's position and cache slot.
fn row_at(t: u32) -> vec2<u32> {
    if (params.slots > 0u) {
        return vec2<u32>(pos[2u * t], pos[2u * t + 1u]);
    }
    return vec2<u32>(pos[0] + t, 0u);
}

// The rotation, reduce_angle to k_rotated: attention_decode.wgsl's fused
// RoPE (AttnOpts.RoPE) takes this block, reading its q/k/v buffer.
// BEGIN ROT
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

// Indices of rotation pair i of the head at base, and its cos and sin at
// position p.
fn pair_at(base: u32, i: u32) -> vec2<u32> {
    if (params.neox != 0u) {
        return vec2<u32>(base + i, base + i + params.dim / 2u);
    }
    return vec2<u32>(base + 2u * i, base + 2u * i + 1u);
}

fn angle_cs(i: u32, p: u32) -> vec2<f32> {
    return cos_sin(f32(p) * params.inv_freq[i / 4u][i % 4u]) * params.scale;
}

// Value e of the k head at base after rotation at position p.
fn k_rotated(base: u32, e: u32, p: u32) -> f32 {
    if (e >= params.dim) {
        return x[base + e];
    }
    let half = params.dim / 2u;
    var i = e / 2u;
    var second = (e & 1u) == 1u;
    if (params.neox != 0u) {
        i = e % half;
        second = e >= half;
    }
    let ix = pair_at(base, i);
    let cs = angle_cs(i, p);
    let x0 = x[ix.x];
    let x1 = x[ix.y];
    if (second) {
        return x1 * cs.x + x0 * cs.y;
    }
    return x0 * cs.x - x1 * cs.y;
}
// END ROT

// Values 2w and 2w+1 of the k head at base after rotation (an f16 cache
// word): one interleaved pair, rotated once, or two values of two pairs.
fn k_word(base: u32, w: u32, p: u32) -> vec2<f32> {
    if (params.neox == 0u && 2u * w < params.dim) {
        let ix = pair_at(base, w);
        let cs = angle_cs(w, p);
        let x0 = x[ix.x];
        let x1 = x[ix.y];
        return vec2<f32>(x0 * cs.x - x1 * cs.y, x1 * cs.x + x0 * cs.y);
    }
    return vec2<f32>(k_rotated(base, 2u * w, p), k_rotated(base, 2u * w + 1u, p));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let half = params.dim / 2u;
    let idx = (wid.x + wid.y * nwg.x) * WG + lid;
    let nq = params.m * params.heads * half;
    if (idx < nq) {
        let i = idx % half;
        let th = idx / half;
        let h = th % params.heads;
        let t = th / params.heads;
        let ix = pair_at(params.q_off + t * params.q_stride + h * params.head_dim, i);
        let cs = angle_cs(i, row_at(t).x);
        let x0 = x[ix.x];
        let x1 = x[ix.y];
        x[ix.x] = x0 * cs.x - x1 * cs.y;
        x[ix.y] = x1 * cs.x + x0 * cs.y;
        return;
    }
    let per = select(params.head_dim, params.head_dim / 2u, F16 != 0u); // cache words per head row
    let row = params.kv_heads * per;
    let nkv = params.m * row;
    var j = idx - nq;
    let is_v = j >= nkv;
    if (is_v) {
        j = j - nkv;
    }
    if (j >= nkv) {
        return;
    }
    let t = j / row;
    if (params.slots == 0u && params.m > params.capacity && t < params.m - params.capacity) {
        return;
    }
    let ps = row_at(t);
    if (params.slots > 0u && ps.y >= params.slots) {
        return;
    }
    let r = j % row;
    let h = r / per;
    let w = r % per;
    let p = ps.x;
    let dst = (ps.y * params.slot_rows + h * params.capacity + p % params.capacity) * per + w;
    if (is_v) {
        let s = params.v_off + t * params.v_stride + h * params.head_dim;
        if (F16 != 0u) {
            vc[dst] = pack2x16float(vec2<f32>(x[s + 2u * w], x[s + 2u * w + 1u]));
        } else {
            vc[dst] = bitcast<u32>(x[s + w]);
        }
        return;
    }
    let base = params.k_off + t * params.k_stride + h * params.head_dim;
    if (F16 != 0u) {
        kc[dst] = pack2x16float(k_word(base, w, p));
    } else {
        kc[dst] = bitcast<u32>(k_rotated(base, w, p));
    }
}
