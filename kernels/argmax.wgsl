// Argmax over n float32 logits → u32 index at out[0]; the lowest index on
// ties (llama.cpp's greedy pick). NaNs never win; when every value is NaN
// the result is NONE (0xffffffff), so the engine can tell a broken model
// from one that picks token 0. One workgroup: each invocation scans a strided slice
// (coalesced), keeping its first maximum, then a tree reduction through
// workgroup memory. WG (a power of two) is templated by argmax.go.

struct Params {
    n: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let n = params.n;
    var bv = 0.0;
    var bi = NONE;
    // Four loads in flight per iteration; each invocation still visits its
    // indices in increasing order, so it keeps its first maximum.
    var i = lid;
    for (; i + 3u * WG < n; i += 4u * WG) {
        let v = vec4<f32>(logits[i], logits[i + WG], logits[i + 2u * WG], logits[i + 3u * WG]);
        for (var q = 0u; q < 4u; q++) {
            let x = v[q];
            if ((bi == NONE && (bitcast<u32>(x) & 0x7fffffffu) <= 0x7f800000u) || x > bv) {
                bv = x;
                bi = i + q * WG;
            }
        }
    }
    for (; i < n; i += WG) {
        let v = logits[i];
        // The first non-NaN is taken even if -inf (NaN tested on the bits:
        // drivers may fold v == v).
        if ((bi == NONE && (bitcast<u32>(v) & 0x7fffffffu) <= 0x7f800000u) || v > bv) {
            bv = v;
            bi = i;
        }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let oi = best_i[lid + s];
            let ov = best_v[lid + s];
            let mi = best_i[lid];
            if (oi != NONE && (mi == NONE || ov > best_v[lid] || (ov == best_v[lid] && oi < mi))) {
                best_v[lid] = ov;
                best_i[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[0] = best_i[0];
    }
}
