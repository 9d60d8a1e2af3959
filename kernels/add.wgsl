// Elementwise residual add: out[i] = lhs(i) + b[i] for i < n, one
// invocation per element (a memory-bound op; scalar loads coalesce).
// As written, lhs reads a (Add); AddInPlace swaps in an IO block where
// lhs reads out itself (acc += b: acc is bound once, read_write, which a
// read binding of the same buffer cannot share).

struct Params {
    n: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
// BEGIN IO
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
fn lhs(i: u32) -> f32 { return a[i]; }
// END IO

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < params.n) {
        out[i] = lhs(i) + b[i];
    }
}
