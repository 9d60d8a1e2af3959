// MoE combine: out[t][i] (+)= sum_j wts[t][j] * y[t][j][i] for t < m,
// i < n, j < k (y holds one row of n per slot t*k + j). Flag 1 adds into
// out (fuses the residual add). One invocation per output element.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    flags: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> wts: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let o = (wid.x + wid.y * nwg.x) * WG + lid;
    let n = params.n;
    if (o >= params.m * n) {
        return;
    }
    let t = o / n;
    let i = o % n;
    let k = params.k;
    var v = 0.0;
    for (var j = 0u; j < k; j++) {
        v = fma(wts[t * k + j], y[(t * k + j) * n + i], v);
    }
    if ((params.flags & 1u) != 0u) {
        v += out[o];
    }
    out[o] = v;
}
