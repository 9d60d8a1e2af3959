// Copies m token rows of K or V (kv_heads × head_dim f32 values at
// src[t*stride]) into a cache laid out [kv_heads][capacity][head_dim],
// position p at slot p % capacity, tokens at positions pos[0] + t.
// F16 != 0: the cache holds f16 pairs packed in u32 (head_dim even), one
// invocation per pair; else f32 bits, one invocation per value. With
// m > capacity only the last `capacity` tokens are written (they would
// overwrite the earlier ones anyway), so no two invocations race.

struct Params {
    m: u32,
    kv_heads: u32,
    head_dim: u32,
    capacity: u32,
    stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 64u;
const F16: u32 = 0u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> cache: array<u32>;
@group(0) @binding(3) var<storage, read> pos: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let per = select(params.head_dim, params.head_dim / 2u, F16 != 0u); // u32 words per head row
    let idx = (wid.x + wid.y * nwg.x) * WG + lid;
    let row = params.kv_heads * per;
    if (idx >= params.m * row) {
        return;
    }
    let t = idx / row;
    if (params.m > params.capacity && t < params.m - params.capacity) {
        return;
    }
    let r = idx % row;
    let h = r / per;
    let w = r % per;
    let slot = (pos[0] + t) % params.capacity;
    let dst = (h * params.capacity + slot) * per + w;
    let s = t * params.stride + h * params.head_dim;
    if (F16 != 0u) {
        cache[dst] = pack2x16float(vec2<f32>(src[s + 2u * w], src[s + 2u * w + 1u]));
    } else {
        cache[dst] = bitcast<u32>(src[s + w]);
    }
}
