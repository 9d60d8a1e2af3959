// MoE router: for each token t < m, from its E router logits pick the k
// largest (descending; ties → lower expert id; NaN ranks as -inf) into
// sel[t][j] and their gate weights into wts[t][j]:
//   GATING 0 (softmax, Mixtral): p = softmax(all E logits); w_j = p_j / sum_j p_j
//   GATING 1 (top-k softmax, GPT-OSS): w = softmax(the k chosen logits)
// (mathematically equal; kept apart to match each model's rounding).
// One invocation per token: k passes over E, each taking the best logit
// below the previous choice in (logit desc, id asc) order, so no private
// array bounds k or E. GATING is templated by moe.go.

struct Params {
    m: u32,
    experts: u32,
    k: u32,
    _p0: u32,
}

const GATING: u32 = 0u;
const WG: u32 = 64u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> sel: array<u32>;
@group(0) @binding(3) var<storage, read_write> wts: array<f32>;

// -inf, read from a variable: WGSL makes a constant expression that
// evaluates to an infinity a shader-creation error (Chrome's Tint enforces
// it, wgpu's naga does not), so the bitcast must not be constant-folded.
var<private> neg_inf_bits: u32 = 0xff800000u;

// The logit as a sort key: NaN (tested on the bits) becomes -inf.
fn key(i: u32) -> f32 {
    let v = logits[i];
    return select(v, bitcast<f32>(neg_inf_bits), (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = (wid.x + wid.y * nwg.x) * WG + lid;
    if (t >= params.m) {
        return;
    }
    let ne = params.experts;
    let k = params.k;
    let b = t * ne;
    var pv = 0.0;
    var pi = NONE;
    var mx = 0.0;
    var sk = 0.0;
    for (var j = 0u; j < k; j++) {
        var bv = 0.0;
        var bi = NONE;
        for (var i = 0u; i < ne; i++) {
            let v = key(b + i);
            let after = pi == NONE || v < pv || (v == pv && i > pi);
            if (after && (bi == NONE || v > bv)) {
                bv = v;
                bi = i;
            }
        }
        if (j == 0u) {
            // The top logit is the max; -inf (all masked) → 0 to stay finite.
            mx = select(bv, 0.0, bv == bitcast<f32>(neg_inf_bits));
        }
        let ev = exp(bv - mx);
        sel[t * k + j] = bi;
        wts[t * k + j] = ev;
        sk += ev;
        pv = bv;
        pi = bi;
    }
    if (GATING == 0u) {
        var sa = 0.0;
        for (var i = 0u; i < ne; i++) {
            sa += exp(key(b + i) - mx);
        }
        var sp = 0.0;
        for (var j = 0u; j < k; j++) {
            let p = select(wts[t * k + j] / sa, 0.0, sa == 0.0);
            wts[t * k + j] = p;
            sp += p;
        }
        sk = sp;
    }
    for (var j = 0u; j < k; j++) {
        wts[t * k + j] = select(wts[t * k + j] / sk, 1.0 / f32(k), sk == 0.0);
    }
}
