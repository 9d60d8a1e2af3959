// Gated activation: out[t][i] = gated_act(gate, up) for t < m, i < n, with
// gate = x[t*stride + i] and up = x[t*stride + up_off + i] (the two halves
// of a fused [gate|up] row, or any two column ranges of one matrix).
// gated_act and ACT: act_fn.wgsl, prepended (the fused matvec of
// matmul.go prepends the same). One invocation per output element.

struct Params {
    m: u32,
    n: u32,
    stride: u32,
    up_off: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    let n = params.n;
    if (e >= params.m * n) {
        return;
    }
    let t = e / n;
    let i = e % n;
    let base = t * params.stride + i;
    out[e] = gated_act(x[base], x[base + params.up_off]);
}
