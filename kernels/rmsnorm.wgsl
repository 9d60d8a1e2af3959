// RMSNorm over rows of n values:
//   out[r][i] = x[r][i] / sqrt(mean(x[r]^2) + eps) * g(w[i])
// with g(w) = w, or 1 + w when add_one != 0 (Gemma's convention).
// One workgroup per row; the sum of squares is reduced in f32 through
// workgroup memory. WG is templated by rmsnorm.go (a power of two).

struct Params {
    rows: u32,
    n: u32,
    eps: f32,
    add_one: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let n = params.n;
    let base = row * n;

    var s = 0.0;
    for (var i = lid; i < n; i += WG) {
        let v = x[base + i];
        s += v * v;
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }

    let scale = inverseSqrt(partial[0] / f32(n) + params.eps);
    let one = select(0.0, 1.0, params.add_one != 0u);
    for (var i = lid; i < n; i += WG) {
        out[base + i] = x[base + i] * scale * (w[i] + one);
    }
    // BEGIN Q8
    // END Q8
}
