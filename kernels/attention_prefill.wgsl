// Attention for a prefill batch: one workgroup per (tile of BQ query
// tokens, head); query token t is at position i = pos[0] + t and sees
// cache positions j with j <= i, j > i - capacity and, with a window,
// j > i - window. Keys and values go through workgroup memory in tiles of
// BK positions (slot j % capacity of the [kv_heads][capacity][HD] cache,
// f32 bits or F16 pairs packed in u32). Per tile: thread (qi, kj) computes
// one scaled (soft-capped) score; BQ threads update their row's online
// softmax (f32, max-subtracted) and turn scores into probabilities; then
// every thread rescales and accumulates its NACC (query, dim) outputs.
// A sink logit starts each row's max with exp(sink - max) in the sum.

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

const BQ: u32 = 16u;
const BK: u32 = 16u;
const HD: u32 = 64u;
const F16: u32 = 0u;
const WG: u32 = BQ * BK;
const KS: u32 = HD + 1u; // padded K row (no bank conflicts in q·k)
const NACC: u32 = (BQ * HD + WG - 1u) / WG;
const NEG: f32 = -1e30;
const QSZ: u32 = BQ * HD;
const KSZ: u32 = BK * KS;
const VSZ: u32 = BK * HD;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<u32>;
@group(0) @binding(3) var<storage, read> vc: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> pos: array<u32>;
@group(0) @binding(6) var<storage, read> sinks: array<f32>;

var<workgroup> qs: array<f32, QSZ>;
var<workgroup> ks: array<f32, KSZ>;
var<workgroup> vs: array<f32, VSZ>;
var<workgroup> ss: array<f32, WG>;
var<workgroup> m_row: array<f32, BQ>;
var<workgroup> l_row: array<f32, BQ>;
var<workgroup> a_row: array<f32, BQ>;

@compute @workgroup_size(WG)
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

    for (var e = lid; e < BQ * HD; e += WG) {
        let t = q0 + e / HD;
        qs[e] = select(0.0, q[t * params.q_stride + h * HD + e % HD], t < params.m);
    }
    if (lid < BQ) {
        m_row[lid] = select(NEG, sinks[min(h, arrayLength(&sinks) - 1u)], params.has_sinks != 0u);
        l_row[lid] = select(0.0, 1.0, params.has_sinks != 0u);
    }
    var acc: array<f32, NACC>;
    for (var k = 0u; k < NACC; k++) {
        acc[k] = 0.0;
    }

    let qi = lid / BK;
    let kj = lid % BK;
    let i = first + qi;
    for (var kt = lo; kt <= last; kt += BK) {
        workgroupBarrier();
        if (F16 != 0u) {
            for (var e = lid; e < BK * HD / 2u; e += WG) {
                let r = e / (HD / 2u);
                let w = e % (HD / 2u);
                let j = kt + r;
                var kv = vec2<f32>(0.0);
                var vv = vec2<f32>(0.0);
                if (j <= last) {
                    let off = (kvbase + j % params.capacity) * (HD / 2u) + w;
                    kv = unpack2x16float(kc[off]);
                    vv = unpack2x16float(vc[off]);
                }
                ks[r * KS + 2u * w] = kv.x;
                ks[r * KS + 2u * w + 1u] = kv.y;
                vs[r * HD + 2u * w] = vv.x;
                vs[r * HD + 2u * w + 1u] = vv.y;
            }
        } else {
            for (var e = lid; e < BK * HD; e += WG) {
                let r = e / HD;
                let d = e % HD;
                let j = kt + r;
                var kv = 0.0;
                var vv = 0.0;
                if (j <= last) {
                    let off = (kvbase + j % params.capacity) * HD + d;
                    kv = bitcast<f32>(kc[off]);
                    vv = bitcast<f32>(vc[off]);
                }
                ks[r * KS + d] = kv;
                vs[e] = vv;
            }
        }
        workgroupBarrier();

        let j = kt + kj;
        let visible = q0 + qi < params.m && j <= i && j + params.capacity > i &&
            (params.window == 0u || j + params.window > i);
        var s = NEG;
        if (visible) {
            var dot = 0.0;
            for (var d = 0u; d < HD; d++) {
                dot += qs[qi * HD + d] * ks[kj * KS + d];
            }
            s = dot * params.scale;
            if (params.softcap > 0.0) {
                s = params.softcap * tanh(clamp(s / params.softcap, -20.0, 20.0));
            }
        }
        ss[lid] = s;
        workgroupBarrier();

        if (lid < BQ) {
            let m_old = m_row[lid];
            var mx = m_old;
            for (var c = 0u; c < BK; c++) {
                mx = max(mx, ss[lid * BK + c]);
            }
            var sum = 0.0;
            for (var c = 0u; c < BK; c++) {
                let sc = ss[lid * BK + c];
                let p = select(0.0, exp(sc - mx), sc > NEG);
                ss[lid * BK + c] = p;
                sum += p;
            }
            let alpha = exp(m_old - mx);
            a_row[lid] = alpha;
            l_row[lid] = l_row[lid] * alpha + sum;
            m_row[lid] = mx;
        }
        workgroupBarrier();

        for (var k = 0u; k < NACC; k++) {
            let e = lid + k * WG;
            if (e < BQ * HD) {
                let r = e / HD;
                let d = e % HD;
                var a = acc[k] * a_row[r];
                for (var c = 0u; c < BK; c++) {
                    a += ss[r * BK + c] * vs[c * HD + d];
                }
                acc[k] = a;
            }
        }
    }
    workgroupBarrier();

    for (var k = 0u; k < NACC; k++) {
        let e = lid + k * WG;
        let t = q0 + e / HD;
        if (e < BQ * HD && t < params.m) {
            out[(t * params.heads + h) * HD + e % HD] = acc[k] / l_row[e / HD];
        }
    }
}
