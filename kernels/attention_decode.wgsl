// Attention, one workgroup per (head, query token): built for decode
// (m == 1) and the fallback for any m. Query token t (wid.y) is at position
// i = pos[0] + t and attends over cache positions lo..i, lo = max(0,
// i-window+1, i-capacity+1), reading K/V at slot j % capacity of the
// [kv_heads][capacity][HD] cache (f32 bits, or F16 pairs packed in u32).
// Keys go in chunks of WG, one thread per key (q·k from q in workgroup
// memory); an online softmax (f32, max-subtracted) rescales the running
// sum; then threads over (part, dim) accumulate p·V, P = WG/HD parts
// splitting the chunk's keys, combined at the end. A sink logit (GPT-OSS)
// starts the running max and adds exp(sink - max) to the denominator.

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

const WG: u32 = 256u;
const HD: u32 = 64u;
const F16: u32 = 0u;
const P: u32 = WG / HD;
const NEG: f32 = -1e30;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<u32>;
@group(0) @binding(3) var<storage, read> vc: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> pos: array<u32>;
@group(0) @binding(6) var<storage, read> sinks: array<f32>;

var<workgroup> qs: array<f32, HD>;
var<workgroup> ps: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

fn v_at(e: u32) -> f32 {
    if (F16 != 0u) {
        return unpack2x16float(vc[e >> 1u])[e & 1u];
    }
    return bitcast<f32>(vc[e]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t = wid.y;
    let kvh = h / (params.heads / params.kv_heads);
    let i = pos[0] + t;
    var lo = i + 1u - min(i + 1u, params.capacity);
    if (params.window > 0u) {
        lo = max(lo, i + 1u - min(i + 1u, params.window));
    }
    for (var d = lid; d < HD; d += WG) {
        qs[d] = q[t * params.q_stride + h * HD + d];
    }
    var m_run = NEG;
    var l = 0.0;
    if (params.has_sinks != 0u) {
        m_run = sinks[h];
        l = select(0.0, 1.0, lid < HD); // part 0 counts the sink once
    }
    var acc = 0.0;
    let part = lid / HD;
    let dd = lid % HD;
    let kvbase = kvh * params.capacity;
    workgroupBarrier();

    for (var c0 = lo; c0 <= i; c0 += WG) {
        let j = c0 + lid;
        var s = NEG;
        if (j <= i) {
            let row = (kvbase + j % params.capacity) * HD;
            var dot = 0.0;
            if (F16 != 0u) {
                for (var w = 0u; w < HD / 2u; w++) {
                    let kv = unpack2x16float(kc[(row >> 1u) + w]);
                    dot += qs[2u * w] * kv.x + qs[2u * w + 1u] * kv.y;
                }
            } else {
                for (var d = 0u; d < HD; d++) {
                    dot += qs[d] * bitcast<f32>(kc[row + d]);
                }
            }
            s = dot * params.scale;
            if (params.softcap > 0.0) {
                s = params.softcap * tanh(clamp(s / params.softcap, -20.0, 20.0));
            }
        }
        red[lid] = s;
        workgroupBarrier();
        for (var st = WG / 2u; st > 0u; st >>= 1u) {
            if (lid < st) {
                red[lid] = max(red[lid], red[lid + st]);
            }
            workgroupBarrier();
        }
        let m_new = max(m_run, red[0]);
        let alpha = exp(m_run - m_new);
        ps[lid] = select(0.0, exp(s - m_new), j <= i);
        m_run = m_new;
        workgroupBarrier();
        if (part < P) {
            acc *= alpha;
            l *= alpha;
            let n = min(WG, i + 1u - c0);
            for (var kk = part; kk < n; kk += P) {
                let p = ps[kk];
                l += p;
                acc += p * v_at((kvbase + (c0 + kk) % params.capacity) * HD + dd);
            }
        }
        workgroupBarrier();
    }

    // Combine the P parts: partial sums in ps (acc) and red (l).
    ps[lid] = select(0.0, acc, part < P);
    red[lid] = select(0.0, l, part < P);
    workgroupBarrier();
    if (lid < HD) {
        var a = 0.0;
        var den = 0.0;
        for (var pp = 0u; pp < P; pp++) {
            a += ps[pp * HD + lid];
            den += red[pp * HD + lid];
        }
        out[(t * params.heads + h) * HD + lid] = a / den;
    }
}
