// Flash-style attention for a prefill batch, register-blocked: one
// workgroup of 256 invocations per (tile of BQ query tokens, head); query
// token t is at position i = pos[0] + t and sees cache positions j with
// j <= i, j > i - capacity and, with a window, j > i - window. Keys and
// values go through workgroup memory in tiles of BK positions (slot
// j % capacity of the [kv_heads][capacity][HD] cache, f32 or f16: block
// KV, from attnKVLoads). TPQ = 256 / BQ invocations share a query row:
// invocation (qi, g) computes the scores of keys g, g + TPQ, ... (SK of
// them, kept in registers) a vec4 of q (loaded once for the SK keys) and
// K at a time, the row's max
// comes from the TPQ partial maxima, and each invocation writes its
// probabilities once; then it rescales and accumulates output dims
// 4·(g + TPQ·n) .. +3 (NQ vec4s) over the tile's BK probabilities and V
// rows. Every invocation of a row derives the same running max from the
// same values, so the online softmax (f32, max-subtracted; a sink logit
// starts the max with exp(sink - max) in the sum) needs no shared state
// but the tile's partial maxima and probabilities: three barriers a tile.

struct Params {
    heads: u32,
    kv_heads: u32,
    capacity: u32,
    q_stride: u32,
    window: u32,
    has_sinks: u32,
    m: u32,
    _pad0: u32,
    scale: f32,
    softcap: f32,
    _pad1: u32,
    _pad2: u32,
}

const BQ: u32 = 32u;
const BK: u32 = 32u;
const HD: u32 = 64u;
const TPQ: u32 = 256u / BQ;     // invocations per query row
const SK: u32 = BK / TPQ;       // scores per invocation
const HQ: u32 = HD / 4u;        // vec4s per head row
const KQ: u32 = HQ + 1u;        // padded K row (vec4s): rows TPQ apart hit other banks
const NQ: u32 = HQ / TPQ;       // output vec4s per invocation
const NEG: f32 = -1e30;
const QSZ: u32 = BQ * HQ;
const KSZ: u32 = BK * KQ;
const VSZ: u32 = BK * HQ;
const PSZ: u32 = BQ * BK / 4u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
// BEGIN KV
@group(0) @binding(2) var<storage, read> kc: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<u32>>;
fn kld(e: u32) -> vec4<f32> { return bitcast<vec4<f32>>(kc[e >> 2u]); }
fn vld(e: u32) -> vec4<f32> { return bitcast<vec4<f32>>(vc[e >> 2u]); }
// END KV
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> pos: array<u32>;
@group(0) @binding(6) var<storage, read> sinks: array<f32>;

var<workgroup> qs: array<vec4<f32>, QSZ>;
var<workgroup> ks: array<vec4<f32>, KSZ>;
var<workgroup> vs: array<vec4<f32>, VSZ>;
var<workgroup> ps: array<vec4<f32>, PSZ>;
var<workgroup> pm: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let q0 = wid.x * BQ;
    let h = wid.y;
    let kvh = h / (params.heads / params.kv_heads);
    let kvbase = kvh * params.capacity;
    let p0 = pos[0];
    let first = p0 + q0;                              // position of the tile's first query
    let last = p0 + min(q0 + BQ, params.m) - 1u;      // and of its last
    var lo = first + 1u - min(first + 1u, params.capacity);
    if (params.window > 0u) {
        lo = max(lo, first + 1u - min(first + 1u, params.window));
    }

    for (var e = lid; e < BQ * HD; e += 256u) {
        let t = q0 + e / HD;
        let d = e % HD;
        qs[e >> 2u][e & 3u] = select(0.0, q[min(t, params.m - 1u) * params.q_stride + h * HD + d], t < params.m);
    }

    let qi = lid / TPQ;
    let g = lid % TPQ;
    let i = first + qi;
    let live = q0 + qi < params.m;
    // Row state, the same in all TPQ invocations of the row.
    var mx = select(NEG, sinks[min(h, arrayLength(&sinks) - 1u)], params.has_sinks != 0u);
    var l = select(0.0, 1.0, params.has_sinks != 0u);
    var acc: array<vec4<f32>, NQ>;
    var s: array<f32, SK>;

    for (var kt = lo; kt <= last; kt += BK) {
        workgroupBarrier();
        for (var e = lid; e < BK * HQ; e += 256u) {
            let r = e / HQ;
            let dq = e % HQ;
            let j = kt + r;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (j <= last) {
                let off = (kvbase + j % params.capacity) * HD + dq * 4u;
                kv = kld(off);
                vv = vld(off);
            }
            ks[r * KQ + dq] = kv;
            vs[e] = vv;
        }
        workgroupBarrier();

        // Scores of keys g + TPQ·c, a q vec4 serving all SK keys, and
        // their max.
        // (Initialized explicitly: naga hoists a loop's vars to the entry
        // and zeroes them once.)
        var dots = array<vec4<f32>, SK>();
        for (var dq = 0u; dq < HQ; dq++) {
            let qv = qs[qi * HQ + dq];
            for (var c = 0u; c < SK; c++) {
                dots[c] = fma(qv, ks[(g + c * TPQ) * KQ + dq], dots[c]);
            }
        }
        var tmax = NEG;
        for (var c = 0u; c < SK; c++) {
            let j = kt + g + c * TPQ;
            let visible = live && j <= i && j + params.capacity > i &&
                (params.window == 0u || j + params.window > i);
            let dot = dots[c];
            var sc = (dot.x + dot.y + dot.z + dot.w) * params.scale;
            if (params.softcap > 0.0) {
                sc = params.softcap * tanh(clamp(sc / params.softcap, -20.0, 20.0));
            }
            sc = select(NEG, sc, visible);
            s[c] = sc;
            tmax = max(tmax, sc);
        }
        pm[lid] = tmax;
        workgroupBarrier();

        var mnew = mx;
        for (var c = 0u; c < TPQ; c++) {
            mnew = max(mnew, pm[qi * TPQ + c]);
        }
        for (var c = 0u; c < SK; c++) {
            let e = qi * BK + g + c * TPQ;
            ps[e >> 2u][e & 3u] = select(0.0, exp(s[c] - mnew), s[c] > NEG);
        }
        let alpha = exp(mx - mnew);
        mx = mnew;
        workgroupBarrier();

        l *= alpha;
        for (var n = 0u; n < NQ; n++) {
            acc[n] *= alpha;
        }
        for (var c4 = 0u; c4 < BK / 4u; c4++) {
            let p4 = ps[qi * (BK / 4u) + c4];
            l += p4.x + p4.y + p4.z + p4.w;
            for (var cc = 0u; cc < 4u; cc++) {
                let p = vec4<f32>(p4[cc]);
                let vr = (c4 * 4u + cc) * HQ + g;
                for (var n = 0u; n < NQ; n++) {
                    acc[n] = fma(p, vs[vr + n * TPQ], acc[n]);
                }
            }
        }
    }

    if (live) {
        let t = q0 + qi;
        for (var n = 0u; n < NQ; n++) {
            let o = (t * params.heads + h) * HD + (g + n * TPQ) * 4u;
            let v = acc[n] / l;
            out[o] = v.x;
            out[o + 1u] = v.y;
            out[o + 2u] = v.z;
            out[o + 3u] = v.w;
        }
    }
}
