// Gated activation: out[t][i] = act(gate) * up for t < m, i < n, with
// gate = x[t*stride + i] and up = x[t*stride + up_off + i] (the two halves
// of a fused [gate|up] row, or any two column ranges of one matrix).
// ACT is templated by act.go:
//   0 SiLU:      g * sigmoid(g) * up
//   1 GELUTanh:  0.5 g (1 + tanh(√(2/π)(g + 0.044715 g³))) * up, computed
//                as g * sigmoid(2z), which equals it and never overflows
//   2 SwiGLUOAI: g = min(g, 7); u = clamp(up, -7, 7);
//                out = (u + 1) * g * sigmoid(1.702 g)      (GPT-OSS)
// One invocation per output element.

struct Params {
    m: u32,
    n: u32,
    stride: u32,
    up_off: u32,
}

const ACT: u32 = 0u;
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

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
    var g = x[base];
    var u = x[base + params.up_off];
    var r: f32;
    if (ACT == 0u) {
        r = g * sigmoid(g) * u;
    } else if (ACT == 1u) {
        let z = 0.7978845608028654 * (g + 0.044715 * g * g * g);
        r = g * sigmoid(2.0 * z) * u;
    } else {
        g = min(g, 7.0);
        u = clamp(u, -7.0, 7.0);
        r = (u + 1.0) * g * sigmoid(1.702 * g);
    }
    out[e] = r;
}
